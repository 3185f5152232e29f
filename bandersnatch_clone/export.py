"""`export`: a bundle of what changed between two completed serials, to carry across an air gap.

A delta export reads the change records (`changes`), never the whole tree: each path recorded
since the starting serial goes in with its current bytes if it exists, else in the list of
deletions. ``--since 0`` is a full export: a walk of ``web/``, O(tree) by nature. The mirror's lock
is held throughout, so the tree does not move underneath; every file is hashed for the manifest,
then streamed into the tar (never whole in memory) and hashed again on the way, so a file that
changed in between fails the export instead of shipping a lie.

The tree may be in an object store: it is then read through the storage (its listing, the
sha256 each object carries for the manifest, streamed GETs for the tar), while the change
records and state files stay in the local directory, as they do for a run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tarfile
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from humanfriendly import format_size

from bandersnatch_clone import __version__, layout
from bandersnatch_clone.bundle import (
    MANIFEST_DIGEST,
    MANIFEST_NAME,
    STATE_FILES,
    Entry,
    Manifest,
    apply_order,
    bundle_name,
    check_path,
)
from bandersnatch_clone.changes import changed_since, read_last_export, write_last_export
from bandersnatch_clone.config import Config
from bandersnatch_clone.errors import BundleError, MissingFile, StorageError, UsageError
from bandersnatch_clone.state import read_status
from bandersnatch_clone.storage import Storage
from bandersnatch_clone.storage.filesystem import FilesystemStorage
from bandersnatch_clone.storage.loader import held_tree

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
#: Most of a bundle's bytes are wheels and sdists, compressed already: level 1 packs the pages and
#: JSON nearly as well as level 9 does, at several times the speed.
_GZIP_LEVEL = 1
#: An object store: requests at once, and paths looked up per batch (bounded memory).
_STORE_WORKERS, _LOOKUP_BATCH = 16, 1000


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What `run_export` wrote; ``bundle`` is None when nothing changed since ``from_serial``."""

    bundle: Path | None
    from_serial: int
    to_serial: int
    files: int
    bytes: int
    deletions: int
    full: bool
    exit_code: int = 0

    def render_text(self) -> str:
        if self.bundle is None:
            return f"nothing changed since serial {self.from_serial}: no bundle written"
        kind = "full export" if self.full else "delta"
        return (
            f"{kind} {self.from_serial} -> {self.to_serial}: {self.files:,} files "
            f"({format_size(self.bytes)}), {self.deletions:,} deletions\nwrote {self.bundle}"
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "bundle": None if self.bundle is None else str(self.bundle),
                "from_serial": self.from_serial,
                "to_serial": self.to_serial,
                "full": self.full,
                "files": self.files,
                "bytes": self.bytes,
                "deletions": self.deletions,
                "exit_code": self.exit_code,
            },
            indent=2,
        )


def _walk_web(directory: Path) -> Iterator[PurePosixPath]:
    """Every regular file under web/, sorted (a full export)."""
    web = directory / layout.WEB
    for root, dirs, files in os.walk(web):
        dirs.sort()
        rel = PurePosixPath(layout.WEB, *Path(root).relative_to(web).parts)
        for name in sorted(files):
            if not os.path.islink(os.path.join(root, name)):
                yield rel / name


def _recorded_paths(directory: Path, since: int, now: int) -> list[PurePosixPath]:
    """The tree paths the change records name since serial `since`, sorted."""
    paths = []
    for path in sorted(changed_since(directory, since, now)):
        try:
            check_path(path.as_posix(), state_allowed=False)
        except BundleError:
            log.debug("change record line %r is not a tree path: skipped", str(path))
            continue
        paths.append(path)
    return paths


def _changed(
    directory: Path, since: int, now: int
) -> tuple[list[PurePosixPath], list[PurePosixPath]]:
    """(paths to carry, paths deleted) since serial `since`, from the change records."""
    carry: list[PurePosixPath] = []
    deleted: list[PurePosixPath] = []
    for path in _recorded_paths(directory, since, now):
        real = directory.joinpath(*path.parts)
        if real.is_file() and not real.is_symlink():
            carry.append(path)
        elif not real.exists():
            deleted.append(path)
    return carry, deleted


def _hash(directory: Path, path: PurePosixPath) -> Entry:
    digest = hashlib.sha256()
    real = directory.joinpath(*path.parts)
    try:
        with real.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as e:
        raise StorageError.from_os(real, e) from e
    return Entry(path, size, digest.hexdigest())


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


#: Opens an entry's bytes for the tar (from a worker thread): (reader, mtime).
Opener = Callable[[Entry], AbstractContextManager[tuple[_Readable, int]]]
_CHANGED = "changed while the bundle was written (or is corrupt: `verify` it); export again"


class _HashingReader:
    """A file object for `TarFile.addfile` that hashes what the tar reads."""

    def __init__(self, f: _Readable) -> None:
        self._f = f
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.digest.update(data)
        return data


