"""Release filters: each decides which versions of a project stay, with all their files."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime

import pytest

from bandersnatch_clone.errors import PluginError
from bandersnatch_clone.filters.releases import (
    AllowlistRelease,
    BlocklistRelease,
    LatestRelease,
    PrereleaseRelease,
    RegexRelease,
    UploadedAfterRelease,
)
from tests.filters.helpers import dist, frozen, release


@pytest.mark.parametrize(
    ("packages", "project", "version", "kept"),
    [
        (["black==18.5"], "black", "18.5", True),
        (["black==18.5"], "black", "19.0", False),
        (["foo>=1.0,<2"], "foo", "1.5rc1", True),  # pre-releases inside the range match
        (["foo"], "foo", "0.1", True),  # no specifier: every version
        (["foo>=1"], "bar", "5.0", False),  # a project the list does not name keeps nothing
        (["foo>=1", "foo==0.5"], "foo", "0.5", True),  # any line for the name may match
        (["foo"], "foo", "not-a-version", False),  # legacy versions never match
    ],
)
def test_allowlist_release(packages: list[str], project: str, version: str, kept: bool) -> None:
    plugin = AllowlistRelease.from_config(frozen({"packages": packages}))
    assert plugin.filter(release(version, project)) is kept


@pytest.mark.parametrize(
    ("packages", "version", "kept"),
    [
        (["example2>=1.4.2,<1.9,!=1.5.*,!=1.6.*"], "1.4.2", False),
        (["example2>=1.4.2,<1.9,!=1.5.*,!=1.6.*"], "1.5.1", True),
        (["example2>=1.4.2,<1.9,!=1.5.*,!=1.6.*"], "1.9", True),
        (["example2>=1.4.2,<1.9,!=1.5.*,!=1.6.*"], "1.7rc1", False),
        (["example2"], "3.0", False),  # a bare name blocks every version
        (["other>=0"], "1.0", True),
        (["example2>=1"], "legacy-version", True),  # nothing to compare: kept
    ],
)
def test_blocklist_release(packages: list[str], version: str, kept: bool) -> None:
    plugin = BlocklistRelease.from_config(frozen({"packages": packages}))
    assert plugin.filter(release(version, "example2")) is kept


@pytest.mark.parametrize(
    ("patterns", "version", "kept"),
    [
        ([r".+alpha\d$"], "1.0alpha1", False),
        ([r".+alpha\d$"], "1.0", True),
        ([r"\d+\.\d+\.dev"], "1.0.dev3", False),
        ([], "1.0", True),
    ],
)
def test_regex_release(patterns: list[str], version: str, kept: bool) -> None:
    plugin = RegexRelease.from_config(frozen({"releases": patterns}))
    assert plugin.filter(release(version)) is kept


@pytest.mark.parametrize(
    ("version", "kept"),
    [
        ("1.0", True),
        ("1.0rc1", False),
        ("1.0a1", False),
        ("1.0b12", False),  # bandersnatch's old regexes missed two-digit suffixes
        ("1.0.dev0", False),
        ("1.0.post1", True),
        ("1.0rc1.post1", False),
        ("2024.1.0+local", True),
        ("weird legacy", True),
    ],
)
def test_prerelease_release(version: str, kept: bool) -> None:
    assert PrereleaseRelease.from_config(frozen({})).filter(release(version)) is kept


@pytest.mark.parametrize(("project", "kept"), [("duckdb", False), ("other", True)])
def test_prerelease_release_limited_to_some_projects(project: str, kept: bool) -> None:
    plugin = PrereleaseRelease.from_config(frozen({"packages": ["duckdb"]}))
    assert plugin.filter(release("1.0.dev1", project)) is kept


def _select(table: Mapping[str, object], versions: dict[str, str], info: str | None) -> set[str]:
    plugin = LatestRelease.from_config(frozen(table))
    meta = {"version": info} if info else None
    releases = [
        release(v, files=[dist(f"demo-{v}.tar.gz", uploaded=t)], info=meta)
        for v, t in versions.items()
    ]
    return set(plugin.select(releases))


_VERSIONS = {
    "1.0": "2020-01-01T00:00:00Z",
    "2.0": "2021-01-01T00:00:00Z",
    "1.3.4": "2023-06-01T00:00:00Z",  # a late fix on an old branch: newest by time
    "2.1rc1": "2022-01-01T00:00:00Z",
    "2.0.1": "2022-06-01T00:00:00Z",
}


@pytest.mark.parametrize(
    ("table", "info", "expected"),
    [
        ({"keep": 2}, None, {"2.1rc1", "2.0.1"}),  # pre-releases count (bandersnatch)
        ({"keep": 2}, "2.0", {"2.1rc1", "2.0"}),  # info.version replaces the last one
        ({"keep": 2, "sort_by": "time"}, None, {"1.3.4", "2.0.1"}),
        ({"keep": 1, "sort_by": "time"}, "2.0.1", {"2.0.1"}),
        ({"keep": 0}, None, set(_VERSIONS)),  # 0 keeps everything
        ({"keep": 10}, None, set(_VERSIONS)),
        ({"keep": "3"}, None, {"2.1rc1", "2.0.1", "2.0"}),  # numbers as text, from a .conf
    ],
)
def test_latest_release(table: Mapping[str, object], info: str | None, expected: set[str]) -> None:
    assert _select(table, _VERSIONS, info) == expected


def test_latest_release_keeps_the_highest_final_without_info() -> None:
    # Without the JSON API, "the current version" is the highest final release.
    versions = {"1.0": "2020-01-01T00:00:00Z", "2.0a1": "2021-01-01T00:00:00Z"}
    assert _select({"keep": 1}, versions, None) == {"1.0"}


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"keep": -1}, "latest_release.keep"),
        ({"keep": "three"}, "latest_release.keep"),
        ({"keep": 1, "sort_by": "date"}, "latest_release.sort_by"),
        ({"kep": 1}, "latest_release.kep"),
    ],
)
def test_latest_release_bad_options(table: Mapping[str, object], key: str) -> None:
    with pytest.raises(PluginError) as caught:
        LatestRelease.from_config(frozen(table))
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("date", "uploaded", "kept"),
    [
        ("2024-01-01", "2024-03-01T00:00:00Z", True),
        ("2024-01-01", "2023-12-31T23:59:59Z", False),
        (datetime(2024, 1, 1, tzinfo=UTC), "2024-01-01T00:00:00Z", True),
        (date(2024, 1, 2), "2024-01-01T23:00:00Z", False),  # a TOML date: midnight UTC
        (datetime(2024, 1, 1, 12), "2024-01-01T11:00:00Z", False),  # naive: UTC
        ("2024-01-01T12:00:00+02:00", "2024-01-01T09:59:00Z", False),
        ("2024-01-01", None, True),  # no upload time: nothing to judge by
    ],
)
def test_uploaded_after_release(date: object, uploaded: str | None, kept: bool) -> None:
    plugin = UploadedAfterRelease.from_config(frozen({"date": date}))
    assert plugin.filter(release("1.0", files=[dist("demo-1.0.tar.gz", uploaded=uploaded)])) is kept


@pytest.mark.parametrize("table", [{}, {"date": "last tuesday"}, {"date": 2024}])
def test_uploaded_after_release_needs_a_date(table: Mapping[str, object]) -> None:
    with pytest.raises(PluginError) as caught:
        UploadedAfterRelease.from_config(frozen(table))
    assert caught.value.key == "uploaded_after.date"
