"""Change records: which tree paths each completed run touched, so `export` never scans the tree.

    <directory>/changes/pending       paths written or deleted since the last completed serial
    <directory>/changes/<P>-<T>       the paths of the run(s) that took ``status`` from P to T
    <directory>/changes/last-export   the serial the previous `export` ended at

A path is appended to ``pending`` *before* the write or delete it announces (one ``os.write`` to an
``O_APPEND`` file, as the journal does), so a ``kill -9`` at any instant cannot lose it: at worst a
path is named that did not change, and an export then carries it again. When a run completes and
``status`` moves from P to T, ``pending`` is renamed to ``P-T`` *before* ``status`` is written; a
crash in between leaves a record that starts where the next one starts too, which `changed_since`
accepts (the union is what matters). The records chain: each starts where the previous ended.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from bandersnatch_clone import layout
from bandersnatch_clone.config import MirrorConfig
from bandersnatch_clone.errors import BundleError, StorageError
from bandersnatch_clone.state import atomic_write_text
from bandersnatch_clone.storage import Storage, TempFile
from bandersnatch_clone.storage.forwarding import ForwardingStorage, ForwardingTemp

CHANGES_DIR = "changes"
PENDING = "pending"
LAST_EXPORT = "last-export"
#: The root index in its three forms: written by every run that changed anything.
ROOT_PAGES = tuple(
    layout.SIMPLE / page for page in (layout.HTML_PAGE, layout.V1_HTML_PAGE, layout.V1_JSON_PAGE)
)
_RECORD_NAME = re.compile(r"^(\d+)-(\d+)$")
#: Paths per write when many are recorded at once (an import, a delete).
_BATCH = 10_000


def changes_dir(directory: Path) -> Path:
    return directory / CHANGES_DIR


def record_paths(directory: Path, paths: Iterable[PurePosixPath]) -> None:
    """Append paths about to be written or deleted to ``pending``. Blocking; one ``open`` for
    the lot, written a batch at a time. Call it before the change, never after."""
    folder = changes_dir(directory)
    path = folder / PENDING
    batch: list[str] = []
    fd: int | None = None
    try:
        for p in paths:
            batch.append(f"{p.as_posix()}\n")
            if len(batch) >= _BATCH:
                fd = _append(fd, path, batch)
        if batch:
            fd = _append(fd, path, batch)
    except OSError as e:
        raise StorageError.from_os(path, e) from e
    finally:
        if fd is not None:
            os.close(fd)


def _append(fd: int | None, path: Path, batch: list[str]) -> int:
    if fd is None:
        path.parent.mkdir(exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    data = memoryview("".join(batch).encode("utf-8"))
    batch.clear()
    while data:
        data = data[os.write(fd, data) :]
    return fd


def seal(directory: Path, start: int, end: int) -> None:
    """A run took the mirror from serial `start` to `end`: ``pending`` becomes ``<start>-<end>``.

    Call before ``status`` is written. Nothing recorded still makes an (empty) record, so the
    chain has no gap. ``end <= start`` (the serial did not move): ``pending`` stays as it is.
    """
    if end <= start:
        return
    folder = changes_dir(directory)
    target = folder / f"{start}-{end}"
    try:
        folder.mkdir(exist_ok=True)
        try:
            os.replace(folder / PENDING, target)
        except FileNotFoundError:
            target.touch()
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename is durable before status names the new serial
        finally:
            os.close(fd)
    except OSError as e:
        raise StorageError.from_os(target, e) from e


@dataclass(frozen=True, slots=True, order=True)
class Record:
    """One sealed change record: the paths touched between two completed serials."""

    start: int
    end: int
    path: Path = field(compare=False)


def records(directory: Path) -> list[Record]:
    """Every sealed record, in serial order."""
    folder = changes_dir(directory)
    if not folder.is_dir():
        return []
    found = []
    for entry in os.scandir(folder):
        match = _RECORD_NAME.match(entry.name)
        if match:
            found.append(Record(int(match[1]), int(match[2]), Path(entry.path)))
    return sorted(found)


def _read_paths(path: Path, into: set[PurePosixPath]) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    # The last line may be torn by a crash mid-append: a path that is only a prefix of a real one
    # names nothing, and an export then lists it as a deletion of a path that does not exist.
    into.update(PurePosixPath(line) for line in text.split("\n") if line)


def changed_since(directory: Path, since: int, now: int) -> set[PurePosixPath]:
    """Every path written or deleted after serial `since` (up to the tree as it is now).

    The records starting at or after `since` must reach, without a gap, the mirror's serial
    `now`; otherwise `BundleError` says from which serial on records exist.
    """
    chain = [r for r in records(directory) if r.start >= since]
    reach = since
    for record in chain:
        if record.start > reach:
            break
        reach = max(reach, record.end)
    if reach < now:
        known = records(directory)
        first = f"start at serial {known[0].start}" if known else "do not exist yet"
        raise BundleError(
            str(changes_dir(directory)),
            f"the change records {first}, not at serial {since}: nothing says what changed "
            f"between {since} and {now}; export everything with --since 0 instead",
        )
    paths: set[PurePosixPath] = set()
    for record in chain:
        _read_paths(record.path, paths)
    _read_paths(changes_dir(directory) / PENDING, paths)
    return paths


def read_last_export(directory: Path) -> int | None:
    try:
        return int((changes_dir(directory) / LAST_EXPORT).read_text(encoding="ascii"))
    except FileNotFoundError:
        return None
    except ValueError:
        return None


def write_last_export(directory: Path, serial: int) -> None:
    changes_dir(directory).mkdir(exist_ok=True)
    atomic_write_text(changes_dir(directory) / LAST_EXPORT, f"{serial}\n")


def diff_file_path(diff_file: Path, append_epoch: bool, now: float | None = None) -> Path:
    """bandersnatch's ``diff-file``, with ``-<epoch seconds>`` appended when asked."""
    if not append_epoch:
        return diff_file
    return diff_file.with_name(f"{diff_file.name}-{int(time.time() if now is None else now)}")


