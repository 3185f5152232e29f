"""The Storage protocol: where the mirror tree lives, written atomically, read back cheaply.

Every path is a `PurePosixPath` relative to the mirror directory (see `layout`). A write becomes
visible all at once or not at all: readers (nginx, rsync, another process) never see part of a file.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Protocol


class TempFile(Protocol):
    """A file being streamed in; invisible until `commit`."""

    async def write(self, chunk: bytes) -> None: ...

    async def reset(self) -> None:
        """Forget what was written so far (a retried download starts again)."""

    async def commit(self, path: PurePosixPath) -> None:
        """Make the written bytes visible at `path`, atomically."""

    async def abort(self) -> None:
        """Discard the written bytes; the temp file disappears."""


class Storage(Protocol):
    async def read_bytes(self, path: PurePosixPath) -> bytes | None:
        """The file's bytes, or None when it does not exist."""

    async def write_bytes(self, path: PurePosixPath, data: bytes) -> bool:
        """Atomically replace `path` with `data` unless it already holds exactly that.

        Returns True when the file changed (so unchanged pages keep their mtime).
        """

    async def open_temp(self) -> TempFile: ...

    async def size(self, path: PurePosixPath) -> int | None:
        """Size in bytes, or None when the file does not exist."""

    async def delete(self, path: PurePosixPath) -> bool:
        """Remove a file (and parents left empty below the tree's top folders)."""

    async def clean_temp(self) -> int:
        """Remove temp files left by an interrupted run; returns how many."""