def _write_bundle(opener: Opener, target: Path, manifest: Manifest, compress: bool) -> None:
    """The tar: manifest first, then every entry in the order an import applies them.
    Blocking (a worker thread)."""
    # Hidden, and not ending in .tar*: a script picking up bundle-*.tar* never takes a half one.
    partial = target.with_name(f".{target.name}.part")
    manifest_bytes = manifest.to_bytes()
    try:
        with partial.open("wb") as raw:
            with _open_tar(raw, compress) as tar:
                info = tarfile.TarInfo(MANIFEST_NAME)
                info.size, info.mode = len(manifest_bytes), 0o644
                info.mtime = int(datetime.now(UTC).timestamp())
                info.pax_headers = {MANIFEST_DIGEST: hashlib.sha256(manifest_bytes).hexdigest()}
                tar.addfile(info, _BytesReader(manifest_bytes))
                for entry in sorted(manifest.entries, key=lambda e: apply_order(e.path)):
                    _add(tar, opener, entry)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, target)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise StorageError.from_os(target, e) from e
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _open_tar(raw: BinaryIO, compress: bool) -> tarfile.TarFile:
    if compress:
        return tarfile.open(
            fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT, compresslevel=_GZIP_LEVEL
        )
    return tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT)


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)

    def read(self, n: int = -1) -> bytes:
        n = len(self._view) if n < 0 else n
        chunk, self._view = self._view[:n], self._view[n:]
        return bytes(chunk)


def _add(tar: tarfile.TarFile, opener: Opener, entry: Entry) -> None:
    with opener(entry) as (f, mtime):
        info = tarfile.TarInfo(entry.path.as_posix())
        info.size, info.mode, info.mtime = entry.size, 0o644, mtime
        reader = _HashingReader(f)
        tar.addfile(info, reader)
    if reader.digest.hexdigest() != entry.sha256:
        raise BundleError(entry.path.as_posix(), _CHANGED)


@contextmanager
def _open_local(directory: Path, entry: Entry) -> Iterator[tuple[_Readable, int]]:
    real = directory.joinpath(*entry.path.parts)
    with real.open("rb") as f:
        st = os.fstat(f.fileno())
        if st.st_size != entry.size:
            raise BundleError(str(real), _CHANGED)
        yield f, int(st.st_mtime)


class _StreamReader:
    """A blocking ``read(n)`` over a storage's chunk stream, for the tar's worker thread: each
    chunk is fetched on the event loop. Exactly `size` bytes, or `BundleError`."""

    def __init__(
        self, chunks: AsyncGenerator[bytes, None], loop: asyncio.AbstractEventLoop, entry: Entry
    ) -> None:
        self._chunks, self._loop, self._entry = chunks, loop, entry
        self._chunk, self._at, self._left = b"", 0, entry.size

    def _next(self) -> bytes:
        async def step() -> bytes:
            return await anext(self._chunks, b"")

        try:
            return asyncio.run_coroutine_threadsafe(step(), self._loop).result()
        except MissingFile:
            raise BundleError(self._entry.path.as_posix(), _CHANGED) from None

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        out = bytearray()
        while len(out) < n:
            if self._at == len(self._chunk):
                self._chunk, self._at = self._next(), 0
                if not self._chunk:
                    raise BundleError(self._entry.path.as_posix(), _CHANGED)
            take = min(n - len(out), len(self._chunk) - self._at)
            out += self._chunk[self._at : self._at + take]
            self._at += take
        self._left -= n
        return bytes(out)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._chunks.aclose(), self._loop).result()


def _store_opener(directory: Path, tree: Storage, loop: asyncio.AbstractEventLoop) -> Opener:
    """Entries of the tree streamed from the storage; the state files from the directory."""
    now = int(datetime.now(UTC).timestamp())

    @contextmanager
    def opener(entry: Entry) -> Iterator[tuple[_Readable, int]]:
        if entry.path.parts[0] != layout.WEB.name:
            with _open_local(directory, entry) as opened:
                yield opened
            return
        reader = _StreamReader(tree.read_chunks(entry.path), loop, entry)
        try:
            yield reader, now
        finally:
            reader.close()

    return opener


async def _store_entries(
    tree: Storage, paths: list[PurePosixPath], workers: int
) -> tuple[list[Entry], list[PurePosixPath]]:
    """(entries, paths not in the tree) of tree paths in an object store: the size and the
    sha256 recorded with each object (a HEAD), hashed from a download only where none is."""
    slots = asyncio.Semaphore(workers)

    async def one(path: PurePosixPath) -> Entry | None:
        async with slots:
            found = await tree.stat(path)
            if found is None:
                return None
            if found.sha256 is not None:
                return Entry(path, found.size, found.sha256)
            digest, size = hashlib.sha256(), 0
            async for chunk in tree.read_chunks(path):
                digest.update(chunk)
                size += len(chunk)
            return Entry(path, size, digest.hexdigest())

    entries: list[Entry] = []
    missing: list[PurePosixPath] = []
    for start in range(0, len(paths), _LOOKUP_BATCH):
        batch = paths[start : start + _LOOKUP_BATCH]
        for path, entry in zip(batch, await asyncio.gather(*map(one, batch)), strict=True):
            (missing.append(path) if entry is None else entries.append(entry))
    return entries, missing