def write_diff_file(target: Path, directory: Path, changed: Iterable[PurePosixPath]) -> None:
    """The paths a run created or changed, absolute, one a line, in the order they were written
    (files before the pages that link them), for ``rsync --files-from``. Blocking."""
    lines = [f"{directory.joinpath(*p.parts)}\n" for p in dict.fromkeys(changed)]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError.from_os(target.parent, e) from e
    atomic_write_text(target, "".join(lines))


def write_run_diff(mirror: MirrorConfig, changed: Iterable[PurePosixPath]) -> Path | None:
    """``diff_file``: after each run, what it created or changed (empty when nothing), as
    bandersnatch writes it; the file written, or None when no ``diff_file`` is configured."""
    if mirror.diff_file is None:
        return None
    target = diff_file_path(mirror.diff_file, mirror.diff_append_epoch)
    write_diff_file(target, mirror.directory, changed)
    return target


class RecordingTemp(ForwardingTemp):
    """A `TempFile` whose commit is recorded before it happens."""

    def __init__(self, inner: TempFile, owner: RecordingStorage) -> None:
        super().__init__(inner)
        self._owner = owner

    async def commit(self, path: PurePosixPath) -> None:
        self._owner.announce((path,))
        await self.inner.commit(path)
        self._owner.note_changed(path)


class RecordingStorage(ForwardingStorage):
    """A `Storage` that appends every path it is about to write or delete to the change log.

    `changed` lists, in order, the paths this run created or replaced with different bytes:
    what the diff file names. Reads pass straight through.
    """

    def __init__(self, inner: Storage, directory: Path, *, keep_changed: bool = True) -> None:
        super().__init__(inner)
        self.directory = directory
        #: Only kept when asked (a diff file is configured): a first sync of PyPI changes
        #: millions of paths.
        self.keep_changed = keep_changed
        self.changed: list[PurePosixPath] = []
        self._fd: int | None = None

    def announce(self, paths: Iterable[PurePosixPath]) -> None:
        # One small append to a file kept open, on the event loop as the journal's are: a thread
        # hop (or an open per path) would cost more than the write itself.
        data = "".join(f"{p.as_posix()}\n" for p in paths).encode("utf-8")
        pending = changes_dir(self.directory) / PENDING
        try:
            if self._fd is None:
                pending.parent.mkdir(exist_ok=True)
                self._fd = os.open(pending, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as e:
            raise StorageError.from_os(pending, e) from e

    def close(self) -> None:
        """Let go of ``pending`` (before it is sealed: later paths go to a new one)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def note_changed(self, path: PurePosixPath) -> None:
        if self.keep_changed:
            self.changed.append(path)

    async def write_bytes(self, path: PurePosixPath, data: bytes) -> bool:
        self.announce((path,))
        written = await self.inner.write_bytes(path, data)
        if written:
            self.note_changed(path)
        return written

    async def write_many(self, items: Sequence[tuple[PurePosixPath, bytes]]) -> list[bool]:
        self.announce(p for p, _ in items)
        written = await self.inner.write_many(items)
        for (path, _), changed in zip(items, written, strict=True):
            if changed:
                self.note_changed(path)
        return written

    async def open_temp(
        self, path: PurePosixPath | None = None, *, sha256: str | None = None
    ) -> RecordingTemp:
        return RecordingTemp(await self.inner.open_temp(path, sha256=sha256), self)

    async def delete(self, path: PurePosixPath) -> bool:
        self.announce((path,))
        return await self.inner.delete(path)

    async def delete_many(self, paths: Iterable[PurePosixPath]) -> None:
        paths = list(paths)
        self.announce(paths)
        await self.inner.delete_many(paths)
