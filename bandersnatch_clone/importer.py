"""`import BUNDLE`: apply an export on the offline side, every hash checked before anything shows.

1. Under the mirror's lock, read the manifest (the bundle's first member) and refuse a bundle that
   does not start at this mirror's serial (``--force`` overrides).
2. Extract every member into ``<directory>/.import/<from>-<to>-<id>/`` (inside the mirror, so on
   its file system: moving into place is an atomic rename), hashing each against the manifest.
   A member that is unsafe, unexpected, of the wrong size or hash, or missing refuses the whole
   bundle: the staging folder is removed and the tree was never touched.
3. Mark the staging folder verified, then move into place, in the order DESIGN.md section 6 asks
   of a sync: files, project pages, the root index, deletions (pages, then the files they linked),
   for a full bundle everything the bundle does not name, then the state files with ``status`` last.

Killed at any instant, the tree is one a reader can use (each step only links to what is already
in place) and ``status`` still names the old serial. Run again, the import finds the staging folder
verified and finishes the moves; killed before the mark, it starts over.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, cast

from humanfriendly import format_size

from bandersnatch_clone import layout
from bandersnatch_clone.bundle import (
    MANIFEST_DIGEST,
    MANIFEST_NAME,
    TREE_FOLDERS,
    Manifest,
    Phase,
    apply_order,
    check_path,
    deletion_order,
    phase_of,
)
from bandersnatch_clone.changes import record_paths, seal
from bandersnatch_clone.config import Config
from bandersnatch_clone.errors import BundleError, StorageError
from bandersnatch_clone.state import MirrorLock, read_status

log = logging.getLogger(__name__)

STAGING_DIR = ".import"
_VERIFIED = ".verified"
_CHUNK = 1024 * 1024
#: A manifest lists ~150 bytes per file: this is tens of millions of files.
_MAX_MANIFEST = 4 << 30
#: What a damaged or truncated tar or gzip stream raises while it is read.
_DAMAGED = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What `run_import` applied."""

    bundle: Path
    from_serial: int
    to_serial: int
    files: int
    bytes: int
    deletions: int
    #: A full bundle: files under web/ it did not name, removed.
    removed: int
    #: True when an interrupted import of the same bundle was finished.
    resumed: bool
    exit_code: int = 0

    def render_text(self) -> str:
        again = " (finished an interrupted import)" if self.resumed else ""
        lines = [
            f"imported {self.bundle}{again}: serial {self.from_serial} -> {self.to_serial}",
            f"  {self.files:,} files ({format_size(self.bytes)}), {self.deletions:,} deletions",
        ]
        if self.removed:
            lines.append(f"  {self.removed:,} files the full bundle does not name removed")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {
                "bundle": str(self.bundle),
                "from_serial": self.from_serial,
                "to_serial": self.to_serial,
                "files": self.files,
                "bytes": self.bytes,
                "deletions": self.deletions,
                "removed": self.removed,
                "resumed": self.resumed,
                "exit_code": self.exit_code,
            },
            indent=2,
        )


def _move(staged: Path, target: Path) -> None:
    """One path into place: an atomic rename over whatever was there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)


def _delete(directory: Path, path: PurePosixPath) -> None:
    """Remove a file and the folders it leaves empty, up to the tree's top folders."""
    real = directory.joinpath(*path.parts)
    try:
        real.unlink()
    except FileNotFoundError:
        return
    keep = {directory / layout.WEB, *(directory / f for f in TREE_FOLDERS)}
    parent = real.parent
    while parent not in keep and parent.is_relative_to(directory / layout.WEB):
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


def check_order(manifest: Manifest, status: int, bundle: Path) -> None:
    """Refuse a bundle that does not continue this mirror: the message says what to do."""
    start, end = manifest.from_serial, manifest.to_serial
    if start == status:
        return
    if end == status:
        raise BundleError(
            str(bundle), f"already imported: this mirror is at serial {status}, where it ends"
        )
    if manifest.full:
        raise BundleError(
            str(bundle),
            f"a full bundle (serials 0..{end}) replaces the whole tree, and this mirror is at "
            f"serial {status}; pass --force to replace it",
        )
    if start > status:
        raise BundleError(
            str(bundle),
            f"out of order: the bundle starts at serial {start} but this mirror is at serial "
            f"{status}; import the bundle that starts at {status} first",
        )
    raise BundleError(
        str(bundle),
        f"out of order: the bundle starts at serial {start}, before this mirror's serial "
        f"{status} (an older bundle?); export again from serial {status}",
    )


