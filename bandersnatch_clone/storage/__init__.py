"""The Storage protocol: where the mirror tree lives, written atomically, read back cheaply.

Every path is a `PurePosixPath` relative to the mirror directory (see `layout`). A write becomes
visible all at once or not at all: readers (nginx, rsync, another process) never see part of a file.

Backends: `filesystem` (the default: the mirror directory itself) and `s3` (an S3-compatible
object store; `pip install 'bandersnatch-clone[s3]'`), found through the entry-point group
``bandersnatch_clone.storage.v1`` (see `storage.loader`). The mirror's state (status, ledger,
journal, lock) always stays in the local directory; a backend holds the tree under ``web/`` and a
copy of ``status`` and ``generation``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol

#: Chunk size of `Storage.read_chunks` unless the caller asks for another.
READ_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileStat:
    """What `Storage.stat` knows of a file without reading it."""

    size: int
    #: The sha256 the backend recorded for the file (an object store's metadata); None when it
    #: keeps none, or none was recorded: only hashing the bytes tells.
    sha256: str | None = None


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

        Returns True when the file changed (so unchanged pages keep their mtime). A backend that
        stores a media type with each object takes it from `layout.content_type`.
        """

    async def open_temp(
        self, path: PurePosixPath | None = None, *, sha256: str | None = None
    ) -> TempFile:
        """A temp file for streaming a body in. ``path`` and ``sha256``, when the caller knows
        them, are where it will be committed and the digest of the bytes it writes (checked by
        the caller): an object store uploads straight to the final key, invisible until
        complete, and records the digest so that `sha256` answers without a download."""

    async def write_many(self, items: Sequence[tuple[PurePosixPath, bytes]]) -> list[bool]:
        """`write_bytes` for several files (a project's pages), whether each changed. A local
        tree writes them in order in one thread hop, an object store concurrently: for pages
        of a few KiB the hop, not the bytes, is the cost."""

    async def size(self, path: PurePosixPath) -> int | None:
        """Size in bytes, or None when the file does not exist."""

    async def sizes(self, paths: Sequence[PurePosixPath]) -> list[int | None]:
        """`size` of several files (every file a project links to) in one look where the
        backend can: one thread hop for a local tree, concurrent HEADs for an object store."""

    async def sha256(self, path: PurePosixPath) -> str | None:
        """The sha256 recorded for the file when the backend keeps one (an object store's
        metadata: a HEAD, not a download); None means "unknown: hash the bytes"."""

    async def stat(self, path: PurePosixPath) -> FileStat | None:
        """Size and recorded sha256 in one look (one HEAD on an object store), or None when
        the file does not exist."""

    def iterate(self, top: PurePosixPath) -> AsyncIterator[tuple[PurePosixPath, int]]:
        """(path, size) of every file below the folder `top`, in no particular order."""

    def read_chunks(
        self,
        path: PurePosixPath,
        chunk_size: int = READ_CHUNK,
        *,
        start: int = 0,
        end: int | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """The file's bytes from offset `start` up to `end` (exclusive; None: to the end),
        streamed (never the whole file in memory; an object store asks for just that range);
        `MissingFile` when it does not exist. A generator left early should be closed
        (``aclose``), which releases the object store's connection."""

    async def delete(self, path: PurePosixPath) -> bool:
        """Remove a file (and parents left empty below the tree's top folders); True when it
        existed."""

    async def delete_many(self, paths: Iterable[PurePosixPath]) -> None:
        """Remove many files at once (an object store: batches of 1000 per request); paths
        that do not exist are no error."""

    async def clean_temp(self) -> int:
        """Remove temp files (unfinished uploads) left by an interrupted run; returns how many."""

    def lock(self) -> AbstractAsyncContextManager[object]:
        """Hold the tree for one writer, for the duration of the block (`LockedError` when
        another holds it). The filesystem's tree shares the state directory's `MirrorLock`;
        an object store needs its own, since several hosts may reach one bucket."""
