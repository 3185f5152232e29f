"""FilterSet: the stages applied together to a project page, as the engine calls them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest
from packaging.utils import NormalizedName

from bandersnatch_clone.filters import FilterSet, load_filters
from bandersnatch_clone.model import ProjectDetail
from tests.filters.helpers import config, dist, filenames, project, shape

FILES = [
    "demo-1.0.tar.gz",
    "demo-1.0-py3-none-any.whl",
    "demo-2.0rc1.tar.gz",
    "demo-2.0.tar.gz",
    "demo-2.0-cp311-cp311-win_amd64.whl",
    "demo-2.0-cp311-cp311-manylinux_2_17_x86_64.whl",
]


def _filters(tables: Mapping[str, object], *enabled: str, folder: Path | None = None) -> FilterSet:
    fixed = datetime(2024, 6, 15, tzinfo=UTC)
    return load_filters(config(tables, enabled, folder), now=lambda: fixed)


def test_no_filters_return_the_page_itself() -> None:
    detail = project("demo", FILES)
    assert _filters({}).filter_project(detail, None) is detail


@pytest.mark.parametrize(
    ("tables", "enabled", "expected"),
    [
        ({}, ["prerelease_release"], [f for f in FILES if "rc1" not in f]),
        ({"latest_release": {"keep": 1}}, ["latest_release"], FILES[3:]),
        (
            {"blocklist": {"platforms": ["windows", "linux"]}},
            ["exclude_platform"],
            [
                "demo-1.0.tar.gz",
                "demo-1.0-py3-none-any.whl",
                "demo-2.0rc1.tar.gz",
                "demo-2.0.tar.gz",
            ],
        ),
        (
            {"allowlist": {"packages": ["demo==1.0"]}},
            ["allowlist_project", "allowlist_release"],
            FILES[:2],
        ),
        (
            # Per-version filters run first; of 1.0 and 2.0rc1, "latest 1" keeps the
            # current version (the highest final release) in place of the pre-release.
            {"latest_release": {"keep": 1}, "filter_regex": {"releases": [r"2\.0$"]}},
            ["latest_release", "regex_release"],
            FILES[:2],
        ),
        (
            {"latest_release": {"keep": 1}, "blocklist": {"platforms": ["windows"]}},
            ["latest_release", "exclude_platform"],
            ["demo-2.0.tar.gz", "demo-2.0-cp311-cp311-manylinux_2_17_x86_64.whl"],
        ),
    ],
)
def test_stages_combined(
    tables: Mapping[str, object], enabled: list[str], expected: list[str]
) -> None:
    assert (
        filenames(_filters(tables, *enabled).filter_project(project("demo", FILES), None))
        == expected
    )


def test_versions_follow_the_surviving_files() -> None:
    detail = project("demo", FILES, versions=["0.5", "1.0", "2.0rc1", "2.0"])  # 0.5: no files
    result = _filters(
        {"blocklist": {"platforms": ["py3"]}}, "exclude_platform", "prerelease_release"
    )
    filtered = result.filter_project(detail, None)
    # py3 takes every wheel; 1.0 and 2.0 keep their sdists; 0.5 never had files and passes
    # the release filters; 2.0rc1 is gone.
    assert shape(filtered) == (["demo-1.0.tar.gz", "demo-2.0.tar.gz"], ("0.5", "1.0", "2.0"))


def test_a_version_that_loses_all_its_files_leaves_the_list() -> None:
    detail = project("demo", ["demo-1.0-cp311-cp311-win32.whl", "demo-2.0.tar.gz"])
    filtered = _filters(
        {"blocklist": {"platforms": ["windows"]}}, "exclude_platform"
    ).filter_project(detail, None)
    assert shape(filtered) == (["demo-2.0.tar.gz"], ("2.0",))


@pytest.mark.parametrize(
    ("tables", "enabled"),
    [
        ({"blocklist": {"platforms": ["windows"]}}, ["exclude_platform"]),
        ({"filter_regex": {"releases": [".*"]}}, ["regex_release"]),
        ({"size_project_metadata": {"max_package_size": 10}}, ["size_project_metadata"]),
    ],
)
def test_a_project_with_nothing_left_is_dropped(
    tables: Mapping[str, object], enabled: list[str]
) -> None:
    detail = project("demo", ["demo-1.0-cp311-cp311-win32.whl"])
    assert _filters(tables, *enabled).filter_project(detail, None) is None


def test_a_project_without_files_stays_while_its_versions_pass() -> None:
    detail = ProjectDetail(name=NormalizedName("demo"), serial=3, versions=("1.0", "2.0a1"))
    filtered = _filters({}, "prerelease_release").filter_project(detail, None)
    assert shape(filtered) == ([], ("1.0",))


def test_versions_are_matched_across_spellings() -> None:
    # PEP 700 lists "1.0RC1"; the wheel's name normalises it to "1.0rc1".
    detail = project("demo", ["demo-1.0rc1-py3-none-any.whl", "demo-1.0.tar.gz"], ["1.0RC1", "1.0"])
    filtered = _filters({}, "prerelease_release").filter_project(detail, None)
    assert shape(filtered) == (["demo-1.0.tar.gz"], ("1.0",))


@pytest.mark.parametrize(
    ("filename", "versions", "kept"),
    [
        ("Demo-1.0.win32-py2.7.exe", ["1.0", "2.0rc1"], True),  # legacy name, listed version
        ("demo-2.0rc1-py2.7.egg", ["1.0", "2.0rc1"], False),
        ("demo_pkg-1.0.tar.gz", ["1.0"], True),
        ("mystery.bin", ["1.0"], False),  # no version in the name: a release filter cannot judge
    ],
)
def test_legacy_files_are_placed_by_their_name(
    filename: str, versions: list[str], kept: bool
) -> None:
    name = "demo-pkg" if filename.startswith("demo_pkg") else "demo"
    detail = project(name, [dist(filename), dist(f"{name}-1.0.zip")], versions)
    filtered = _filters({}, "prerelease_release").filter_project(detail, None)
    assert (filename in (filenames(filtered) or [])) is kept


def test_files_of_unknown_version_pass_when_only_file_filters_run() -> None:
    detail = project("demo", [dist("mystery.bin"), dist("demo-1.0-cp311-cp311-win32.whl")], ["1.0"])
    filtered = _filters(
        {"blocklist": {"platforms": ["windows"]}}, "exclude_platform"
    ).filter_project(detail, None)
    assert filenames(filtered) == ["mystery.bin"]


def test_pinned_requirements_override_other_release_filters(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("demo==1.0\nother\n")
    tables = {"allowlist": {"requirements": ["requirements.txt"]}, "latest_release": {"keep": 1}}
    filters = _filters(tables, "latest_release", "project_requirements_pinned", folder=tmp_path)
    # demo is pinned: only the pin decides, latest_release is skipped. other is not pinned.
    other = project("other", ["other-1.0.tar.gz", "other-2.0.tar.gz"])
    assert [
        filenames(filters.filter_project(project("demo", FILES), None)),
        filenames(filters.filter_project(other, None)),
    ] == [FILES[:2], ["other-2.0.tar.gz"]]


def test_metadata_filters_see_info() -> None:
    filters = _filters(
        {"regex_project_metadata": {"not-null:info.license": ["MIT"]}}, "regex_project_metadata"
    )
    detail = project("demo", FILES)
    results = [filters.filter_project(detail, {"license": lic}) for lic in ("MIT", "GPL")]
    assert [r is detail for r in results] == [True, False]


@pytest.mark.parametrize(
    ("tables", "enabled", "needs"),
    [
        ({}, [], False),
        ({"latest_release": {"keep": 2}}, ["latest_release"], False),
        ({"size_project_metadata": {"max_package_size": "1G"}}, ["size_project_metadata"], False),
        ({"regex_project_metadata": {"info.license": ["MIT"]}}, ["regex_project_metadata"], True),
        (
            {"version_range_release_file_metadata": {"info.requires_python": ["3.12"]}},
            ["version_range_release_file_metadata"],
            True,
        ),
    ],
)
def test_needs_metadata(tables: Mapping[str, object], enabled: list[str], needs: bool) -> None:
    assert _filters(tables, *enabled).needs_metadata is needs


@pytest.mark.parametrize(
    ("tables", "enabled", "allowlist"),
    [
        ({}, ["blocklist_project"], None),
        ({"allowlist": {"packages": ["a", "B", "c"]}}, ["allowlist_project"], {"a", "b", "c"}),
        ({"allowlist": {"packages": []}}, ["allowlist_project"], None),
        (
            {"allowlist": {"packages": ["a", "b", "c"]}, "blocklist": {"packages": ["b"]}},
            ["allowlist_project", "blocklist_project"],
            {"a", "c"},
        ),
        (
            {
                "allowlist": {"packages": ["evil-one", "good"]},
                "filter_regex": {"packages": ["evil"]},
            },
            ["regex_project", "allowlist_project"],
            {"good"},
        ),
    ],
)
def test_allowlist(
    tables: Mapping[str, object], enabled: list[str], allowlist: set[str] | None
) -> None:
    assert _filters(tables, *enabled).allowlist == allowlist


def test_two_allowlists_intersect(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("a\nb\n")
    tables = {"allowlist": {"packages": ["b", "c"], "requirements": ["r.txt"]}}
    filters = _filters(tables, "allowlist_project", "project_requirements", folder=tmp_path)
    assert (filters.allowlist, filters.allows_project(NormalizedName("a"))) == (
        frozenset({NormalizedName("b")}),
        False,
    )


def test_describe_has_a_line_per_filter() -> None:
    tables = {"latest_release": {"keep": 3}, "blocklist": {"platforms": ["windows"]}}
    lines = _filters(tables, "latest_release", "exclude_platform", "exclude_yanked").describe()
    assert [line.split(":")[0] for line in lines] == [
        "latest_release",
        "exclude_platform",
        "exclude_yanked",
    ]


def test_cooldown_uses_the_injected_clock() -> None:
    detail = project(
        "demo",
        [
            dist("demo-1.0.tar.gz", uploaded="2024-01-01T00:00:00Z"),
            dist("demo-1.1.tar.gz", uploaded="2024-06-14T00:00:00Z"),
        ],
    )
    filtered = _filters({"cooldown": {"days": 2}}, "cooldown").filter_project(detail, None)
    assert shape(filtered) == (["demo-1.0.tar.gz"], ("1.0",))


def test_changes_at_is_when_a_held_back_file_comes_of_age() -> None:
    detail = project(
        "demo",
        [
            dist("demo-1.0.tar.gz", uploaded="2024-01-01T00:00:00Z"),
            dist("demo-1.1.tar.gz", uploaded="2024-06-14T00:00:00Z"),
            dist("demo-1.2.tar.gz", uploaded="2024-06-13T00:00:00Z"),
        ],
    )
    filters = _filters({"cooldown": {"days": 2}}, "cooldown")
    # Now is 2024-06-15: 1.2 has just come of age, 1.1 will on the 16th.
    assert filters.changes_at(detail) == datetime(2024, 6, 16, tzinfo=UTC)


def test_changes_at_is_none_without_time_based_filters() -> None:
    detail = project("demo", [dist("demo-1.1.tar.gz", uploaded="2024-06-14T00:00:00Z")])
    assert _filters({}, "prerelease_release").changes_at(detail) is None


def _fingerprint(tables: Mapping[str, object], *enabled: str, folder: Path | None = None) -> str:
    return _filters(tables, *enabled, folder=folder).fingerprint


def test_fingerprint_follows_what_the_filters_decide_by(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("a\n")
    base = {"latest_release": {"keep": 2}, "allowlist": {"requirements": ["r.txt"]}}
    enabled = ("latest_release", "project_requirements")
    first = _fingerprint(base, *enabled, folder=tmp_path)
    same = _fingerprint(base, *enabled, folder=tmp_path)
    more = _fingerprint({**base, "latest_release": {"keep": 3}}, *enabled, folder=tmp_path)
    fewer = _fingerprint(base, "latest_release", folder=tmp_path)
    unread = _fingerprint({**base, "cooldown": {"days": 1}}, *enabled, folder=tmp_path)
    (tmp_path / "r.txt").write_text("a\nb\n")
    edited = _fingerprint(base, *enabled, folder=tmp_path)
    assert (same, unread, len({first, more, fewer, edited})) == (first, first, 4)
