"""`snapshot DIR`: a frozen, consistent copy of the tree made of hard links, taken without the lock.

Every writer of the tree (sync, delete, verify, import) replaces a file by temp + rename and never
writes into one in place, so a hard link, once made, keeps its bytes for ever: the snapshot costs
no data, only links. What can go wrong is the walk, when a sync runs meanwhile (it holds the lock;
a snapshot does not wait for it). So the snapshot follows the tree the way a client does:

1. the state files (``status`` first: the snapshot never claims a serial newer than its content);
2. the root index, its three forms checked to name the same projects;
3. each project it names: its three pages, checked to agree (serial, links), then exactly the
   files the pages link to, then its JSON API copies.

A sync replaces a project's pages before it deletes the files they no longer link, and rewrites the
root index before it deletes a removed project's pages. So a linked file that has vanished means
the project's pages moved on: link them again. A page that has vanished means the root index moved
on: link it again and reconcile the projects. Each retry sees a newer tree; a sync ends, so this
ends. The snapshot is built in a hidden folder and renamed into place complete; ``latest`` points
at the newest, and the oldest beyond ``--keep`` are removed.
"""

from __future__ import annotations

import errno
import html
import json
import logging
import os
import re
import shutil
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from packaging.utils import canonicalize_name

from bandersnatch_clone import layout
from bandersnatch_clone.errors import SnapshotError, UsageError
from bandersnatch_clone.state import MirrorLock

log = logging.getLogger(__name__)

#: Snapshot folder names: UTC time to the microsecond, so that name order is age order.
NAME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z$")
LATEST = "latest"
#: State files linked first; ``status`` before anything, so it is never newer than the tree.
STATE_FILES = ("status", "generation", "ledger", "filters.state")
_PAGES = (layout.V1_JSON_PAGE, layout.V1_HTML_PAGE, layout.HTML_PAGE)
#: How often one project (or the root index) is linked again before the snapshot gives up.
_ATTEMPTS = 50
_HREF = re.compile(rb'href="([^"]*)"')
_SERIAL_COMMENT = re.compile(rb"<!--SERIAL (\d+)-->")


@dataclass(frozen=True, slots=True)
class SnapshotSummary:
    """What `take_snapshot` made: where, at which serial, how many links, what it pruned."""

    path: Path
    serial: int
    projects: int
    files: int
    pruned: tuple[str, ...]
    exit_code: int = 0

    def render_text(self) -> str:
        lines = [
            f"snapshot {self.path}: serial {self.serial}, {self.projects:,} projects, "
            f"{self.files:,} files (hard links)"
        ]
        lines += [f"  removed old snapshot {name}" for name in self.pruned]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {
                "snapshot": str(self.path),
                "serial": self.serial,
                "projects": self.projects,
                "files": self.files,
                "pruned": list(self.pruned),
                "exit_code": self.exit_code,
            },
            indent=2,
        )


def _link(source: Path, target: Path) -> None:
    """One hard link (the seam tests use to run a sync at a chosen point of the walk)."""
    os.link(source, target)


