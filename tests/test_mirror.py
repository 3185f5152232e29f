"""The engine end to end against the fake upstream: full sync, every mutation, failures, resume."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from bandersnatch_clone.state import read_ledger, read_status
from bandersnatch_clone.sync import LARGE_FILE
from tests.conftest import MakeUpstream
from tests.fake_upstream import FakeIndex, FakeUpstream
from tests.mirror_helpers import (
    expected_files,
    make_config,
    mirror,
    project_page,
    root_projects,
)
from tests.treecheck import check_tree, package_files, parse_anchors, tree_snapshot


async def test_full_sync_places_every_file_and_every_link_resolves(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    outcome = await mirror(make_config(directory, upstream))
    index = upstream.index
    on_disk = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (directory / "web/packages").rglob("*")
        if p.is_file() and not p.name.endswith(".metadata")
    }
    assert outcome.exit_code == 0
    assert on_disk == expected_files(index)
    assert check_tree(directory) == []
    assert root_projects(directory) == {p.name: p.serial for p in index.listed()}
    assert read_status(directory) == index.serial


async def test_pages_carry_yanks_requires_python_and_status(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    await mirror(make_config(directory, upstream))
    gamma = project_page(directory, "gamma")
    yanked = {f["filename"]: f["yanked"] for f in gamma["files"]}
    anchors = parse_anchors((directory / "web/simple/delta/index.html").read_bytes())
    assert (
        yanked["gamma-1.1-py3-none-any.whl"],
        yanked["gamma-1.0-py3-none-any.whl"],
        project_page(directory, "zeta")["files"][-1]["yanked"],
        {a.get("data-requires-python") for a in anchors},
        project_page(directory, "omicron")["project-status"]["status"],
        "dist-info-metadata" in project_page(directory, "alpha")["files"][0],
    ) == ("broken build", False, True, {">=3.8,<4"}, "archived", False)


Mutation = Callable[[FakeIndex], str]


def _new_release(index: FakeIndex) -> str:
    index.add_release("beta", "3.0")
    return "beta"


def _new_file(index: FakeIndex) -> str:
    index.add_file("gamma", "1.0", "wheel", tag="cp311-cp311-win_amd64")
    return "gamma"


def _removed_file(index: FakeIndex) -> str:
    index.remove_file("alpha", "alpha-1.0.tar.gz")
    return "alpha"


def _removed_release(index: FakeIndex) -> str:
    index.remove_release("beta", "1.0")
    return "beta"


def _removed_project(index: FakeIndex) -> str:
    index.remove_project("epsilon")
    return "epsilon"


def _yank(index: FakeIndex) -> str:
    index.yank("alpha", "1.0", 'use <2.0> & "smile"')
    return "alpha"


def _new_project(index: FakeIndex) -> str:
    index.add_project("Brand_New", ["0.1"])
    return "brand-new"


MUTATIONS: dict[str, Mutation] = {
    "new release": _new_release,
    "new file": _new_file,
    "removed file": _removed_file,
    "removed release": _removed_release,
    "removed project": _removed_project,
    "yank": _yank,
    "new project": _new_project,
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
async def test_each_mutation_changes_exactly_that(
    upstream: FakeUpstream, tmp_path: Path, mutation: str
) -> None:
    directory = tmp_path / "mirror"
    config = make_config(directory, upstream)
    await mirror(config)
    pages = [p for p in (directory / "web/simple").glob("*/index*") if p.is_file()]
    for page in pages:
        os.utime(page, (1_000_000, 1_000_000))
    changed = MUTATIONS[mutation](upstream.index)
    upstream.reset_log()
    outcome = await mirror(config)
    touched = {p.parent.name for p in pages if p.exists() and p.stat().st_mtime != 1_000_000}
    fetched = {
        r.path for r in upstream.requests if r.path.startswith("/simple/") and r.path != "/simple/"
    }
    assert outcome.exit_code == 0
    assert check_tree(directory) == []
    assert package_files(directory) == set(expected_files(upstream.index))
    assert touched <= {changed}
    # A removal shows as a missing listing row: nothing to fetch, only to delete.
    assert fetched == (set() if mutation == "removed project" else {f"/simple/{changed}/"})
    assert read_status(directory) == upstream.index.serial
    assert set(root_projects(directory)) == {p.name for p in upstream.index.listed()}


async def test_yank_reason_reaches_both_page_forms_escaped(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    config = make_config(directory, upstream)
    await mirror(config)
    _yank(upstream.index)
    await mirror(config)
    html = (directory / "web/simple/alpha/index.html").read_bytes()
    reasons = {
        a.get("data-yanked") for a in parse_anchors(html) if "alpha-1.0" in (a["href"] or "")
    }
    json_reasons = {
        f["yanked"] for f in project_page(directory, "alpha")["files"] if "1.0" in f["filename"]
    }
    assert (reasons, json_reasons, b"<2.0>" in html) == (
        {'use <2.0> & "smile"'},
        {'use <2.0> & "smile"'},
        False,
    )


async def test_removed_project_leaves_no_trace(upstream: FakeUpstream, tmp_path: Path) -> None:
    directory = tmp_path / "mirror"
    config = make_config(directory, upstream, json=True)
    await mirror(config)
    upstream.index.remove_project("alpha")
    outcome = await mirror(config)
    leftovers = [p for p in (directory / "web").rglob("*alpha*")]
    assert (outcome.result.deleted, leftovers, "alpha" in read_ledger(directory)) == (
        ["alpha"],
        [],
        False,
    )


async def test_nothing_changed_costs_one_request(upstream: FakeUpstream, tmp_path: Path) -> None:
    directory = tmp_path / "mirror"
    config = make_config(directory, upstream)
    await mirror(config)
    before = tree_snapshot(directory)
    upstream.reset_log()
    outcome = await mirror(config)
    assert ([r.path for r in upstream.requests], outcome.planned, tree_snapshot(directory)) == (
        ["/simple/"],
        0,
        before,
    )


async def test_failing_project_keeps_serial_and_recovers(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    config = make_config(directory, upstream)
    upstream.fail(re.compile(r"^/packages/.*/alpha-"), status=503, times=10_000)
    first = await mirror(config)
    state_after_failure = (
        first.exit_code,
        sorted(first.result.failed),
        read_status(directory),
        (directory / "web/simple/alpha").exists(),
        check_tree(directory),
    )
    upstream.clear_faults()
    upstream.reset_log()
    second = await mirror(config)
    fetched = {r.path for r in upstream.requests if r.path.startswith("/simple/")}
    assert state_after_failure == (1, ["alpha"], 0, False, [])
    assert (second.exit_code, read_status(directory), fetched) == (
        0,
        upstream.index.serial,
        {"/simple/", "/simple/alpha/"},
    )
    assert check_tree(directory) == []


async def test_corrupt_download_is_never_placed(upstream: FakeUpstream, tmp_path: Path) -> None:
    directory = tmp_path / "mirror"
    upstream.corrupt(re.compile(r"^/packages/.*/beta-1\.0-py3"), times=10_000)
    outcome = await mirror(make_config(directory, upstream))
    assert (
        sorted(outcome.result.failed),
        [p.name for p in (directory / "web/packages").rglob("beta-1.0-py3*")],
        check_tree(directory),
    ) == (["beta"], [], [])


async def test_stale_project_page_is_retried_fresh(upstream: FakeUpstream, tmp_path: Path) -> None:
    directory = tmp_path / "mirror"
    upstream.stale("alpha", times=1)
    outcome = await mirror(make_config(directory, upstream))
    busted = [r for r in upstream.requests if r.path == "/simple/alpha/" and r.query]
    assert (
        outcome.exit_code,
        len(busted) >= 1,
        project_page(directory, "alpha")["meta"]["_last-serial"],
    ) == (
        0,
        True,
        upstream.index.project("alpha").serial,
    )


async def test_sync_named_projects_only(upstream: FakeUpstream, tmp_path: Path) -> None:
    directory = tmp_path / "mirror"
    outcome = await mirror(
        make_config(directory, upstream), names=["Alpha", "zope.interface-thing"]
    )
    assert (sorted(root_projects(directory)), read_status(directory), outcome.exit_code) == (
        ["alpha", "zope-interface-thing"],
        0,
        0,
    )
    assert check_tree(directory) == []


async def test_xmlrpc_changelog_listing(upstream: FakeUpstream, tmp_path: Path) -> None:
    directory = tmp_path / "mirror"
    config = make_config(directory, upstream, listing="xmlrpc")
    await mirror(config)
    first = package_files(directory)
    upstream.index.add_release("beta", "3.0")
    upstream.index.remove_project("gamma")
    upstream.reset_log()
    outcome = await mirror(config)
    fetched = {r.path for r in upstream.requests if r.path.startswith("/simple/")}
    assert first == set(expected_files(FakeIndex.small()))
    assert (fetched, outcome.result.deleted, read_status(directory)) == (
        {"/simple/beta/", "/simple/gamma/"},
        ["gamma"],
        upstream.index.serial,
    )
    assert package_files(directory) == set(expected_files(upstream.index))


async def test_json_api_copies(upstream: FakeUpstream, tmp_path: Path) -> None:
    directory = tmp_path / "mirror"
    await mirror(make_config(directory, upstream, json=True))
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{upstream.url}/pypi/alpha/json") as resp,
    ):
        expected = await resp.read()
    assert (
        (directory / "web/json/alpha").read_bytes(),
        (directory / "web/pypi/alpha/json").read_bytes(),
    ) == (expected, expected)


async def test_index_only_mirror_links_upstream(upstream: FakeUpstream, tmp_path: Path) -> None:
    directory = tmp_path / "mirror"
    await mirror(make_config(directory, upstream, release_files=False))
    urls = [f["url"] for f in project_page(directory, "alpha")["files"]]
    assert (
        (directory / "web/packages").exists(),
        all(u.startswith(upstream.url) for u in urls),
    ) == (
        False,
        True,
    )


async def test_root_uri_makes_absolute_links(upstream: FakeUpstream, tmp_path: Path) -> None:
    directory = tmp_path / "mirror"
    await mirror(make_config(directory, upstream, root_uri="https://mirror.example/pypi"))
    urls = [f["url"] for f in project_page(directory, "beta")["files"]]
    assert all(u.startswith("https://mirror.example/pypi/packages/") for u in urls)


async def test_ledger_and_status_survive_json_roundtrip(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    await mirror(make_config(directory, upstream))
    ledger = read_ledger(directory)
    root = json.loads((directory / "web/simple/index.v1_json").read_bytes())
    assert {p["name"]: p["_last-serial"] for p in root["projects"]} == {
        (e.display or n): e.serial for n, e in ledger.items()
    }


async def test_quarantined_project_offers_no_files(upstream: FakeUpstream, tmp_path: Path) -> None:
    directory = tmp_path / "mirror"
    config = make_config(directory, upstream)
    await mirror(config)
    upstream.index.set_status("alpha", "quarantined", "malware")
    # PyPI hides a quarantined project from the listing, so `mirror` removes it...
    await mirror(config)
    gone = (directory / "web/simple/alpha").exists(), package_files(directory)
    # ...and `sync alpha` (which asks for it by name) writes a page without any file.
    await mirror(config, names=["alpha"])
    page = project_page(directory, "alpha")
    assert (gone[0], any(n.startswith("alpha-") for n in gone[1])) == (False, False)
    assert (page["files"], page["project-status"]["status"]) == ([], "quarantined")
    assert check_tree(directory) == []


async def test_large_files_share_their_own_slots_and_leave_small_ones_the_rest(
    make_upstream: MakeUpstream, tmp_path: Path
) -> None:
    index = FakeIndex()
    for i in range(6):
        index.add_project(f"big-{i}", versions=())
        index.add_release(f"big-{i}", "1.0", sdist=False, extra_size=LARGE_FILE + 1024)
    for i in range(12):
        index.add_project(f"small-{i}", versions=(), wheel=False)
        index.add_release(f"small-{i}", "1.0", wheel=False)
    upstream = make_upstream(index)
    upstream.latency = 0.1  # every request waits: how many the mirror keeps in flight shows

    def kind(path: str) -> str | None:
        if not path.startswith("/packages/") or path.endswith(".metadata"):
            return None
        return "large" if "/big" in path else "small"

    upstream.track(kind)
    directory = tmp_path / "mirror"
    config = make_config(directory, upstream, download_workers=6, large_file_workers=2)
    outcome = await mirror(config)
    on_disk = {p.name for p in (directory / "web/packages").rglob("*") if p.is_file()}
    assert outcome.exit_code == 0
    assert set(expected_files(index)) <= on_disk
    # The six big wheels went two at a time; the sdists filled the other download slots.
    assert upstream.peaks["large"] == 2
    assert upstream.peaks["small"] > 2
