"""`export`: a bundle of what changed between two completed serials, to carry across an air gap.

A delta export reads the change records (`changes`), never the whole tree: each path recorded
since the starting serial goes in with its current bytes if it exists, else in the list of
deletions. ``--since 0`` is a full export: a walk of ``web/``, O(tree) by nature. The mirror's lock
is held throughout, so the tree does not move underneath; every file is hashed for the manifest,
then streamed into the tar (never whole in memory) and hashed again on the way, so a file that
changed in between fails the export instead of shipping a lie.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

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
from bandersnatch_clone.errors import BundleError, StorageError, UsageError
from bandersnatch_clone.state import MirrorLock, read_status

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
#: Most of a bundle's bytes are wheels and sdists, compressed already: level 1 packs the pages and
#: JSON nearly as well as level 9 does, at several times the speed.
_GZIP_LEVEL = 1


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


def _changed(
    directory: Path, since: int, now: int
) -> tuple[list[PurePosixPath], list[PurePosixPath]]:
    """(paths to carry, paths deleted) since serial `since`, from the change records."""
    carry: list[PurePosixPath] = []
    deleted: list[PurePosixPath] = []
    for path in sorted(changed_since(directory, since, now)):
        try:
            check_path(path.as_posix(), state_allowed=False)
        except BundleError:
            log.debug("change record line %r is not a tree path: skipped", str(path))
            continue
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


class _HashingReader:
    """A file object for `TarFile.addfile` that hashes what the tar reads."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.digest.update(data)
        return data


def _write_bundle(directory: Path, target: Path, manifest: Manifest, compress: bool) -> None:
    """The tar: manifest first, then every entry in the order an import applies them."""
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
                    _add(tar, directory, entry)
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


def _add(tar: tarfile.TarFile, directory: Path, entry: Entry) -> None:
    real = directory.joinpath(*entry.path.parts)
    with real.open("rb") as f:
        st = os.fstat(f.fileno())
        if st.st_size != entry.size:
            raise BundleError(str(real), "changed while the bundle was written; export again")
        info = tarfile.TarInfo(entry.path.as_posix())
        info.size, info.mode, info.mtime = entry.size, 0o644, int(st.st_mtime)
        reader = _HashingReader(f)
        tar.addfile(info, reader)
    if reader.digest.hexdigest() != entry.sha256:
        raise BundleError(str(real), "changed while the bundle was written; export again")


def run_export(
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
    (``bundle-<from>-<to>.tar.gz``). Under the mirror's lock (`LockedError` while a run holds it).
    """
    directory = config.mirror.directory
    if not (directory / layout.WEB).is_dir():
        raise StorageError(str(directory), "no mirror here (no web/ folder)")
    with MirrorLock(directory):
        if (directory / "todo").exists():
            raise BundleError(
                str(directory / "todo"),
                "an interrupted run waits to be resumed; run `mirror` to finish it, then export",
            )
        status = read_status(directory)
        start = _starting_serial(directory, since, since_last, status)
        full = start == 0
        deleted: list[PurePosixPath] = []
        if full:
            carry = list(_walk_web(directory))
        else:
            carry, deleted = _changed(directory, start, status)
        if not full and start == status and not carry and not deleted:
            return ExportSummary(None, start, status, 0, 0, 0, full)
        carry += [PurePosixPath(n) for n in STATE_FILES if (directory / n).is_file()]
        with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
            entries = tuple(pool.map(lambda p: _hash(directory, p), carry))
        manifest = Manifest(
            from_serial=start,
            to_serial=status,
            entries=entries,
            deletions=tuple(deleted),
            tool_version=__version__,
            created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        target = out / bundle_name(start, status, compress) if out.is_dir() else out
        _write_bundle(directory, target, manifest, compress)
        write_last_export(directory, status)
    web = [e for e in entries if e.path.parts[0] == layout.WEB.name]
    log.info("exported serials %d..%d to %s", start, status, target)
    size = sum(e.size for e in web)
    return ExportSummary(target, start, status, len(web), size, len(deleted), full)


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