class _Linker:
    """Hard links from the live tree into the snapshot being built."""

    def __init__(self, live: Path, snap: Path, root_uri: str | None) -> None:
        self.live, self.snap, self.root_uri = live, snap, root_uri

    def link(self, path: PurePosixPath) -> bool:
        """Link one file; False when it does not exist (any more) in the live tree."""
        source, target = self.live.joinpath(*path.parts), self.snap.joinpath(*path.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                _link(source, target)
                return True
            except FileNotFoundError:
                return False
            except FileExistsError:
                target.unlink()  # linked before, from an older state: take the current one
            except OSError as e:
                if e.errno == errno.EXDEV:
                    raise SnapshotError(str(self.snap), "not on the mirror's file system") from e
                raise SnapshotError(str(target), e.strerror or str(e)) from e
        raise SnapshotError(str(target), "could not be linked")

    def read(self, path: PurePosixPath) -> bytes:
        return self.snap.joinpath(*path.parts).read_bytes()

    def unlink(self, path: PurePosixPath) -> None:
        self.snap.joinpath(*path.parts).unlink(missing_ok=True)

    # -- the root index --------------------------------------------------------------------

    def link_root(self) -> list[str]:
        """Link the root index until its three forms name the same projects; those names."""
        for attempt in range(_ATTEMPTS):
            pages = [layout.SIMPLE / page for page in _PAGES]
            if not all(self.link(p) for p in pages):
                if attempt == 0 and not (self.live / layout.SIMPLE / layout.V1_JSON_PAGE).exists():
                    raise SnapshotError(str(self.live), "no root index yet: let a sync finish")
                _pause(attempt)
                continue
            names = _root_names_json(self.read(pages[0]))
            if names is not None and all(
                _root_names_html(self.read(p)) == set(names) for p in pages[1:]
            ):
                return names
            _pause(attempt)
        raise SnapshotError(str(self.live / layout.SIMPLE), "the root index kept changing")

    # -- one project -----------------------------------------------------------------------

    def link_project(self, name: str) -> list[PurePosixPath] | None:
        """Link a project's pages and the files they link to; the paths linked, or None when
        its pages are gone from the live tree (the root index has moved on)."""
        normalized = canonicalize_name(name)
        folder = layout.project_dir(normalized)
        pages = [folder / page for page in _PAGES]
        problem = "its pages kept changing"
        for attempt in range(_ATTEMPTS):
            if not all(self.link(p) for p in pages):
                return None
            body = self.read(pages[0])
            if not all(_agree(body, self.read(p)) for p in pages[1:]):
                _pause(attempt)  # caught between the writes of its pages: look again
                continue
            files = layout.linked_paths(body, self.root_uri)
            missing = next((f for f in files if not self.link(f)), None)
            if missing is None:
                copies = [p for p in layout.json_paths(normalized) if self.link(p)]
                return [*pages, *files, *copies]
            # The sync replaced the pages, then deleted the file they no longer link: take the
            # newer pages. (The same file missing every time is a damaged tree, not a race.)
            problem = f"its page links {missing}, which is missing: run `verify --repair`"
            _pause(attempt)
        raise SnapshotError(str(self.live / folder), problem)


def _pause(attempt: int) -> None:
    # A writer is between two renames (microseconds to milliseconds): give it a moment.
    time.sleep(min(0.001 * 2**attempt, 0.1))


def _root_names_json(body: bytes) -> list[str] | None:
    try:
        projects = json.loads(body)["projects"]
        return sorted({canonicalize_name(p["name"]) for p in projects})
    except (ValueError, KeyError, TypeError):
        return None


def _root_names_html(body: bytes) -> set[str]:
    return {html.unescape(h.decode()).rstrip("/") for h in _HREF.findall(body)}


def _agree(page_json: bytes, page_html: bytes) -> bool:
    """Whether an HTML page and the JSON page are from the same write: same serial, same links."""
    try:
        doc = json.loads(page_json)
        serial = int(doc["meta"]["_last-serial"])
        urls = {str(f["url"]).split("#", 1)[0] for f in doc["files"]}
    except (ValueError, KeyError, TypeError):
        return False
    found = _SERIAL_COMMENT.search(page_html)
    if found is not None and int(found[1]) != serial:
        return False
    hrefs = {html.unescape(h.decode()).split("#", 1)[0] for h in _HREF.findall(page_html)}
    return hrefs == urls


def _build(linker: _Linker) -> tuple[int, int]:
    """Link the whole tree into the snapshot; (projects, files)."""
    for name in STATE_FILES:
        linker.link(PurePosixPath(name))
    names = linker.link_root()
    done: dict[str, list[PurePosixPath]] = {}
    todo = deque(names)
    refreshes = 0
    while todo:
        name = todo.popleft()
        if name in done:
            continue
        linked = linker.link_project(name)
        if linked is not None:
            done[name] = linked
            continue
        # Its pages are gone: the root index was rewritten without it. Start from the new one.
        refreshes += 1
        if refreshes > _ATTEMPTS:
            raise SnapshotError(
                str(linker.live / layout.SIMPLE / name),
                "listed by the root index, but its pages are missing: run `verify`",
            )
        _pause(refreshes)
        names = linker.link_root()
        listed = set(names)
        for stale in [n for n in done if n not in listed]:
            for path in done.pop(stale):
                linker.unlink(path)
        todo = deque(n for n in names if n not in done)
    files = sum(len(paths) for paths in done.values())
    return len(done), files


def _serial(path: Path) -> int:
    try:
        return int((path / "status").read_text(encoding="ascii").strip())
    except (FileNotFoundError, ValueError):
        return 0


def take_snapshot(
    directory: Path,
    dest: Path,
    *,
    keep: int = 3,
    root_uri: str | None = None,
    now: datetime | None = None,
) -> SnapshotSummary:
    """`snapshot DIR [--keep N]`: a new ``DIR/<UTC time>/`` of hard links into `directory`
    (``status``, ``generation``, ``ledger``, ``filters.state`` and ``web/``), ``DIR/latest``
    pointing at it, and all but the newest `keep` snapshots removed."""
    if keep < 1:
        raise UsageError("--keep must be at least 1")
    if not (directory / layout.SIMPLE).is_dir():
        raise SnapshotError(str(directory), "no mirror here (no web/simple/ folder)")
    web = (directory / layout.WEB).resolve()
    if dest.resolve() == web or dest.resolve().is_relative_to(web):
        raise UsageError(f"{dest}: a snapshot inside web/ would be served; put it elsewhere")
    dest.mkdir(parents=True, exist_ok=True)
    if os.stat(dest).st_dev != os.stat(directory).st_dev:
        raise SnapshotError(
            str(dest), f"not on the file system of {directory}: hard links cannot cross"
        )
    with MirrorLock(dest):  # one snapshot at a time into DIR (the mirror's lock is not taken)
        for stale in dest.glob(".*.partial"):
            shutil.rmtree(stale, ignore_errors=True)
        name = (now or datetime.now(UTC)).strftime(NAME_FORMAT)
        partial = dest / f".{name}.partial"
        partial.mkdir()
        try:
            projects, files = _build(_Linker(directory, partial, root_uri))
            os.rename(partial, dest / name)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        _point_latest(dest, name)
        pruned = _prune(dest, keep)
    log.info("snapshot %s: %d projects, %d files", dest / name, projects, files)
    return SnapshotSummary(dest / name, _serial(dest / name), projects, files, pruned)


def _point_latest(dest: Path, name: str) -> None:
    """``DIR/latest`` -> the new snapshot, replaced atomically (rsync DIR/latest/ ...)."""
    temp = dest / f".{LATEST}.new"
    temp.unlink(missing_ok=True)
    os.symlink(name, temp)
    os.replace(temp, dest / LATEST)


def _prune(dest: Path, keep: int) -> tuple[str, ...]:
    snapshots = sorted(p.name for p in dest.iterdir() if _NAME.match(p.name) and p.is_dir())
    old = snapshots[:-keep]
    for name in old:
        shutil.rmtree(dest / name)
    return tuple(old)
