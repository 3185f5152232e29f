"""Filesystem storage: temp files in ``<directory>/.tmp`` renamed into place, never partial."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from bandersnatch_clone.errors import ConfigError, MissingFile, StorageError
from bandersnatch_clone.storage import READ_CHUNK, FileStat

if TYPE_CHECKING:
    from bandersnatch_clone.config import Config

TMP_DIR = ".tmp"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Read once at import (reading it means setting it; threads must not race that).
_UMASK = _read_umask()
#: Bytes held in memory before the temp file is created: one chunk as `Upstream` reads them.
#: A small file (most of PyPI's, every ``.metadata``) still costs one thread hop in all; a
#: big one starts going to disk with its first chunk. Holding a MiB per file, 48 files at
#: once, made every download 4% slower (cache and allocator churn), measured on (a).
_FLUSH_AT = 256 * 1024
_IOV_MAX = 512
# Directories that are part of the tree's skeleton: emptied subfolders are pruned up to these.
_KEEP = {PurePosixPath("web"), PurePosixPath("web/simple"), PurePosixPath("web/packages")}
#: Directory entries `iterate` hands over per thread hop.
_BATCH = 1000


def _holds(target: Path, data: bytes) -> bool:
    """Whether the file `target` holds exactly `data`: compared a block at a time, so a page that
    differs near its start (a root page's serial) costs one block, not the whole file."""
    with open(target, "rb", buffering=0) as f:
        if os.fstat(f.fileno()).st_size != len(data):
            return False
        at = 0
        while block := f.read(_COMPARE_BLOCK):
            if not data.startswith(block, at):  # a memcmp, no copy
                return False
            at += len(block)
        return at == len(data)


#: Pages are compared with what is on disk this much at a time.
_COMPARE_BLOCK = 1 << 20


def _storage_error(path: Path, exc: OSError) -> StorageError:
    return StorageError.from_os(path, exc)


class FilesystemTemp:
    """A temp file under ``.tmp`` on the same file system as the tree, so rename is atomic.

    Created lazily: the first 256 KiB stay in memory, so a small file (most of PyPI's, every
    ``.metadata``) costs one thread hop in all (create, write, rename) instead of four; on a
    slow link with hundreds of files in flight the hops, not the bytes, were the CPU.

    Once the file exists, later chunks are written as they come, from the event loop: a
    write to an open file lands in the page cache (on NFS too, until close), which costs
    less than the thread hop around it, and keeps neither the chunk nor a MiB of them in
    memory. Creating the file, and the commit (close, which NFS makes wait for the server,
    and rename), stay on a thread: those are the calls that wait on the file system.
    """

    def __init__(self, storage: FilesystemStorage) -> None:
        self._storage = storage
        self._fd: int | None = None
        self._path: Path | None = None
        #: Chunks not yet written (kept as received: no copy until the kernel takes them).
        self._chunks: list[bytes] = []
        self._pending = 0

    async def write(self, chunk: bytes) -> None:
        if self._fd is not None:
            self._write((chunk,))
            return
        self._chunks.append(chunk)
        self._pending += len(chunk)
        if self._pending >= _FLUSH_AT:
            await asyncio.to_thread(self._write, self._take())

    def _take(self) -> list[bytes]:
        chunks, self._chunks, self._pending = self._chunks, [], 0
        return chunks

    def _write(self, chunks: Sequence[bytes]) -> None:
        if self._fd is None:
            self._fd, self._path = self._storage._mkstemp()
        try:
            views = [memoryview(c) for c in chunks if c]
            while views:
                # One writev per batch (at most IOV_MAX buffers), resumed after a short write.
                n = os.writev(self._fd, views[:_IOV_MAX])
                while views and n >= len(views[0]):
                    n -= len(views.pop(0))
                if n:
                    views[0] = views[0][n:]
        except OSError as e:
            raise _storage_error(self._path or self._storage.tmp, e) from e

    async def reset(self) -> None:
        self._take()
        if self._fd is not None:
            await asyncio.to_thread(self._reset)

    def _reset(self) -> None:
        assert self._fd is not None
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.ftruncate(self._fd, 0)

    async def commit(self, path: PurePosixPath) -> None:
        await asyncio.to_thread(self._commit, path, self._take())

    def _commit(self, path: PurePosixPath, chunks: list[bytes]) -> None:
        target = self._storage.resolve(path)
        try:
            if chunks or self._fd is None:
                self._write(chunks)
            assert self._fd is not None
            assert self._path is not None
            os.close(self._fd)
            self._fd = None
            try:
                os.replace(self._path, target)
            except FileNotFoundError:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self._path, target)
        except BaseException as e:
            self._discard()
            if isinstance(e, OSError):
                raise _storage_error(target, e) from e
            raise

    async def abort(self) -> None:
        self._take()
        if self._path is not None:
            await asyncio.to_thread(self._discard)

    def _discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._path is not None:
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
        """A new, empty temp file, readable by all once placed (a web server reads the tree).

        Like `tempfile.mkstemp` (O_EXCL, a random name) without its per-name ``getpid`` and the
        ``chmod`` a 0600 file needs later: at thousands of small files a second, syscalls are
        the cost.
        """
        while True:
            path = self.tmp / f"part-{secrets.token_hex(8)}"
            try:
                try:
                    fd = os.open(path, _CREATE, 0o644)
                except FileNotFoundError:
                    self.tmp.mkdir(parents=True, exist_ok=True)
                    fd = os.open(path, _CREATE, 0o644)
            except FileExistsError:
                continue
            except OSError as e:
                raise _storage_error(self.tmp, e) from e
            if _UMASK & 0o644:
                os.fchmod(fd, 0o644)  # a umask that would hide the file from the server
            return fd, path

    async def open_temp(
        self, path: PurePosixPath | None = None, *, sha256: str | None = None
    ) -> FilesystemTemp:
        # Where it goes and its digest do not matter here: a rename places it, and the file
        # system records no digest (`sha256` answers None: hash the file).
        return FilesystemTemp(self)

    def lock(self) -> contextlib.nullcontext[None]:
        """The tree is in the state directory, which `state.MirrorLock` already holds."""
        return contextlib.nullcontext()

    async def sha256(self, path: PurePosixPath) -> str | None:
        return None

    async def iterate(self, top: PurePosixPath) -> AsyncIterator[tuple[PurePosixPath, int]]:
        walk = self._walk(self.resolve(top))
        while batch := await asyncio.to_thread(_take, walk, _BATCH):
            for item in batch:
                yield item

    def _walk(self, top: Path) -> Iterator[tuple[PurePosixPath, int]]:
        """(path, size) of every regular file below `top`; symlinks are not followed."""
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue  # pruned while we walk, or no such folder
            except OSError as e:
                raise _storage_error(folder, e) from e
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    try:
                        size = entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue
                    rel = Path(entry.path).relative_to(self.root)
                    yield PurePosixPath(rel.as_posix()), size

    async def read_chunks(
        self,
        path: PurePosixPath,
        chunk_size: int = READ_CHUNK,
        *,
        start: int = 0,
        end: int | None = None,
    ) -> AsyncGenerator[bytes, None]:
        target = self.resolve(path)
        try:
            f = await asyncio.to_thread(target.open, "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise MissingFile(str(path)) from None
        except OSError as e:
            raise _storage_error(target, e) from e
        try:
            if start:
                await asyncio.to_thread(f.seek, start)
            left = None if end is None else max(0, end - start)
            while left != 0:
                want = chunk_size if left is None else min(chunk_size, left)
                chunk = await asyncio.to_thread(f.read, want)
                if not chunk:
                    break
                if left is not None:
                    left -= len(chunk)
                yield chunk
        except OSError as e:
            raise _storage_error(target, e) from e
        finally:
            await asyncio.to_thread(f.close)

    async def delete_many(self, paths: Iterable[PurePosixPath]) -> None:
        batch = list(paths)
        await asyncio.to_thread(lambda: [self.delete_sync(p) for p in batch])

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

    async def write_many(self, items: Sequence[tuple[PurePosixPath, bytes]]) -> list[bool]:
        batch = list(items)
        return await asyncio.to_thread(lambda: [self.write_bytes_sync(p, d) for p, d in batch])

    def write_bytes_sync(self, path: PurePosixPath, data: bytes) -> bool:
        """Compare, then temp + rename. Blocking: call from a thread."""
        target = self.resolve(path)
        try:
            if _holds(target, data):
                return False
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as e:
            raise _storage_error(target, e) from e
        fd, tmp = self._mkstemp()
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                os.replace(tmp, target)
            except FileNotFoundError:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise _storage_error(target, e) from e
        return True

    async def size(self, path: PurePosixPath) -> int | None:
        return await asyncio.to_thread(self._size, path)

    async def sizes(self, paths: Sequence[PurePosixPath]) -> list[int | None]:
        batch = list(paths)
        return await asyncio.to_thread(lambda: [self._size(p) for p in batch])

    async def stat(self, path: PurePosixPath) -> FileStat | None:
        size = await asyncio.to_thread(self._size, path)
        return None if size is None else FileStat(size)

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


def _take(items: Iterator[tuple[PurePosixPath, int]], n: int) -> list[tuple[PurePosixPath, int]]:
    """Up to `n` items of an iterator (a blocking walk, advanced from a worker thread)."""
    return [item for _, item in zip(range(n), items, strict=False)]


def backend(config: Config) -> contextlib.nullcontext[FilesystemStorage]:
    """The ``filesystem`` entry point: the tree in the mirror directory, next to the state."""
    for key in config.storage.options.get("filesystem", {}):
        raise ConfigError(
            str(config.path),
            f"storage.filesystem.{key}",
            "unknown key: the filesystem backend has no options (the tree goes in "
            "mirror.directory)",
        )
    return contextlib.nullcontext(FilesystemStorage(config.mirror.directory))
