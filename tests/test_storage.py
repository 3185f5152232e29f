"""Filesystem storage: atomic writes, compare-before-replace, temp files never in web/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from bandersnatch_clone.errors import StorageError
from bandersnatch_clone.storage.filesystem import FilesystemStorage

PAGE = PurePosixPath("web/simple/foo/index.html")


async def test_write_bytes_skips_identical_content(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path)
    first = await storage.write_bytes(PAGE, b"one")
    os.utime(tmp_path / PAGE, (1, 1))
    second = await storage.write_bytes(PAGE, b"one")
    assert (first, second, (tmp_path / PAGE).stat().st_mtime) == (True, False, 1)


async def test_temp_file_invisible_until_commit(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path)
    target = PurePosixPath("web/packages/ab/cd/f.whl")
    temp = await storage.open_temp()
    await temp.write(b"partial")
    web_files = (
        [p for p in (tmp_path / "web").rglob("*") if p.is_file()]
        if (tmp_path / "web").exists()
        else []
    )
    await temp.reset()
    await temp.write(b"complete")
    await temp.commit(target)
    assert (web_files, (tmp_path / target).read_bytes(), list((tmp_path / ".tmp").iterdir())) == (
        [],
        b"complete",
        [],
    )


@pytest.mark.parametrize("size", [1, 3 << 20])
async def test_abort_leaves_nothing(tmp_path: Path, size: int) -> None:
    storage = FilesystemStorage(tmp_path)
    temp = await storage.open_temp()
    await temp.write(b"x" * size)
    await temp.abort()
    assert list((tmp_path / ".tmp").glob("*")) == []


async def test_delete_prunes_empty_folders_but_keeps_the_skeleton(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path)
    path = PurePosixPath("web/packages/ab/cd/ef/f.whl")
    await storage.write_bytes(path, b"x")
    removed = await storage.delete(path)
    assert (
        removed,
        (tmp_path / "web/packages").is_dir(),
        (tmp_path / "web/packages/ab").exists(),
    ) == (
        True,
        True,
        False,
    )


async def test_clean_temp_removes_leftovers(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path)
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "part-1").write_bytes(b"x")
    assert (await storage.clean_temp(), (tmp_path / ".tmp").exists()) == (1, False)


@pytest.mark.parametrize("path", ["../outside", "/etc/passwd", "web/../../x"])
async def test_refuses_paths_outside_the_directory(tmp_path: Path, path: str) -> None:
    storage = FilesystemStorage(tmp_path / "m")
    with pytest.raises(StorageError):
        await storage.write_bytes(PurePosixPath(path), b"x")


def test_placed_files_are_world_readable_whatever_the_umask(tmp_path: Path) -> None:
    # nginx runs as another user: a mirror run from a cron job with umask 077 must still
    # leave files it can read.
    script = (
        "import asyncio, os, sys\n"
        "from pathlib import Path, PurePosixPath\n"
        "from bandersnatch_clone.storage.filesystem import FilesystemStorage\n"
        "async def main():\n"
        "    s = FilesystemStorage(Path(sys.argv[1]))\n"
        "    await s.write_bytes(PurePosixPath('web/simple/a/index.html'), b'page')\n"
        "    t = await s.open_temp()\n"
        "    await t.write(b'x' * (3 << 20))\n"
        "    await t.commit(PurePosixPath('web/packages/ab/cd/ef/a.whl'))\n"
        "asyncio.run(main())\n"
    )
    subprocess.run(
        [sys.executable, "-c", f"import os; os.umask(0o077); exec({script!r})", str(tmp_path)],
        check=True,
    )
    modes = {
        p.name: oct(p.stat().st_mode & 0o777)
        for p in (tmp_path / "web/simple/a/index.html", tmp_path / "web/packages/ab/cd/ef/a.whl")
    }
    assert modes == {"index.html": "0o644", "a.whl": "0o644"}


async def test_a_file_streamed_in_many_small_chunks_is_whole(tmp_path: Path) -> None:
    # Thousands of network reads of a few hundred bytes go to disk in batches: none lost,
    # none reordered.
    storage = FilesystemStorage(tmp_path)
    chunks = [bytes([i % 251]) * (300 + i % 7) for i in range(6000)]
    temp = await storage.open_temp()
    for chunk in chunks:
        await temp.write(chunk)
    await temp.commit(PurePosixPath("web/packages/ab/cd/ef/big.whl"))
    assert (tmp_path / "web/packages/ab/cd/ef/big.whl").read_bytes() == b"".join(chunks)
