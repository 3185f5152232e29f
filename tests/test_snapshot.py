"""snapshot: a frozen copy of the tree made of hard links, consistent while a sync runs."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

import pytest

from bandersnatch_clone import snapshot
from bandersnatch_clone.cli import main
from bandersnatch_clone.snapshot import SnapshotSummary, take_snapshot
from bandersnatch_clone.state import read_status
from bandersnatch_clone.storage.filesystem import FilesystemTemp
from tests.airgap_helpers import offline_config, root_names, unlisted_pages
from tests.fake_index import FakeIndex
from tests.fake_upstream import FakeUpstream
from tests.mirror_helpers import make_config, mirror
from tests.treecheck import check_tree, tree_snapshot

TOUCHED = ["alpha", "beta", "delta", "eta", "zeta"]


def _mutate(index: FakeIndex) -> None:
    """A sync's worth of every kind of change: new files, a file that loses its link (deleted
    after beta's new pages are written), a removed project (pages deleted after the new root
    index), a new project."""
    index.touch(TOUCHED)
    sdist = next(f.filename for _, f in index.project("beta").files() if f.filename.endswith("gz"))
    index.remove_file("beta", sdist)
    index.remove_project("gamma")
    index.add_project("newproj", ["1.0"])


def _web(state: dict[str, str]) -> dict[str, str]:
    return {path: digest for path, digest in state.items() if path != "status"}


async def test_a_snapshot_taken_while_a_sync_runs_is_consistent_and_stays_frozen(
    upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, dest = tmp_path / "mirror", tmp_path / "snapshots"
    config = make_config(directory, upstream, json=True)
    await mirror(config)
    serial = read_status(directory)
    _mutate(upstream.index)
    # The snapshot starts (in a thread, as a cron job would run it) once the sync has placed its
    # second file, and the sync goes on once the snapshot holds a root index: they overlap.
    root_linked = threading.Event()
    link = snapshot._link

    def spy_link(source: Path, target: Path) -> None:
        link(source, target)
        if target.name == "index.v1_json" and target.parent.name == "simple":
            root_linked.set()

    def take() -> tuple[SnapshotSummary, dict[str, str]]:
        summary = take_snapshot(directory, dest)
        return summary, tree_snapshot(summary.path)

    taken: list[asyncio.Future[tuple[SnapshotSummary, dict[str, str]]]] = []
    commit, commits = FilesystemTemp.commit, [0]

    async def spy_commit(self: FilesystemTemp, path: PurePosixPath) -> None:
        await commit(self, path)
        commits[0] += 1
        if commits[0] == 2:
            taken.append(asyncio.get_running_loop().run_in_executor(None, take))
            await asyncio.to_thread(root_linked.wait, 30)

    monkeypatch.setattr(snapshot, "_link", spy_link)
    monkeypatch.setattr(FilesystemTemp, "commit", spy_commit)
    outcome = await mirror(config)
    summary, frozen = await taken[0]
    assert (
        outcome.exit_code,
        summary.serial,
        check_tree(summary.path),
        unlisted_pages(summary.path),
        tree_snapshot(summary.path),
    ) == (0, serial, [], [], frozen)


def _first_project_page(path: PurePosixPath) -> bool:
    return path.parts[:2] == ("web", "simple") and len(path.parts) == 4


def _first_file_of_beta(path: PurePosixPath) -> bool:
    return path.parts[:2] == ("web", "packages") and path.name.startswith("beta-")


@pytest.mark.parametrize(
    "trigger", [_first_project_page, _first_file_of_beta], ids=["before-pages", "before-files"]
)
def test_a_whole_sync_at_any_point_of_the_walk_still_gives_a_consistent_snapshot(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    trigger: Callable[[PurePosixPath], bool],
) -> None:
    # Deterministic interleavings: a complete sync runs just before the snapshot links the path
    # `trigger` picks, so every way the tree moves under a walk happens at a known point.
    directory, dest = tmp_path / "mirror", tmp_path / "snapshots"
    config = make_config(directory, upstream, json=True)
    asyncio.run(mirror(config))
    before, serial = tree_snapshot(directory), read_status(directory)
    _mutate(upstream.index)
    fired: list[bool] = []
    link = snapshot._link

    def spy_link(source: Path, target: Path) -> None:
        if not fired and trigger(PurePosixPath(source.relative_to(directory).as_posix())):
            fired.append(True)
            assert asyncio.run(mirror(config)).exit_code == 0
        link(source, target)

    monkeypatch.setattr(snapshot, "_link", spy_link)
    summary = take_snapshot(directory, dest)
    taken, after = tree_snapshot(summary.path), tree_snapshot(directory)
    # Every file is a version the mirror really had, and the snapshot is a tree a client can use.
    invented = [p for p, h in _web(taken).items() if h not in (before.get(p), after.get(p))]
    assert (
        fired,
        summary.serial,
        check_tree(summary.path),
        unlisted_pages(summary.path),
        invented,
        root_names(summary.path) == root_names(directory),
    ) == ([True], serial, [], [], [], True)
    if trigger is _first_project_page:
        # The root index linked first named gamma, whose pages were gone: it was linked again.
        assert _web(taken) == _web(after)
    else:
        # alpha was linked whole before the sync; beta's old page linked a file the sync then
        # deleted, so beta's newer pages were taken; gamma went with the newer root index.
        page = "web/simple/{}/index.v1_json".format
        assert (
            taken[page("alpha")] == before[page("alpha")] != after[page("alpha")],
            taken[page("beta")] == after[page("beta")] != before[page("beta")],
            page("gamma") in taken,
            page("newproj") in taken,
        ) == (True, True, False, True)


async def test_snapshots_are_hard_links_pruned_to_keep_with_latest_pointing_at_the_newest(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory, dest = tmp_path / "mirror", tmp_path / "snapshots"
    await mirror(make_config(directory, upstream))
    start = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    taken = [
        take_snapshot(directory, dest, keep=2, now=start + timedelta(hours=h)) for h in range(3)
    ]
    kept = sorted(p.name for p in dest.iterdir() if not p.name.startswith("."))
    wheel = next((directory / "web/packages").rglob("*.whl"))
    linked = taken[-1].path / wheel.relative_to(directory)
    assert (
        kept,
        os.readlink(dest / "latest"),
        taken[-1].pruned,
        os.stat(linked).st_ino == os.stat(wheel).st_ino,
        check_tree(dest / "latest"),
    ) == (
        sorted([taken[1].path.name, taken[2].path.name, "latest"]),
        taken[2].path.name,
        (taken[0].path.name,),
        True,
        [],
    )


@pytest.mark.parametrize(
    ("where", "code", "message"),
    [("web/snapshots", 2, "would be served"), ("snapshots", 0, "")],
)
async def test_snapshot_command(
    upstream: FakeUpstream,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    where: str,
    code: int,
    message: str,
) -> None:
    directory = tmp_path / "mirror"
    await mirror(make_config(directory, upstream))
    config = offline_config(tmp_path / "m.toml", directory)
    capsys.readouterr()
    got = main(["-c", str(config), "--json", "snapshot", str(directory / where), "--keep", "1"])
    out, err = capsys.readouterr()
    made = json.loads(out)["snapshot"] if got == 0 else None
    assert (got, message in err, made is None or check_tree(Path(made)) == []) == (
        code,
        True,
        True,
    )