async def run_export(
    config: Config,
    out: Path,
    *,
    since: int | None = None,
    since_last: bool = False,
    compress: bool = True,
    workers: int | None = None,
) -> ExportSummary:
    """`export --since SERIAL|--since-last OUT`: write the bundle from that serial to the
    mirror's current one. ``OUT`` is the bundle file, or a folder to name it in
    (``bundle-<from>-<to>.tar.gz``). Under the mirror's lock, and an object store's
    (`LockedError` while a run holds one).
    """
    directory = config.mirror.directory
    local = config.storage.backend == "filesystem"
    web = directory / layout.WEB if local else directory
    async with held_tree(config, web, "no web/ folder") as tree:
        return await _export(directory, tree, out, since, since_last, compress, workers)


async def _export(
    directory: Path,
    tree: Storage,
    out: Path,
    since: int | None,
    since_last: bool,
    compress: bool,
    workers: int | None,
) -> ExportSummary:
    status, start = await asyncio.to_thread(_serials, directory, since, since_last)
    full = start == 0
    local = isinstance(tree, FilesystemStorage) and tree.root == directory
    stored: list[Entry] = []  # tree files whose digest the store recorded (or we hashed)
    if local:
        carry, deleted = await asyncio.to_thread(_local_paths, directory, full, start, status)
    else:
        if full:
            paths = sorted([p async for p, _ in tree.iterate(layout.WEB)])
        else:
            paths = await asyncio.to_thread(_recorded_paths, directory, start, status)
        stored, gone = await _store_entries(tree, paths, workers or _STORE_WORKERS)
        carry, deleted = [], ([] if full else gone)
    if not full and start == status and not carry and not stored and not deleted:
        return ExportSummary(None, start, status, 0, 0, 0, full)
    # Local files (the tree's on the filesystem backend, the state files always) hashed here.
    hashed = await asyncio.to_thread(_hash_all, directory, carry, workers)
    entries = (*stored, *hashed)
    opener = (
        partial(_open_local, directory)
        if local
        else _store_opener(directory, tree, asyncio.get_running_loop())
    )
    manifest = Manifest(
        from_serial=start,
        to_serial=status,
        entries=entries,
        deletions=tuple(deleted),
        tool_version=__version__,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    target = out / bundle_name(start, status, compress) if await _is_dir(out) else out
    await asyncio.to_thread(_write_bundle, opener, target, manifest, compress)
    await asyncio.to_thread(write_last_export, directory, status)
    web = [e for e in entries if e.path.parts[0] == layout.WEB.name]
    log.info("exported serials %d..%d to %s", start, status, target)
    size = sum(e.size for e in web)
    return ExportSummary(target, start, status, len(web), size, len(deleted), full)


def _local_paths(
    directory: Path, full: bool, start: int, status: int
) -> tuple[list[PurePosixPath], list[PurePosixPath]]:
    """(paths to carry, paths deleted) of a tree in the mirror directory. Blocking."""
    if full:
        return list(_walk_web(directory)), []
    return _changed(directory, start, status)


def _hash_all(
    directory: Path, paths: list[PurePosixPath], workers: int | None
) -> tuple[Entry, ...]:
    """Entries of local files and of the state files there are, hashed on a pool of threads.
    Blocking."""
    paths = [*paths, *(PurePosixPath(n) for n in STATE_FILES if (directory / n).is_file())]
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        return tuple(pool.map(lambda p: _hash(directory, p), paths))


def _serials(directory: Path, since: int | None, since_last: bool) -> tuple[int, int]:
    """(the mirror's serial, the bundle's starting serial). Blocking."""
    if (directory / "todo").exists():
        raise BundleError(
            str(directory / "todo"),
            "an interrupted run waits to be resumed; run `mirror` to finish it, then export",
        )
    status = read_status(directory)
    return status, _starting_serial(directory, since, since_last, status)


async def _is_dir(path: Path) -> bool:
    return await asyncio.to_thread(path.is_dir)


def _starting_serial(directory: Path, since: int | None, since_last: bool, status: int) -> int:
    if since_last:
        last = read_last_export(directory)
        if last is None:
            raise UsageError(
                "no previous export to continue from: the first one is --since 0 (everything) "
                "or --since SERIAL (the serial the other side is at)"
            )
        since = last
    if since is None or since < 0:
        raise UsageError("--since needs a serial (0 for everything)")
    if since > status:
        raise UsageError(f"--since {since} is past the mirror's serial {status}")
    return since
