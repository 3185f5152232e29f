"""Storage and temp-file wrappers that pass every call through: subclass and override the few
calls a wrapper changes (the change log records writes; a test fills the disk)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import PurePosixPath

from bandersnatch_clone.storage import READ_CHUNK, FileStat, Storage, TempFile


class ForwardingTemp:
    """A `TempFile` that hands every call to `inner`."""

    def __init__(self, inner: TempFile) -> None:
        self.inner = inner

    async def write(self, chunk: bytes) -> None:
        await self.inner.write(chunk)

    async def reset(self) -> None:
        await self.inner.reset()

    async def commit(self, path: PurePosixPath) -> None:
        await self.inner.commit(path)

    async def abort(self) -> None:
        await self.inner.abort()


class ForwardingStorage:
    """A `Storage` that hands every call to `inner`; a method added to the protocol is added
    here once, not to each wrapper."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    async def read_bytes(self, path: PurePosixPath) -> bytes | None:
        return await self.inner.read_bytes(path)

    async def write_bytes(self, path: PurePosixPath, data: bytes) -> bool:
        return await self.inner.write_bytes(path, data)

    async def write_many(self, items: Sequence[tuple[PurePosixPath, bytes]]) -> list[bool]:
        return await self.inner.write_many(items)

    async def open_temp(
        self, path: PurePosixPath | None = None, *, sha256: str | None = None
    ) -> TempFile:
        return await self.inner.open_temp(path, sha256=sha256)

    async def size(self, path: PurePosixPath) -> int | None:
        return await self.inner.size(path)

    async def sizes(self, paths: Sequence[PurePosixPath]) -> list[int | None]:
        return await self.inner.sizes(paths)

    async def sha256(self, path: PurePosixPath) -> str | None:
        return await self.inner.sha256(path)

    async def stat(self, path: PurePosixPath) -> FileStat | None:
        return await self.inner.stat(path)

    def iterate(self, top: PurePosixPath) -> AsyncIterator[tuple[PurePosixPath, int]]:
        return self.inner.iterate(top)

    def read_chunks(
        self,
        path: PurePosixPath,
        chunk_size: int = READ_CHUNK,
        *,
        start: int = 0,
        end: int | None = None,
    ) -> AsyncGenerator[bytes, None]:
        return self.inner.read_chunks(path, chunk_size, start=start, end=end)

    async def delete(self, path: PurePosixPath) -> bool:
        return await self.inner.delete(path)

    async def delete_many(self, paths: Iterable[PurePosixPath]) -> None:
        await self.inner.delete_many(paths)

    async def clean_temp(self) -> int:
        return await self.inner.clean_temp()

    def lock(self) -> AbstractAsyncContextManager[object]:
        return self.inner.lock()
