"""A full disk: the run stops with a clear "no space left on device", the tree stays consistent,
and once there is room again the next run ends with the tree a run on a roomy disk writes."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from bandersnatch_clone.errors import StorageError
from bandersnatch_clone.mirror import engine_settings, make_session, make_upstream, plan_run
from bandersnatch_clone.state import Journal, Ledger, LedgerEntry
from bandersnatch_clone.storage import TempFile
from bandersnatch_clone.storage.filesystem import FilesystemStorage
from bandersnatch_clone.storage.forwarding import ForwardingStorage, ForwardingTemp
from bandersnatch_clone.sync import Engine
from tests.fake_upstream import FakeIndex, FakeUpstream
from tests.mirror_helpers import FAST_RETRY, make_config, mirror, write_config
from tests.test_faults import stray_files, upstream_files
from tests.treecheck import check_tree, tree_snapshot

CLI = [sys.executable, "-m", "bandersnatch_clone.cli"]
KiB, MiB = 1024, 1024 * 1024
NO_SPACE = "no space left on device"


class TinyFs:
    """A size-limited tmpfs mounted for one test."""

    def __init__(self, mountpoint: Path) -> None:
        self.mountpoint = mountpoint

    def resize(self, size: str) -> None:
        subprocess.run(
            ["mount", "-o", f"remount,size={size}", str(self.mountpoint)],
            check=True,
            capture_output=True,
        )

    def fill(self, name: str = "filler") -> Path:
        """Write a file that takes every free byte."""
        path = self.mountpoint / name
        block = b"\0" * (4 * KiB)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            while True:
                os.write(fd, block)  # unbuffered: the error comes here, not at close
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)
        return path


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[TinyFs]:
    mountpoint = tmp_path / "fs"
    mountpoint.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield TinyFs(mountpoint)
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def heavy_index() -> FakeIndex:
    """About 4 MiB of files: far more than the tiny file system holds."""
    index = FakeIndex.generate(30, files_per_project=2, file_size=64 * KiB)
    index.add_small_projects()
    return index


def _sync(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "-c", str(config), "mirror"], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("make_room", ["remount bigger", "remove the filler"])
def test_a_full_disk_stops_the_run_cleanly_and_the_next_run_heals(
    tiny_fs: TinyFs, tmp_path: Path, make_room: str
) -> None:
    index = heavy_index()
    known = upstream_files(index)
    filler = None
    if make_room == "remove the filler":
        tiny_fs.resize("8m")
        filler = tiny_fs.fill()
        filler.unlink()
        filler = tiny_fs.fill()
        # Leave room for a few files only.
        os.truncate(filler, filler.stat().st_size - 768 * KiB)
    directory = tiny_fs.mountpoint / "mirror"
    with FakeUpstream(index) as upstream:
        config = write_config(tmp_path / "m.toml", directory, upstream)
        full = [_sync(config), _sync(config)]  # the second one resumes, on a disk still full
        problems = check_tree(directory) + stray_files(directory, known)
        if filler is None:
            tiny_fs.resize("32m")
        else:
            filler.unlink()
        healed = _sync(config)
        reference = tmp_path / "reference"
        assert asyncio.run(mirror(make_config(reference, upstream))).exit_code == 0
    assert [(r.returncode, NO_SPACE in r.stderr.lower()) for r in full] == [(1, True)] * 2
    assert "Traceback" not in full[0].stderr + full[1].stderr
    assert problems == []
    assert healed.returncode == 0, healed.stderr
    assert (check_tree(directory), tree_snapshot(directory)) == ([], tree_snapshot(reference))


def test_a_full_disk_at_a_journal_line_is_a_storage_error(tiny_fs: TinyFs) -> None:
    journal = Journal(tiny_fs.mountpoint)
    journal.begin(100, 1000)
    tiny_fs.fill()
    try:
        with pytest.raises(StorageError, match=NO_SPACE):
            _journal_many(journal, 1000)  # far more than a block: the journal must grow
    finally:
        journal.close()


def _journal_many(journal: Journal, lines: int) -> None:
    entry = LedgerEntry(1, 2, 3, "Some_Display_Name")
    for i in range(lines):
        journal.done(f"project-with-a-long-name-{i:04d}", entry)


# -- without mount privileges: the same fault injected at the storage's write calls ---------


class FullDisk(ForwardingStorage):
    """A `FilesystemStorage` whose disk fills up after ``budget`` more bytes."""

    def __init__(self, inner: FilesystemStorage, budget: int) -> None:
        super().__init__(inner)
        self.budget = budget

    def spend(self, path: str, n: int) -> None:
        self.budget -= n
        if self.budget < 0:
            raise StorageError(path, NO_SPACE)

    async def write_bytes(self, path: PurePosixPath, data: bytes) -> bool:
        self.spend(str(path), len(data))
        return await self.inner.write_bytes(path, data)

    async def open_temp(
        self, path: PurePosixPath | None = None, *, sha256: str | None = None
    ) -> FullDiskTemp:
        return FullDiskTemp(self, await self.inner.open_temp(path, sha256=sha256))


class FullDiskTemp(ForwardingTemp):
    def __init__(self, disk: FullDisk, inner: TempFile) -> None:
        super().__init__(inner)
        self.disk = disk

    async def write(self, chunk: bytes) -> None:
        self.disk.spend(".tmp/part", len(chunk))
        await self.inner.write(chunk)


async def test_a_storage_that_fills_up_aborts_the_engine_and_the_next_run_heals(
    tmp_path: Path,
) -> None:
    index = heavy_index()
    known = upstream_files(index)
    directory = tmp_path / "mirror"
    directory.mkdir()
    with FakeUpstream(index) as upstream:
        config = make_config(directory, upstream)
        storage = FullDisk(FilesystemStorage(directory), budget=600 * KiB)
        journal = Journal(directory)
        async with make_session(config) as session:
            client = make_upstream(config, session, FAST_RETRY)
            plan = await plan_run(config, client, Ledger(), 0)
            journal.begin(plan.target_serial, len(plan.fetch))
            engine = Engine(engine_settings(config), storage, client, Ledger(), journal)
            result = await engine.execute(plan)
            journal.close()
        problems = check_tree(directory) + stray_files(directory, known)
        healed = await mirror(config)
        reference = tmp_path / "reference"
        await mirror(make_config(reference, upstream))
    assert NO_SPACE in (result.aborted or "")
    assert len(result.synced) < len(plan.fetch)
    assert problems == []
    assert (healed.exit_code, tree_snapshot(directory)) == (0, tree_snapshot(reference))
