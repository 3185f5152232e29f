"""Filesystem storage: temp files in ``<directory>/.tmp`` renamed into place, never partial."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from bandersnatch_clone.errors import StorageError

TMP_DIR = ".tmp"
_FLUSH_AT = 1024 * 1024
# Directories that are part of the tree's skeleton: emptied subfolders are pruned up to these.
_KEEP = {PurePosixPath("web"), PurePosixPath("web/simple"), PurePosixPath("web/packages")}


def _storage_error(path: Path, exc: OSError) -> StorageError:
    return StorageError.from_os(path, exc)


class FilesystemTemp:
    """A temp file under ``.tmp`` on the same file system as the tree, so rename is atomic."""

    def __init__(self, storage: FilesystemStorage, fd: int, path: Path) -> None:
        self._storage = storage
        self._fd = fd
        self._path = path
        self._closed = False
        self._buffer = bytearray()

    async def write(self, chunk: bytes) -> None:
        # One thread hop per MiB, not per network read (a read returns what has arrived,
        # often a few KiB): the hops were a fifth of a big-file sync's CPU.
        self._buffer += chunk
        if len(self._buffer) >= _FLUSH_AT:
            data, self._buffer = bytes(self._buffer), bytearray()
            await asyncio.to_thread(self._write, data)

    async def _flush(self) -> None:
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            await asyncio.to_thread(self._write, data)

    def _write(self, chunk: bytes) -> None:
        try:
            view = memoryview(chunk)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as e:
            raise _storage_error(self._path, e) from e

    async def reset(self) -> None:
        self._buffer = bytearray()
        await asyncio.to_thread(self._reset)

    def _reset(self) -> None:
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.ftruncate(self._fd, 0)

    async def commit(self, path: PurePosixPath) -> None:
        try:
            await self._flush()
        except BaseException:
            await self.abort()
            raise
        await asyncio.to_thread(self._commit, path)

    def _commit(self, path: PurePosixPath) -> None:
        target = self._storage.resolve(path)
        try:
            os.close(self._fd)
            self._closed = True
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(self._path, 0o644)
            os.replace(self._path, target)
        except OSError as e:
            self._discard()
            raise _storage_error(target, e) from e

    async def abort(self) -> None:
        self._buffer = bytearray()
        await asyncio.to_thread(self._discard)

    def _discard(self) -> None:
        if not self._closed:
            os.close(self._fd)
            self._closed = True
        self._path.unlink(missing_ok=True)


class FilesystemStorage:
    """The default backend: a directory on a local (or NFS) file system."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / TMP_DIR

    def resolve(self, path: PurePosixPath) -> Path:
        """The real path of a tree path; refuses anything that is not plainly inside the root."""
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise StorageError(str(path), "path outside the mirror directory")
        return self.root.joinpath(*path.parts)

    def _mkstemp(self) -> tuple[int, Path]:
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.tmp, prefix="part-")
        except OSError as e:
            raise _storage_error(self.tmp, e) from e
        return fd, Path(name)

    async def open_temp(self) -> FilesystemTemp:
        fd, path = await asyncio.to_thread(self._mkstemp)
        return FilesystemTemp(self, fd, path)

    async def read_bytes(self, path: PurePosixPath) -> bytes | None:
        return await asyncio.to_thread(self.read_bytes_sync, path)

    def read_bytes_sync(self, path: PurePosixPath) -> bytes | None:
        try:
            return self.resolve(path).read_bytes()
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        except OSError as e:
            raise _storage_error(self.resolve(path), e) from e

    async def write_bytes(self, path: PurePosixPath, data: bytes) -> bool:
        return await asyncio.to_thread(self.write_bytes_sync, path, data)

    def write_bytes_sync(self, path: PurePosixPath, data: bytes) -> bool:
        """Compare, then temp + rename. Blocking: call from a thread."""
        target = self.resolve(path)
        try:
            if target.stat().st_size == len(data) and target.read_bytes() == data:
                return False
        except FileNotFoundError:
            pass
        except OSError as e:
            raise _storage_error(target, e) from e
        fd, tmp = self._mkstemp()
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise _storage_error(target, e) from e
        return True

    async def size(self, path: PurePosixPath) -> int | None:
        return await asyncio.to_thread(self._size, path)

    def _size(self, path: PurePosixPath) -> int | None:
        try:
            return self.resolve(path).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    async def delete(self, path: PurePosixPath) -> bool:
        return await asyncio.to_thread(self.delete_sync, path)

    def delete_sync(self, path: PurePosixPath) -> bool:
        target = self.resolve(path)
        try:
            target.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as e:
            raise _storage_error(target, e) from e
        parent = path.parent
        while parent.parts and parent not in _KEEP and len(parent.parts) > 1:
            try:
                self.resolve(parent).rmdir()
            except OSError:
                break
            parent = parent.parent
        return True

    async def clean_temp(self) -> int:
        return await asyncio.to_thread(self._clean_temp)

    def _clean_temp(self) -> int:
        if not self.tmp.is_dir():
            return 0
        count = sum(1 for _ in self.tmp.iterdir())
        shutil.rmtree(self.tmp, ignore_errors=True)
        return count