def _read_manifest(tar: tarfile.TarFile, bundle: Path) -> tuple[Manifest, bytes]:
    first = tar.next()
    if first is None or first.name != MANIFEST_NAME or not first.isfile():
        raise BundleError(str(bundle), f"not a bundle: the first member is not {MANIFEST_NAME}")
    if first.size > _MAX_MANIFEST:
        raise BundleError(str(bundle), f"{MANIFEST_NAME} is implausibly large")
    stream = tar.extractfile(first)
    assert stream is not None
    data = stream.read()
    # The manifest is what every other member is checked against: it carries its own digest.
    if first.pax_headers.get(MANIFEST_DIGEST) != hashlib.sha256(data).hexdigest():
        raise BundleError(str(bundle), f"{MANIFEST_NAME} does not match its checksum: damaged")
    try:
        return Manifest.from_bytes(data), data
    except BundleError as e:
        raise BundleError(str(bundle), f"{MANIFEST_NAME}: {e.problem}") from None


def _extract(tar: tarfile.TarFile, manifest: Manifest, tree: Path, bundle: Path) -> None:
    """Every member into `tree`, each checked against the manifest; `BundleError` on the first
    member that is unsafe, unexpected, repeated, not a plain file, or of the wrong size or hash."""
    expected = manifest.by_path()
    seen: set[PurePosixPath] = set()
    # next(), not iteration: iterating a TarFile starts again from the members already read.
    while (member := tar.next()) is not None:
        try:
            path = check_path(member.name)
        except BundleError as e:
            raise BundleError(str(bundle), f"member {member.name!r}: {e.problem}") from None
        entry = expected.get(path)
        if entry is None:
            raise BundleError(str(bundle), f"member {path} is not in the manifest")
        if path in seen:
            raise BundleError(str(bundle), f"member {path} appears twice")
        if not member.isfile():
            raise BundleError(str(bundle), f"member {path} is not a plain file")
        if member.size != entry.size:
            raise BundleError(
                str(bundle), f"{path}: {member.size} bytes, the manifest says {entry.size}"
            )
        seen.add(path)
        stream = tar.extractfile(member)
        assert stream is not None
        got = _stage(stream, tree.joinpath(*path.parts), member.mtime)
        if got != entry.sha256:
            raise BundleError(
                str(bundle),
                f"{path}: sha256 {got} does not match the manifest's {entry.sha256}: "
                "the bundle is damaged or was altered",
            )
    missing = sorted(p.as_posix() for p in expected.keys() - seen)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise BundleError(str(bundle), f"incomplete: {missing[0]}{more} missing from the bundle")


def _stage(stream: IO[bytes], target: Path, mtime: float) -> str:
    """Stream one member to `target`, returning its sha256 (reads may raise `_DAMAGED`)."""
    digest = hashlib.sha256()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        raise StorageError.from_os(target, e) from e
    try:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fchmod(fd, 0o644)
    except OSError as e:
        if isinstance(e, _DAMAGED):
            raise
        raise StorageError.from_os(target, e) from e
    finally:
        os.close(fd)
    os.utime(target, (mtime, mtime))
    return digest.hexdigest()


def _prune_list(directory: Path, manifest: Manifest) -> list[PurePosixPath]:
    """A full bundle: every file under the tree folders that it does not name."""
    named = set(manifest.by_path())
    extra: list[PurePosixPath] = []
    for folder in TREE_FOLDERS:
        top = directory.joinpath(*folder.parts)
        for root, _, files in os.walk(top):
            rel = PurePosixPath(folder, *Path(root).relative_to(top).parts)
            extra += [rel / name for name in files if rel / name not in named]
    return sorted(extra, key=deletion_order)


def _place(directory: Path, staging: Path, path: PurePosixPath) -> None:
    staged, target = staging.joinpath("tree", *path.parts), directory.joinpath(*path.parts)
    if staged.exists():
        try:
            _move(staged, target)
        except OSError as e:
            raise StorageError.from_os(target, e) from e
    elif not target.is_file():
        (staging / _VERIFIED).unlink(missing_ok=True)
        raise BundleError(
            str(staging), f"{path} is neither staged nor in place; run the import again"
        )


