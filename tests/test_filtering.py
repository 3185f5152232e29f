"""Filters end to end: the tree holds exactly what the filters keep, and changes apply next run."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from bandersnatch_clone.config import Config, config_from_mapping
from bandersnatch_clone.errors import PluginError
from bandersnatch_clone.mirror import run
from tests.conftest import MakeUpstream
from tests.fake_upstream import FakeIndex, FakeUpstream
from tests.mirror_helpers import FAST_RETRY, expected_files, mirror, root_projects
from tests.treecheck import check_tree, package_files


def filtered_config(directory: Path, upstream: FakeUpstream, **tables: Any) -> Config:
    data: dict[str, Any] = {
        "mirror": {
            "directory": str(directory),
            "upstream": upstream.url,
            "metadata_workers": 4,
            "download_workers": 4,
        },
        **tables,
    }
    return config_from_mapping(data, directory.parent / "filters.toml")


def files_of(index: FakeIndex, keep: Any) -> set[str]:
    """Filenames of the upstream's files for which keep(project, release_version, filename)."""
    return {
        f.filename
        for p in index.listed()
        for r, f in p.files()
        if keep(p.normalized, r.version, f.filename)
    }


CASES: dict[str, tuple[dict[str, Any], Any]] = {
    "blocklist_project": (
        {"plugins": {"enabled": ["blocklist_project"]}, "blocklist": {"packages": ["alpha"]}},
        lambda p, v, f: p != "alpha",
    ),
    "prerelease_release": (
        {"plugins": {"enabled": ["prerelease_release"]}},
        lambda p, v, f: "b1" not in v,
    ),
    "exclude_platform": (
        {"plugins": {"enabled": ["exclude_platform"]}, "blocklist": {"platforms": ["linux"]}},
        lambda p, v, f: "manylinux" not in f,
    ),
    "regex_project": (
        {"plugins": {"enabled": ["regex_project"]}, "filter_regex": {"packages": ["^[a-d]"]}},
        lambda p, v, f: not re.match("^[a-d]", p),
    ),
    "latest_release": (
        {"plugins": {"enabled": ["latest_release"]}, "latest_release": {"keep": 1}},
        None,  # computed from the index: the highest version with files, per project
    ),
    "regex_release": (
        {"plugins": {"enabled": ["regex_release"]}, "filter_regex": {"releases": [".*b1$"]}},
        lambda p, v, f: not v.endswith("b1"),
    ),
    "blocklist_release": (
        {"plugins": {"enabled": ["blocklist_release"]}, "blocklist": {"packages": ["beta<1.1"]}},
        lambda p, v, f: not (p == "beta" and v == "1.0"),
    ),
    "requires_python_release_file": (
        {
            "plugins": {"enabled": ["requires_python_release_file"]},
            "requires_python": {"targets": ["3.7"]},
        },
        lambda p, v, f: p not in ("alpha", "delta"),
    ),
    "exclude_filename": (
        {
            "plugins": {"enabled": ["exclude_filename"]},
            "exclude_filename": {"patterns": ["*.tar.gz"]},
        },
        lambda p, v, f: not f.endswith(".tar.gz"),
    ),
    "exclude_yanked": (
        {"plugins": {"enabled": ["exclude_yanked"]}},
        lambda p, v, f: not ((p == "gamma" or p == "zeta") and v == "1.1"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_builtin_filter_keeps_exactly_the_expected_files(
    upstream: FakeUpstream, tmp_path: Path, case: str
) -> None:
    tables, keep = CASES[case]
    if keep is None:
        # keep = 1 keeps the current version: the highest final release with files, not yanked.
        latest = {
            str(p.normalized): max(
                (
                    Version(r.version)
                    for r, _ in p.files()
                    if not r.yanked and not Version(r.version).is_prerelease
                ),
                default=None,
            )
            for p in upstream.index.listed()
        }

        def keep(p: str, v: str, f: str) -> bool:
            return Version(v) == latest[p]

    directory = tmp_path / "mirror"
    outcome = await mirror(filtered_config(directory, upstream, **tables))
    assert outcome.exit_code == 0
    assert package_files(directory) == files_of(upstream.index, keep)
    assert check_tree(directory) == []


async def test_dropped_projects_leave_no_empty_page(upstream: FakeUpstream, tmp_path: Path) -> None:
    directory = tmp_path / "mirror"
    tables = {"plugins": {"enabled": ["blocklist_project"]}, "blocklist": {"packages": ["beta"]}}
    await mirror(filtered_config(directory, upstream, **tables))
    assert ((directory / "web/simple/beta").exists(), "beta" in root_projects(directory)) == (
        False,
        False,
    )


async def test_allowlist_asks_only_about_its_projects(
    make_upstream: MakeUpstream, tmp_path: Path
) -> None:
    upstream = make_upstream(FakeIndex.generate(500, files_per_project=1))
    names = ["proj-000007", "proj-000123", "proj-000499"]
    tables = {"plugins": {"enabled": ["allowlist_project"]}, "allowlist": {"packages": names}}
    directory = tmp_path / "mirror"
    outcome = await mirror(filtered_config(directory, upstream, **tables))
    asked = {r.path for r in upstream.requests if not r.path.startswith("/packages/")}
    assert outcome.exit_code == 0
    assert asked == {f"/simple/{n}/" for n in names}
    assert sorted(root_projects(directory)) == names
    assert check_tree(directory) == []


async def test_allowlist_and_platform_changes_apply_next_run(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    allow = {"plugins": {"enabled": ["allowlist_project"]}, "allowlist": {"packages": ["alpha"]}}
    await mirror(filtered_config(directory, upstream, **allow))
    first = sorted(root_projects(directory))
    allow["allowlist"] = {"packages": ["alpha", "eta"]}
    await mirror(filtered_config(directory, upstream, **allow))
    second = package_files(directory)
    allow["plugins"] = {"enabled": ["allowlist_project", "exclude_platform"]}
    allow["blocklist"] = {"platforms": ["linux"]}
    await mirror(filtered_config(directory, upstream, **allow))
    assert first == ["alpha"]
    assert second == files_of(upstream.index, lambda p, v, f: p in ("alpha", "eta"))
    assert package_files(directory) == files_of(
        upstream.index, lambda p, v, f: p in ("alpha", "eta") and "manylinux" not in f
    )
    assert check_tree(directory) == []


async def test_changed_filter_reaches_projects_whose_serial_did_not_move(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    await mirror(filtered_config(directory, upstream))
    blocked = {"plugins": {"enabled": ["prerelease_release"]}}
    outcome = await mirror(filtered_config(directory, upstream, **blocked))
    assert outcome.exit_code == 0
    assert package_files(directory) == {f for f in expected_files(upstream.index) if "b1" not in f}
    assert check_tree(directory) == []


def test_unknown_plugin_exits_2_naming_it(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = tmp_path / "m.toml"
    config.write_text(
        f'[mirror]\ndirectory = "{tmp_path / "m"}"\nupstream = "{upstream.url}"\n'
        '[plugins]\nenabled = ["no_such_filter"]\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "bandersnatch_clone.cli", "-c", str(config), "mirror"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, "no_such_filter" in result.stderr, upstream.total) == (2, True, 0)


async def test_bad_plugin_option_names_the_key(upstream: FakeUpstream, tmp_path: Path) -> None:
    tables = {"plugins": {"enabled": ["latest_release"]}, "latest_release": {"keep": "many"}}
    with pytest.raises(PluginError, match="keep"):
        await mirror(filtered_config(tmp_path / "m", upstream, **tables))


async def test_cooldown_holds_a_new_file_back_until_it_is_old_enough(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    tables = {"plugins": {"enabled": ["cooldown"]}, "cooldown": {"days": 7}}
    config = filtered_config(directory, upstream, **tables)
    today = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    fresh = upstream.index.add_file(
        "beta", "1.1", "wheel", tag="cp312-cp312-manylinux_2_17_x86_64",
        upload_time=(today - timedelta(days=2)).replace(tzinfo=None),
    )  # fmt: skip
    await run(config, retry=FAST_RETRY, now=lambda: today)
    held_back = fresh.filename in package_files(directory)
    # Nothing changes upstream; the only thing that moves is the clock.
    upstream.reset_log()
    await run(config, retry=FAST_RETRY, now=lambda: today + timedelta(days=4))
    asked_again = {r.path for r in upstream.requests if r.path.startswith("/simple/")}
    assert (held_back, fresh.filename in package_files(directory)) == (False, False)
    await run(config, retry=FAST_RETRY, now=lambda: today + timedelta(days=5, hours=1))
    assert fresh.filename in package_files(directory)
    assert asked_again == {"/simple/"}
    assert check_tree(directory) == []


async def test_allowlist_release_keeps_the_allowed_versions(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    tables = {
        "plugins": {"enabled": ["allowlist_project", "allowlist_release"]},
        "allowlist": {"packages": ["alpha", "beta>=1.1"]},
    }
    directory = tmp_path / "mirror"
    await mirror(filtered_config(directory, upstream, **tables))
    assert package_files(directory) == files_of(
        upstream.index,
        lambda p, v, f: p == "alpha" or (p == "beta" and Version(v) >= Version("1.1")),
    )


async def test_requirements_files_pick_projects_and_pins(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    (tmp_path / "requirements-app.txt").write_text("# app\nalpha==1.0\nbeta\n--index-url x\n")
    tables = {
        "plugins": {"enabled": ["project_requirements", "project_requirements_pinned"]},
        "allowlist": {"requirements": ["requirements-*.txt"]},
    }
    directory = tmp_path / "mirror"
    await mirror(filtered_config(directory, upstream, **tables))
    assert package_files(directory) == files_of(
        upstream.index, lambda p, v, f: (p == "alpha" and v == "1.0") or p == "beta"
    )
    assert check_tree(directory) == []


async def test_uploaded_after_keeps_versions_first_uploaded_since(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    index = upstream.index
    firsts = {
        (p.normalized, r.version): min(f.upload_time for f in r.files.values())
        for p in index.listed()
        for r in p.releases.values()
        if r.files
    }
    cutoff = sorted(firsts.values())[len(firsts) // 2]
    tables = {
        "plugins": {"enabled": ["uploaded_after_release"]},
        "uploaded_after": {"date": cutoff.replace(tzinfo=UTC)},
    }
    directory = tmp_path / "mirror"
    await mirror(filtered_config(directory, upstream, **tables))
    assert package_files(directory) == files_of(index, lambda p, v, f: firsts[(p, v)] >= cutoff)


async def test_size_limit_drops_big_projects(upstream: FakeUpstream, tmp_path: Path) -> None:
    index = upstream.index
    sizes = {p.normalized: sum(f.digests().size for _, f in p.files()) for p in index.listed()}
    limit = sorted(sizes.values())[len(sizes) // 2]
    tables = {
        "plugins": {"enabled": ["size_project_metadata"]},
        "size_project_metadata": {"max_package_size": str(limit)},
    }
    directory = tmp_path / "mirror"
    await mirror(filtered_config(directory, upstream, **tables))
    assert package_files(directory) == files_of(index, lambda p, v, f: sizes[p] <= limit)
    assert check_tree(directory) == []


async def test_version_count_keeps_projects_within_bounds(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    counts = {
        p.normalized: len([r for r in p.releases.values() if r.files])
        for p in upstream.index.listed()
    }
    tables = {
        "plugins": {"enabled": ["version_count_project_metadata"]},
        "version_count": {"min": 2, "max": 2},
    }
    directory = tmp_path / "mirror"
    await mirror(filtered_config(directory, upstream, **tables))
    assert package_files(directory) == files_of(upstream.index, lambda p, v, f: counts[p] == 2)
    assert {n for n, c in counts.items() if c == 2} == {"alpha", "gamma", "zeta"}


async def test_metadata_regex_reads_the_json_api_info(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    tables = {
        "plugins": {"enabled": ["regex_project_metadata"]},
        "regex_project_metadata": {"not-null:info.summary": ["Needed .*", "The first.*"]},
    }
    directory = tmp_path / "mirror"
    await mirror(filtered_config(directory, upstream, **tables))
    asked_json = {r.path for r in upstream.requests if r.path.startswith("/pypi/")}
    assert package_files(directory) == files_of(
        upstream.index, lambda p, v, f: p in ("alpha", "beta")
    )
    assert "/pypi/alpha/json" in asked_json
    assert check_tree(directory) == []


async def test_release_file_version_range(upstream: FakeUpstream, tmp_path: Path) -> None:
    tables = {
        "plugins": {"enabled": ["version_range_release_file_metadata"]},
        "version_range_release_file_metadata": {"release_file.requires_python": ["3.7"]},
    }
    directory = tmp_path / "mirror"
    await mirror(filtered_config(directory, upstream, **tables))
    assert package_files(directory) == files_of(
        upstream.index, lambda p, v, f: p not in ("alpha", "delta")
    )


async def test_project_version_range_and_release_file_regex(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    tables = {
        "plugins": {"enabled": ["version_range_project_metadata", "regex_release_file_metadata"]},
        "version_range_project_metadata": {"info.requires_python": ["3.7"]},
        "regex_release_file_metadata": {"release_file.packagetype": ["bdist_wheel"]},
    }
    directory = tmp_path / "mirror"
    await mirror(filtered_config(directory, upstream, **tables))
    assert package_files(directory) == files_of(
        upstream.index, lambda p, v, f: p not in ("alpha", "delta") and f.endswith(".whl")
    )
    assert check_tree(directory) == []
