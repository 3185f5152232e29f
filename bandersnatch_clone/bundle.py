"""The air-gap bundle format: a tar whose first member, ``manifest.json``, names every other one.

    manifest.json   {"format": "bandersnatch-clone-bundle", "version": 1, "tool_version",
                     "created", "from_serial", "to_serial", "full",
                     "entries": [{"path", "size", "sha256"}, ...], "deletions": [path, ...]}
    web/...         every new or changed file of the tree, under its mirror-relative path
    generation, filters.state, ledger, status     the state files, so `status` and `verify` work

A bundle carries the tree from ``from_serial`` to ``to_serial``; a ``full`` one (from serial 0)
carries all of it, and its import removes what it does not name. Everything here is pure: the
manifest's schema, the path rules that keep an import inside the mirror, and the order in which an
import makes things visible (DESIGN.md section 6: files, pages, the root index, then status).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import PurePosixPath

from bandersnatch_clone import layout
from bandersnatch_clone.errors import BundleError, UnsafePath

FORMAT = "bandersnatch-clone-bundle"
VERSION = 1
MANIFEST_NAME = "manifest.json"
#: PAX header of the manifest member: the manifest's own sha256 (every other member is checked
#: against the manifest; this checks the manifest, compressed bundle or not).
MANIFEST_DIGEST = "BANDERSNATCH_CLONE.sha256"
#: State files a bundle carries, in the order an import puts them in place: ``status`` last.
STATE_FILES = ("generation", "filters.state", "ledger", "status")
#: The folders under web/ a full import makes identical to the bundle (anything else an operator
#: keeps there, a robots.txt, stays).
TREE_FOLDERS = (layout.SIMPLE, layout.PACKAGES, layout.JSON_DIR, layout.PYPI_DIR)
_ROOT_PAGES = frozenset(
    layout.SIMPLE / page for page in (layout.HTML_PAGE, layout.V1_HTML_PAGE, layout.V1_JSON_PAGE)
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Phase(IntEnum):
    """When an import makes a path visible: each phase only links to what earlier ones placed."""

    FILES = 0  # web/packages/...: nothing links to a new file yet
    PAGES = 1  # project pages and JSON API copies
    ROOT = 2  # web/simple/index.*: names projects whose pages are in place
    DELETIONS = 3  # removed pages, then removed files: nothing names them any more
    STATE = 4  # generation, filters.state, ledger
    STATUS = 5  # the serial, last


def phase_of(path: PurePosixPath) -> Phase:
    if path in _ROOT_PAGES:
        return Phase.ROOT
    if path.parts[0] == layout.WEB.name:
        return Phase.FILES if path.is_relative_to(layout.PACKAGES) else Phase.PAGES
    return Phase.STATUS if path.name == "status" else Phase.STATE


def apply_order(path: PurePosixPath) -> tuple[int, int, str]:
    """Sort key: phase, then (for state files) their fixed order, then the path."""
    name = path.as_posix()
    rank = STATE_FILES.index(name) if name in STATE_FILES else 0
    return phase_of(path), rank, name


def deletion_order(path: PurePosixPath) -> tuple[bool, str]:
    """Pages and JSON copies before the files they linked to."""
    return path.is_relative_to(layout.PACKAGES), path.as_posix()


def check_path(text: object, *, state_allowed: bool = True) -> PurePosixPath:
    """A member or deletion path that stays inside the mirror: relative, no ``..``, no empty or
    dot segments, no control characters; under ``web/`` or one of the state files."""
    if not isinstance(text, str) or not text:
        raise BundleError(MANIFEST_NAME, f"not a path, refused: {text!r}")
    if state_allowed and text in STATE_FILES:
        return PurePosixPath(text)
    parts = text.split("/")
    try:
        for part in parts:
            layout.check_segment(part)
    except UnsafePath:
        raise BundleError(MANIFEST_NAME, f"unsafe path refused: {text!r}") from None
    if parts[0] != layout.WEB.name or len(parts) < 2:
        raise BundleError(MANIFEST_NAME, f"path outside web/ refused: {text!r}")
    return PurePosixPath(text)


@dataclass(frozen=True, slots=True)
class Entry:
    """One file the bundle carries."""

    path: PurePosixPath
    size: int
    sha256: str

    def to_json(self) -> dict[str, object]:
        return {"path": self.path.as_posix(), "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a bundle holds and which serials it joins."""

    from_serial: int
    to_serial: int
    entries: tuple[Entry, ...]
    deletions: tuple[PurePosixPath, ...]
    tool_version: str
    created: str

    @property
    def full(self) -> bool:
        """A full export: the whole tree, to seed a new mirror or to replace one after a gap."""
        return self.from_serial == 0

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)

    def by_path(self) -> Mapping[PurePosixPath, Entry]:
        return {e.path: e for e in self.entries}

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "tool_version": self.tool_version,
            "created": self.created,
            "from_serial": self.from_serial,
            "to_serial": self.to_serial,
            "full": self.full,
            "entries": [e.to_json() for e in self.entries],
            "deletions": [p.as_posix() for p in self.deletions],
        }
        return json.dumps(doc, indent=0).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse and check a manifest; `BundleError` names the first thing wrong with it."""
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise BundleError(MANIFEST_NAME, f"not JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise BundleError(MANIFEST_NAME, "not a bandersnatch-clone bundle manifest")
        if doc.get("version") != VERSION:
            raise BundleError(
                MANIFEST_NAME, f"bundle format version {doc.get('version')!r}; this reads {VERSION}"
            )
        start, end = doc.get("from_serial"), doc.get("to_serial")
        if not isinstance(start, int) or not isinstance(end, int) or not _serial(start):
            raise BundleError(MANIFEST_NAME, f"bad serial range {start!r}..{end!r}")
        if end < start:
            raise BundleError(MANIFEST_NAME, f"bad serial range {start!r}..{end!r}")
        entries = tuple(_entry(raw) for raw in _list(doc, "entries"))
        deletions = tuple(check_path(p, state_allowed=False) for p in _list(doc, "deletions"))
        _no_duplicates([e.path for e in entries], deletions)
        if "status" not in {e.path.as_posix() for e in entries}:
            raise BundleError(MANIFEST_NAME, "the bundle carries no status file")
        return cls(
            start,
            end,
            entries,
            deletions,
            str(doc.get("tool_version", "?")),
            str(doc.get("created", "?")),
        )


def _serial(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _list(doc: Mapping[str, object], key: str) -> list[object]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise BundleError(MANIFEST_NAME, f"{key!r} is not a list")
    return value


def _entry(raw: object) -> Entry:
    if not isinstance(raw, dict):
        raise BundleError(MANIFEST_NAME, f"not an entry: {raw!r}")
    path = check_path(raw.get("path"))
    size, digest = raw.get("size"), raw.get("sha256")
    if not _serial(size) or not isinstance(digest, str) or not _SHA256.match(digest):
        raise BundleError(MANIFEST_NAME, f"{path}: bad size or sha256")
    assert isinstance(size, int)
    return Entry(path, size, digest)


def _no_duplicates(paths: list[PurePosixPath], deletions: Iterable[PurePosixPath]) -> None:
    seen: set[PurePosixPath] = set()
    for path in [*paths, *deletions]:
        if path in seen:
            raise BundleError(MANIFEST_NAME, f"{path} is named twice")
        seen.add(path)


def bundle_name(from_serial: int, to_serial: int, compress: bool) -> str:
    return f"bundle-{from_serial}-{to_serial}.tar{'.gz' if compress else ''}"