def _apply(directory: Path, staging: Path, manifest: Manifest, status: int) -> int:
    """Move everything into place in visibility order; returns how many files a full bundle's
    import removed. Idempotent: a path no longer staged was moved there by an earlier attempt."""
    entries = sorted(manifest.entries, key=lambda e: apply_order(e.path))
    removed = _prune_list(directory, manifest) if manifest.full else []
    record_paths(directory, [*(e.path for e in entries), *manifest.deletions, *removed])
    for entry in entries:
        if phase_of(entry.path) < Phase.DELETIONS:
            _place(directory, staging, entry.path)
    # Nothing names the removed paths any more: the pages and the root index are in place.
    for path in [*sorted(manifest.deletions, key=deletion_order), *removed]:
        _delete(directory, path)
    for entry in entries:
        if phase_of(entry.path) is Phase.STATUS:
            seal(directory, status, manifest.to_serial)
        if phase_of(entry.path) > Phase.DELETIONS:
            _place(directory, staging, entry.path)
    return len(removed)


@contextlib.contextmanager
def _open_bundle(bundle: Path) -> Iterator[tuple[tarfile.TarFile, IO[bytes]]]:
    """The bundle as a tar stream, and the (decompressed) byte stream under it. gzip is read by
    `gzip.GzipFile`, which checks the CRC at the end (tarfile's own stream reader does not)."""
    with bundle.open("rb") as raw:
        stream: IO[bytes] = raw
        if raw.read(2) == b"\x1f\x8b":
            stream = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
        raw.seek(0)
        with stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            yield tar, stream


def _drain(stream: IO[bytes]) -> None:
    """Read to the end, so that gzip checks its CRC and length over every byte of the bundle."""
    while stream.read(_CHUNK):
        pass


def run_import(config: Config, bundle: Path, *, force: bool = False) -> ImportSummary:
    """`import BUNDLE [--force]`: apply a bundle to the configured mirror directory (created
    when it does not exist: a full bundle seeds a new mirror). Raises `BundleError` when the
    bundle is refused, leaving the mirror as it was; `LockedError` when the lock is held."""
    directory = config.mirror.directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError.from_os(directory, e) from e
    with MirrorLock(directory):
        status = read_status(directory)
        try:
            with _open_bundle(bundle) as (tar, stream):
                manifest, raw = _read_manifest(tar, bundle)
                if not force:
                    check_order(manifest, status, bundle)
                ident = hashlib.sha256(raw).hexdigest()
                serials = f"{manifest.from_serial}-{manifest.to_serial}"
                staging = directory / STAGING_DIR / f"{serials}-{ident[:16]}"
                resumed = _verified(staging, ident)
                if not resumed:
                    _fresh(directory / STAGING_DIR, staging)
                    try:
                        _extract(tar, manifest, staging / "tree", bundle)
                        _drain(stream)
                    except BaseException:
                        # Refused (or interrupted) before anything was moved: leave no trace.
                        shutil.rmtree(staging, ignore_errors=True)
                        _remove_if_empty(directory / STAGING_DIR)
                        raise
        except FileNotFoundError:
            raise BundleError(str(bundle), "no such file") from None
        except _DAMAGED as e:
            raise BundleError(str(bundle), f"damaged or not a bundle: {e}") from None
        (staging / _VERIFIED).write_text(ident, encoding="ascii")
        removed = _apply(directory, staging, manifest, status)
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(directory / STAGING_DIR)
    log.info("imported %s: serial %d -> %d", bundle, status, manifest.to_serial)
    web = [e for e in manifest.entries if e.path.parts[0] == layout.WEB.name]
    return ImportSummary(
        bundle,
        manifest.from_serial,
        manifest.to_serial,
        files=len(web),
        bytes=sum(e.size for e in web),
        deletions=len(manifest.deletions),
        removed=removed,
        resumed=resumed,
    )


def _verified(staging: Path, ident: str) -> bool:
    try:
        return (staging / _VERIFIED).read_text(encoding="ascii") == ident
    except (FileNotFoundError, NotADirectoryError):
        return False


def _fresh(top: Path, staging: Path) -> None:
    """An empty staging folder; what earlier, other imports left is removed."""
    shutil.rmtree(top, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as e:
        raise StorageError.from_os(staging, e) from e


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()
