"""changes: the log of what each run wrote or deleted (what `export` carries), and the diff file."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path, PurePosixPath

import pytest

from bandersnatch_clone.changes import (
    PENDING,
    changed_since,
    changes_dir,
    record_paths,
    records,
    seal,
)
from bandersnatch_clone.convert import convert_bandersnatch_config
from bandersnatch_clone.errors import BundleError
from bandersnatch_clone.state import read_status
from bandersnatch_clone.storage.filesystem import FilesystemStorage, FilesystemTemp
from tests.fake_index import FakeIndex
from tests.fake_upstream import FakeUpstream
from tests.mirror_helpers import make_config, mirror
from tests.treecheck import tree_snapshot


def _logged(directory: Path) -> set[str]:
    """Every path the change log names: pending and every sealed record."""
    folder = changes_dir(directory)
    if not folder.is_dir():
        return set()
    return {
        line
        for f in folder.iterdir()
        if f.name == PENDING or re.fullmatch(r"\d+-\d+", f.name)
        for line in f.read_text().splitlines()
    }


def _changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """Tree paths created, changed or deleted between two `tree_snapshot`s."""
    keys = (before.keys() | after.keys()) - {"status"}
    return {k for k in keys if before.get(k) != after.get(k)}


def _mutate(index: FakeIndex) -> None:
    index.touch(["alpha"])
    sdist = next(f.filename for _, f in index.project("beta").files() if f.filename.endswith("gz"))
    index.remove_file("beta", sdist)
    index.remove_project("gamma")
    index.add_project("newproj", ["1.0"])


async def test_every_write_and_delete_of_a_sync_is_logged_before_it_happens(
    upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A kill -9 right after any write must not lose it from the log: so at the moment each
    # write, rename or delete reaches the disk, the log already names its path.
    directory = tmp_path / "mirror"
    seen: list[tuple[str, str, bool]] = []

    def witness(kind: str, path: PurePosixPath) -> None:
        seen.append((kind, path.as_posix(), path.as_posix() in _logged(directory)))

    write_bytes, delete, commit = (
        FilesystemStorage.write_bytes,
        FilesystemStorage.delete,
        FilesystemTemp.commit,
    )

    async def spy_write(self: FilesystemStorage, path: PurePosixPath, data: bytes) -> bool:
        witness("write", path)
        return await write_bytes(self, path, data)

    async def spy_delete(self: FilesystemStorage, path: PurePosixPath) -> bool:
        witness("delete", path)
        return await delete(self, path)

    async def spy_commit(self: FilesystemTemp, path: PurePosixPath) -> None:
        witness("commit", path)
        await commit(self, path)

    monkeypatch.setattr(FilesystemStorage, "write_bytes", spy_write)
    monkeypatch.setattr(FilesystemStorage, "delete", spy_delete)
    monkeypatch.setattr(FilesystemTemp, "commit", spy_commit)
    config = make_config(directory, upstream, json=True)
    await mirror(config)
    _mutate(upstream.index)
    await mirror(config)
    kinds = {kind for kind, _, _ in seen}
    unlogged = [(kind, path) for kind, path, logged in seen if not logged]
    assert (kinds, unlogged) == ({"write", "delete", "commit"}, [])


async def test_each_completed_run_seals_what_it_changed_under_its_serials(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    config = make_config(directory, upstream, json=True)
    await mirror(config)
    s1, before = read_status(directory), tree_snapshot(directory)
    _mutate(upstream.index)
    await mirror(config)
    s2, after = read_status(directory), tree_snapshot(directory)
    await mirror(config)  # nothing new upstream: no record, nothing pending
    found = [(r.start, r.end) for r in records(directory)]
    second = set(records(directory)[1].path.read_text().splitlines())
    assert (
        found,
        _changed(before, after) - second,
        (changes_dir(directory) / PENDING).exists(),
    ) == (
        [(0, s1), (s1, s2)],
        set(),
        False,
    )


async def test_a_failed_run_keeps_its_changes_pending_for_the_run_that_completes(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    config = make_config(directory, upstream)
    await mirror(config)
    s1, before = read_status(directory), tree_snapshot(directory)
    upstream.index.touch(["alpha", "beta"])
    upstream.fail("/simple/beta/", times=100)
    failed = await mirror(config)
    written_by_failed_run = _changed(before, tree_snapshot(directory))
    pending = set((changes_dir(directory) / PENDING).read_text().splitlines())
    upstream.clear_faults()
    await mirror(config)
    s3 = read_status(directory)
    last = records(directory)[-1]
    assert (
        failed.exit_code,
        written_by_failed_run <= pending,
        (last.start, last.end),
        written_by_failed_run <= set(last.path.read_text().splitlines()),
    ) == (1, True, (s1, s3), True)


def test_records_that_do_not_reach_back_far_enough_are_refused(tmp_path: Path) -> None:
    record_paths(tmp_path, [PurePosixPath("web/simple/a/index.html")])
    seal(tmp_path, 10, 20)
    record_paths(tmp_path, [PurePosixPath("web/simple/b/index.html")])
    seal(tmp_path, 20, 30)
    since_ten = changed_since(tmp_path, 10, 30)
    with pytest.raises(BundleError, match=r"start at serial 10.*--since 0"):
        changed_since(tmp_path, 5, 30)
    assert since_ten == {
        PurePosixPath("web/simple/a/index.html"),
        PurePosixPath("web/simple/b/index.html"),
    }


def test_a_gap_inside_the_records_is_refused(tmp_path: Path) -> None:
    seal(tmp_path, 10, 20)
    seal(tmp_path, 25, 30)
    with pytest.raises(BundleError, match="nothing says what changed"):
        changed_since(tmp_path, 10, 30)


def test_a_crash_between_the_seal_and_the_status_loses_nothing(tmp_path: Path) -> None:
    # Sealed 10-20, killed before status said 20; the next run starts from 10 again and seals
    # 10-25. Both records start at 10: an export from 10 carries the union.
    record_paths(tmp_path, [PurePosixPath("web/simple/a/index.html")])
    seal(tmp_path, 10, 20)
    record_paths(tmp_path, [PurePosixPath("web/simple/b/index.html")])
    seal(tmp_path, 10, 25)
    assert changed_since(tmp_path, 10, 25) == {
        PurePosixPath("web/simple/a/index.html"),
        PurePosixPath("web/simple/b/index.html"),
    }


# -- the diff file --------------------------------------------------------------------------------


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


async def test_diff_file_lists_the_absolute_paths_each_run_created_or_changed(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    diff = tmp_path / "diffs" / "mirrored-files"
    config = make_config(directory, upstream, json=True, diff_file=str(diff))
    await mirror(config)
    first, before = _lines(diff), tree_snapshot(directory)
    _mutate(upstream.index)
    await mirror(config)
    second, after = _lines(diff), tree_snapshot(directory)
    await mirror(config)
    third = _lines(diff)
    # The first run created everything; the second, what differs (not what it deleted); the
    # third, nothing: an empty file, as bandersnatch leaves.
    assert (set(first), set(second), third) == (
        {str(directory / p) for p in before if p != "status"},
        {str(directory / p) for p in _changed(before, after) if p in after},
        [],
    )


async def test_diff_append_epoch_gives_each_run_its_own_file(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    diff = tmp_path / "mirrored-files"
    config = make_config(directory, upstream, diff_file=str(diff), diff_append_epoch=True)
    start = int(time.time())
    await mirror(config)
    end = int(time.time())
    (written,) = [tmp_path / n for n in os.listdir(tmp_path) if n.startswith("mirrored-files-")]
    epoch = int(written.name.rsplit("-", 1)[1])
    assert (start <= epoch <= end, len(_lines(written)) > 0) == (True, True)


def test_bandersnatch_diff_file_settings_carry_over() -> None:
    text = "[mirror]\ndirectory = /srv/pypi\ndiff-file = /srv/pypi/mirrored-files\n"
    text += "diff-append-epoch = true\n"
    toml_text, warnings = convert_bandersnatch_config(text, "bandersnatch.conf")
    assert (
        'diff_file = "/srv/pypi/mirrored-files"' in toml_text,
        "diff_append_epoch = true" in toml_text,
        [w for w in warnings if "diff" in w],
    ) == (True, True, [])
