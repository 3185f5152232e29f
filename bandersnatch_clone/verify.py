"""`verify`: every linked file against its page, orphans, temp leftovers; repair; resumable."""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import hashlib
import json
import logging
import os
import stat
import threading
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import unquote

import aiohttp
from humanfriendly import format_size, format_timespan

from bandersnatch_clone import layout, mirror
from bandersnatch_clone.changes import ROOT_PAGES, record_paths
from bandersnatch_clone.config import Config
from bandersnatch_clone.delete import load_ledger
from bandersnatch_clone.errors import MirrorError, ProjectNotFound, StorageError, UnsafePath
from bandersnatch_clone.filters import load_filters
from bandersnatch_clone.state import Ledger, MirrorLock, read_status
from bandersnatch_clone.storage.filesystem import TMP_DIR, FilesystemStorage
from bandersnatch_clone.sync import write_root_index
from bandersnatch_clone.upstream import Upstream

log = logging.getLogger(__name__)
T = TypeVar("T")

MiB = 1 << 20
PROGRESS_FILE = "verify.progress"
_MAGIC = "bandersnatch-clone-verify 1"
#: Problems kept in the summary; every one is logged as it is found.
MAX_LISTED = 1000
# Hash jobs: small files go in batches, so a tree of small files is not all executor overhead.
_BATCH_BYTES, _BATCH_FILES = 8 * MiB, 64
# Projects per executor job.
_CHUNK = 8
_TOP_KEEP = {".lock", TMP_DIR}


class Kind(StrEnum):
    """What is wrong; ``Problem.path`` is the file (or page folder) it is wrong with."""

    MISSING = "missing"  # a file a page links to does not exist
    CORRUPT = "corrupt"  # its sha256 (or size) differs from the page's
    DANGLING = "dangling"  # a page links to missing files (pip would get a 404)
    BAD_PAGE = "bad-page"  # a ledger project's page (or one of its forms) is missing or bad
    UNLISTED = "unlisted"  # pages or JSON copies of a project the ledger does not know
    ORPHAN = "orphan"  # a file under web/packages that no page links to
    TEMP = "temp"  # a temp file left by an interrupted write


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing found wrong, and what this run did about it."""

    kind: Kind
    #: Tree path relative to the mirror directory.
    path: str
    project: str | None
    detail: str
    #: "" = left as found; "repaired", "resynced", "deleted", "would ...", "repair failed: ...".
    action: str = ""

    @property
    def fixed(self) -> bool:
        return self.action in ("repaired", "resynced", "deleted", "removed by re-sync")


@dataclass(frozen=True, slots=True)
class VerifySummary:
    """What a verify run found and did, for the operator (text) and for scripts (``--json``)."""

    projects_checked: int
    #: Projects verified by the interrupted pass this run resumed, not checked again.
    projects_skipped: int
    files_checked: int
    bytes_hashed: int
    elapsed: float
    quick: bool
    dry_run: bool
    #: False when the run stopped early (``limit``): the next run resumes; no orphan sweep ran.
    complete: bool
    #: Problems found, by kind (all of them), and how many of those were fixed.
    found: Mapping[str, int]
    fixed: int
    #: The first `MAX_LISTED` problems.
    problems: tuple[Problem, ...]
    exit_code: int

    def render_text(self) -> str:
        rate = self.bytes_hashed / self.elapsed if self.elapsed > 0 else 0.0
        how = "sizes only (--quick)" if self.quick else f"{format_size(round(rate))}/s"
        lines = [
            f"verified {self.projects_checked:,} projects, {self.files_checked:,} files, "
            f"{format_size(self.bytes_hashed)} hashed in {format_timespan(self.elapsed)} ({how})"
        ]
        if self.projects_skipped:
            lines.append(f"resumed: {self.projects_skipped:,} projects were verified before")
        total = sum(self.found.values())
        if total:
            counts = ", ".join(f"{n:,} {kind}" for kind, n in sorted(self.found.items()))
            lines.append(f"problems: {counts}; {self.fixed:,} fixed")
            for p in self.problems:
                action = f" -> {p.action}" if p.action else ""
                lines.append(f"  {p.kind:<8} {p.path}: {p.detail}{action}")
            if total > len(self.problems):
                lines.append(f"  ... and {total - len(self.problems):,} more (see the log)")
        else:
            lines.append("no problems found")
        if not self.complete:
            lines.append("incomplete: the next verify resumes where this one stopped")
        lines.append(f"exit code {self.exit_code}")
        return "\n".join(lines)

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["found"] = dict(self.found)
        data["problems"] = [dataclasses.asdict(p) for p in self.problems]
        return json.dumps(data, indent=2)


@dataclass(frozen=True, slots=True)
class Linked:
    """A file a page links to, with what the page says about it."""

    path: str  # "web/packages/..."
    filename: str  # the distribution's filename (also for its ``.metadata``)
    sha256: str | None
    size: int | None
    metadata: bool = False


def _local(href: str) -> str | None:
    """`layout.link_to_path` on strings (pathlib costs more than the rest of a small file's
    check): ``../../packages/a/b`` -> ``web/packages/a/b``; None for links off this tree."""
    href = href.split("#", 1)[0]
    if not href.startswith("../../packages/"):
        return None
    try:
        parts = [layout.check_segment(unquote(p)) for p in href[15:].split("/")]
    except UnsafePath:
        return None
    return f"{layout.PACKAGES}/{'/'.join(parts)}"


def parse_page(body: bytes, root_uri: str | None) -> tuple[object, list[Linked]]:
    """(``name``, local links) of a PEP 691 project page; ValueError when it does not parse."""
    doc: Any = json.loads(body)  # Any: checked field by field below
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list):
        raise ValueError("no files list")
    prefix = f"{root_uri.rstrip('/')}/" if root_uri else None
    links: list[Linked] = []
    for f in files:
        if not (isinstance(f, dict) and isinstance(f.get("url"), str)):
            raise ValueError("a file without a url")
        href: str = f["url"]
        if prefix and href.startswith(prefix):
            href = "../../" + href[len(prefix) :]
        path = _local(href)
        if path is None:  # a link off this tree (an index-only mirror): not ours to check
            continue
        name, hashes, size = f.get("filename"), f.get("hashes"), f.get("size")
        if not isinstance(name, str) or not isinstance(hashes, dict):
            raise ValueError(f"{href}: no filename or hashes")
        size = size if isinstance(size, int) and not isinstance(size, bool) else None
        links.append(Linked(path, name, hashes.get("sha256"), size))
        # PEP 714: core-metadata is false, true (no hashes) or a dict of hashes.
        if core := f.get("core-metadata"):
            sha = core.get("sha256") if isinstance(core, dict) else None
            links.append(Linked(f"{path}.metadata", name, sha, None, True))  # PEP 658
    return doc.get("name"), links


def default_workers() -> int:
    """Two hashing threads per core: on a warm cache one per core is enough, on a cold disk the
    extra reads in flight pay (docs/verify.md has the figures)."""
    return min(32, 2 * (os.cpu_count() or 1))


_buffers = threading.local()


def sha256_file(path: Path | str) -> tuple[str, int]:
    """(sha256, size) of a file read in 1 MiB blocks into a per-thread buffer; hashlib releases
    the GIL on buffers this big, so threads hash in parallel."""
    buf: bytearray | None = getattr(_buffers, "buf", None)
    if buf is None:
        buf = _buffers.buf = bytearray(MiB)
    view, digest, size = memoryview(buf), hashlib.sha256(), 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
            size += n
    return digest.hexdigest(), size


class LinkSet:
    """Linked tree paths as 64-bit hashes in 256 sorted arrays: 8 bytes a file, where a set of
    str costs about 200. A collision (odds ~n²/2⁶⁵) can hide an orphan, never make one."""

    def __init__(self) -> None:
        self._buckets = [array("Q") for _ in range(256)]

    @staticmethod
    def _key(path: str) -> int:
        return hash(path) & 0xFFFF_FFFF_FFFF_FFFF

    def add(self, path: str) -> None:
        key = self._key(path)
        self._buckets[key >> 56].append(key)

    def freeze(self) -> None:
        self._buckets = [array("Q", sorted(b)) for b in self._buckets]

    def __contains__(self, path: str) -> bool:
        key = self._key(path)
        bucket = self._buckets[key >> 56]
        i = bisect.bisect_left(bucket, key)
        return i < len(bucket) and bucket[i] == key


def walk_files(root: Path, top: str) -> Iterator[str]:
    """Tree paths of the files below ``root/top``, lazily: one open directory per level."""
    try:
        stack = [(top, os.scandir(root / top))]
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        while stack:
            rel, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                entries.close()
                stack.pop()
            elif entry.is_dir(follow_symlinks=False):
                try:
                    stack.append((f"{rel}/{entry.name}", os.scandir(entry.path)))
                except FileNotFoundError:
                    continue
            else:
                yield f"{rel}/{entry.name}"
    finally:
        for _, entries in stack:
            entries.close()


class ProgressFile:
    """``verify.progress``: the header, then ``d <name>`` (clean) or ``p <name>`` (problems left)
    per finished project in ledger order; appended about once a second, so O(projects) overall."""

    def __init__(self, directory: Path, mode: str) -> None:
        self.path, self._mode = directory / PROGRESS_FILE, mode
        self._buffer: list[str] = []
        self._flushed = time.monotonic()
        self._whole = 0  # bytes of whole lines in the file `load` read

    def load(self) -> tuple[str | None, set[str]]:
        """(last finished project, projects finished with problems left); (None, {}) to start."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None, set()
        self._whole = data.rfind(b"\n") + 1
        lines = data[: self._whole].decode("utf-8", "replace").split("\n")
        if lines[0] != f"{_MAGIC} {self._mode}":
            return None, set()
        last: str | None = None
        dirty: set[str] = set()
        for line in lines[1:-1]:  # the last element is the "" after the last newline
            mark, _, name = line.partition(" ")
            if mark in ("d", "p") and name:
                last = max(last or name, name)
                (dirty.add if mark == "p" else dirty.discard)(name)
        return last, dirty

    def begin(self, fresh: bool) -> None:
        """Start a new file, or go on with the loaded one minus a torn last line (appending to
        it would glue the next name onto the fragment)."""
        if fresh:
            self.path.write_text(f"{_MAGIC} {self._mode}\n", encoding="utf-8")
        else:
            os.truncate(self.path, self._whole)

    def add(self, name: str, clean: bool) -> bool:
        """Queue a line; True when a flush is due."""
        self._buffer.append(f"{'d' if clean else 'p'} {name}\n")
        return time.monotonic() - self._flushed > 1.0

    def flush(self) -> None:
        if self._buffer:
            with self.path.open("a", encoding="utf-8") as f:
                f.write("".join(self._buffer))
            self._buffer.clear()
        self._flushed = time.monotonic()


@dataclass(slots=True)
class _Check:
    """One project's verification."""

    name: str
    problems: list[Problem] = field(default_factory=list)
    links: list[Linked] = field(default_factory=list)
    bad: list[Linked] = field(default_factory=list)
    files: int = 0
    hashed: int = 0

    def add(self, kind: Kind, path: str, detail: str, link: Linked | None = None) -> None:
        self.problems.append(Problem(kind, path, self.name, detail))
        if link is not None:
            self.bad.append(link)


class _Verifier:
    """One verify run over a locked mirror directory."""

    def __init__(
        self,
        config: Config,
        *,
        repair: bool,
        delete_orphans: bool,
        dry_run: bool,
        quick: bool,
        workers: int | None,
        limit: int | None,
        on_project: Callable[[str], None] | None,
        session: aiohttp.ClientSession | None,
    ) -> None:
        self.config, self.root_uri = config, config.mirror.root_uri or None
        self.storage = FilesystemStorage(config.mirror.directory)
        self.root, self.root_str = self.storage.root, str(self.storage.root)
        self.repair, self.delete_orphans, self.dry_run = repair, delete_orphans, dry_run
        self.quick, self.limit, self.on_project = quick, limit, on_project
        self.workers = workers or default_workers()
        mode = "quick" if quick else "full"
        self.progress = None if dry_run else ProgressFile(self.root, mode)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="verify")
        self.ledger = Ledger()
        self.links = LinkSet()
        self.found: Counter[str] = Counter()
        self.listed: list[Problem] = []
        self.fixed = self.unfixed = self.checked = self.skipped = self.files = self.hashed = 0
        self.write_root = self.unreadable_pages = False
        #: Projects to re-sync in full after the pass, with what their check found.
        self.resync: dict[str, _Check] = {}
        self._session, self._own_session = session, session is None

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def _act(self, kind: Kind) -> str:
        """What this run does about a problem of `kind`: "" (report only) or "would ..." / a verb
        the caller carries out."""
        if kind is Kind.ORPHAN and self.delete_orphans and not self.unreadable_pages:
            return "would delete" if self.dry_run else "delete"
        if kind is Kind.TEMP and (self.delete_orphans or self.repair):
            return "would delete" if self.dry_run else "delete"
        if kind is Kind.ORPHAN and self.delete_orphans:
            return "kept: some pages were unreadable, so their links are unknown"
        return ""

    def _record(self, problem: Problem) -> None:
        self.found[problem.kind] += 1
        if problem.fixed:
            self.fixed += 1
        else:
            self.unfixed += 1
        if len(self.listed) < MAX_LISTED:
            self.listed.append(problem)
        action = f" -> {problem.action}" if problem.action else ""
        log.warning("%s %s: %s%s", problem.kind, problem.path, problem.detail, action)

    # -- one project ---------------------------------------------------------------------------

    def _inspect(self, name: str) -> tuple[_Check, list[list[Linked]]]:
        """Read the page, stat what it links to; the files to hash, in batches. Blocking."""
        check, root = _Check(name), self.root_str
        page_dir = f"{layout.SIMPLE}/{layout.check_segment(name)}"
        page = f"{page_dir}/{layout.V1_JSON_PAGE}"
        try:
            with open(f"{root}/{page}", "rb") as f:
                name_in_page, check.links = parse_page(f.read(), self.root_uri)
            if name_in_page != name:
                raise ValueError(f"the page is for {name_in_page!r}")
        except (FileNotFoundError, NotADirectoryError):
            check.add(Kind.BAD_PAGE, page, "page missing")
            return check, []
        except ValueError as e:
            check.add(Kind.BAD_PAGE, page, f"page does not parse: {e}")
            return check, []
        for form in (layout.HTML_PAGE, layout.V1_HTML_PAGE):
            if not os.path.isfile(f"{root}/{page_dir}/{form}"):
                check.add(Kind.BAD_PAGE, f"{page_dir}/{form}", "page missing")
        batches: list[list[Linked]] = [[]]
        size = missing = 0
        for link in check.links:
            check.files += 1
            try:
                st: os.stat_result | None = os.stat(f"{root}/{link.path}")
            except OSError:
                st = None
            if st is None or not stat.S_ISREG(st.st_mode):
                missing += 1
                check.add(Kind.MISSING, link.path, "linked from the page, not on disk", link)
            elif link.size is not None and st.st_size != link.size:
                detail = f"size {st.st_size}, the page says {link.size}"
                check.add(Kind.CORRUPT, link.path, detail, link)
            elif not self.quick and link.sha256 is not None:
                if size >= _BATCH_BYTES or len(batches[-1]) >= _BATCH_FILES:
                    batches.append([])
                    size = 0
                batches[-1].append(link)
                size += st.st_size
        if missing:
            check.add(Kind.DANGLING, page_dir, f"links {missing} missing files")
        return check, [b for b in batches if b]

    def _hash(self, batch: list[Linked]) -> tuple[list[tuple[Kind, Linked, str]], int]:
        """(problems, bytes read) of a batch of files. Blocking."""
        problems: list[tuple[Kind, Linked, str]] = []
        total = 0
        for link in batch:
            try:
                digest, n = sha256_file(f"{self.root_str}/{link.path}")
            except OSError:
                problems.append((Kind.MISSING, link, "vanished while being read"))
                continue
            total += n
            if digest != (link.sha256 or "").lower():
                problems.append(
                    (Kind.CORRUPT, link, f"sha256 {digest}, the page says {link.sha256}")
                )
        return problems, total

    @staticmethod
    def _merge(check: _Check, hashed: tuple[list[tuple[Kind, Linked, str]], int]) -> None:
        for kind, link, detail in hashed[0]:
            check.add(kind, link.path, detail, link)
        check.hashed += hashed[1]

    def _inspect_chunk(self, names: list[str]) -> list[tuple[_Check, list[list[Linked]]]]:
        """`_inspect` a few projects and hash each one's first batch in the same job: one
        executor round trip for several typical projects. Blocking."""
        out = []
        for name in names:
            check, batches = self._inspect(name)
            if batches:
                self._merge(check, self._hash(batches[0]))
            out.append((check, batches[1:]))
        return out

    async def _check(self, names: list[str]) -> list[_Check]:
        inspected = await self._run(self._inspect_chunk, names)
        jobs = [(check, self._run(self._hash, b)) for check, rest in inspected for b in rest]
        hashed_all = await asyncio.gather(*(job for _, job in jobs))
        for (check, _), hashed in zip(jobs, hashed_all, strict=True):
            self._merge(check, hashed)
        return [check for check, _ in inspected]

    async def _finish(self, check: _Check) -> None:
        if check.problems and self.repair:
            check = await self._repair(check)
        if check.name in self.resync:  # accounted for once it is re-synced
            self.checked, self.files = self.checked + 1, self.files + check.files
            self.hashed += check.hashed
            await self._progress(check.name, clean=False)
        else:
            await self._account(check, counted=False)
        if self.on_project is not None:
            self.on_project(check.name)

    async def _account(self, check: _Check, *, counted: bool) -> None:
        """Record a finished project: its problems, its links, the progress line."""
        json_page = f"{layout.SIMPLE}/{check.name}/{layout.V1_JSON_PAGE}"
        if any(p.path == json_page and not p.fixed for p in check.problems):
            self.unreadable_pages = True  # its links are unknown
        for problem in check.problems:
            self._record(problem)
        for link in check.links:
            self.links.add(link.path)
        if not counted:
            self.checked, self.files = self.checked + 1, self.files + check.files
            self.hashed += check.hashed
        await self._progress(check.name, clean=all(p.fixed for p in check.problems))

    async def _progress(self, name: str, *, clean: bool) -> None:
        if self.progress is not None and self.progress.add(name, clean):
            await asyncio.to_thread(self.progress.flush)

    # -- repair --------------------------------------------------------------------------------

    async def _repair(self, check: _Check) -> _Check:
        """Fetch the bad files again by filename; queue a full re-sync when that cannot work."""
        if self.dry_run:
            check.problems = [dataclasses.replace(p, action="would repair") for p in check.problems]
            return check
        try:
            if any(p.kind is Kind.BAD_PAGE for p in check.problems) or not await self._refetch(
                check
            ):
                self.resync[check.name] = check
                return check
        except MirrorError as e:
            failed = f"repair failed: {e}"
            check.problems = [dataclasses.replace(p, action=failed) for p in check.problems]
            return check
        return await self._recheck(check, "repaired")

    async def _recheck(self, check: _Check, action: str) -> _Check:
        """Check a repaired project again: what is gone is fixed by `action`, the rest is not."""
        (again,) = await self._check([check.name])
        left = {(p.kind, p.path) for p in again.problems}
        fixed = [
            dataclasses.replace(p, action=action)
            for p in check.problems
            if (p.kind, p.path) not in left
        ]
        still = [
            dataclasses.replace(p, action=f"still wrong after {action}") for p in again.problems
        ]
        again.problems = fixed + still
        again.files, again.hashed = check.files, check.hashed
        return again

    async def _upstream(self) -> Upstream:
        if self._session is None:
            self._session = mirror.make_session(self.config)
        return mirror.make_upstream(self.config, self._session)

    async def _refetch(self, check: _Check) -> bool:
        """Download each bad file (or ``.metadata``) again; False when the upstream's project
        no longer offers it with the hash our page has."""
        upstream = await self._upstream()
        try:
            detail = await upstream.project(check.name)
        except ProjectNotFound:
            return False
        offered = {f.filename: f for f in detail.files}
        for link in check.bad:
            f, path = offered.get(link.filename), PurePosixPath(link.path)
            # A repaired file goes to the next `export` too (the other side got the bad bytes).
            await asyncio.to_thread(record_paths, self.root, [path])
            if link.metadata:
                if f is None or f.core_metadata is None:
                    return False
                if f.core_metadata.get("sha256") != link.sha256:
                    return False
                body = await upstream.fetch_bytes(f.url + ".metadata", link.sha256)
                await self.storage.write_bytes(path, body)
                continue
            if f is None or link.sha256 is None or f.sha256 != link.sha256:
                return False
            sink = await self.storage.open_temp()
            try:
                await upstream.download(f.url, link.sha256, sink)
                await sink.commit(path)
            except BaseException:
                await sink.abort()
                raise
        return True

    async def _resync_queued(self) -> None:
        """Re-sync the queued projects in one run of the engine, as `sync NAME...` does (its
        journal, root index and ledger), then check each again and account for it."""
        if not self.resync:
            return
        upstream = await self._upstream()
        filters = load_filters(self.config)
        names = list(self.resync)
        # mirror's run body under the lock this process already holds: `sync NAME...` exactly.
        outcome = await mirror.locked_run(self.config, self.root, upstream, filters, names, None)
        self.ledger, _ = await asyncio.to_thread(load_ledger, self.root)
        for name, check in self.resync.items():
            if name in outcome.result.failed:
                failed = f"repair failed: {outcome.result.failed[name]}"
                check.problems = [dataclasses.replace(p, action=failed) for p in check.problems]
            elif name not in self.ledger:  # a 404 upstream, or filters exclude it now
                gone = [dataclasses.replace(p, action="removed by re-sync") for p in check.problems]
                check = _Check(name, gone, files=check.files, hashed=check.hashed)
            else:
                check = await self._recheck(check, "resynced")
            await self._account(check, counted=True)

    # -- the pass, the sweep, the run ----------------------------------------------------------

    async def _pass(self, names: list[str], last: str | None, dirty: set[str]) -> bool:
        """Check projects in ledger order, a window of chunks at once; True when all were.

        On an error or a cancellation, what is in flight is dropped: the progress file holds
        only projects whose every result was recorded."""
        window: deque[asyncio.Task[list[_Check]]] = deque()
        chunk: list[str] = []
        queued, complete = 0, True
        try:
            for name in names:
                if last is not None and name <= last and name not in dirty:
                    self.skipped += 1
                    continue
                if self.limit is not None and queued >= self.limit:
                    complete = False
                    break
                chunk.append(name)
                queued += 1
                if len(chunk) >= _CHUNK:
                    window.append(asyncio.create_task(self._check(chunk)))
                    chunk = []
                if len(window) > 2 * self.workers:
                    await self._finish_chunk(window)
            if chunk:
                window.append(asyncio.create_task(self._check(chunk)))
            while window:
                await self._finish_chunk(window)
            return complete
        finally:
            for task in window:
                task.cancel()
            await asyncio.gather(*window, return_exceptions=True)

    async def _finish_chunk(self, window: deque[asyncio.Task[list[_Check]]]) -> None:
        for check in await window[0]:
            await self._finish(check)
        window.popleft()

    def _add_links(self, page: Path) -> bool:
        try:
            _, links = parse_page(page.read_bytes(), self.root_uri)
        except (OSError, ValueError):
            return False
        for link in links:
            self.links.add(link.path)
        return True

    def _found(self, kind: Kind, path: str, project: str | None, detail: str) -> None:
        """Record a problem of the sweep, carrying out its deletion when that is the action."""
        action = self._act(kind)
        if action == "delete":
            try:
                self.storage.delete_sync(PurePosixPath(path))
                action = "deleted"
            except StorageError as e:
                action = f"delete failed: {e.problem}"
        self._record(Problem(kind, path, project, detail, action))

    def _sweep(self, skipped: list[str]) -> None:
        """After a complete pass: root index, unlisted projects, temp files, orphans. Blocking."""
        root, simple = self.root, str(layout.SIMPLE)
        for name in skipped:  # verified by an earlier run: only their links are needed now
            if not self._add_links(root / simple / name / layout.V1_JSON_PAGE):
                self.unreadable_pages = True
                page = f"{simple}/{name}/{layout.V1_JSON_PAGE}"
                self._record(Problem(Kind.BAD_PAGE, page, name, "page unreadable since checked"))
        for form in (layout.HTML_PAGE, layout.V1_HTML_PAGE, layout.V1_JSON_PAGE):
            if not (root / simple / form).is_file():
                self.write_root = self.repair and not self.dry_run
                action = ("would repair" if self.dry_run else "repaired") if self.repair else ""
                self._record(
                    Problem(Kind.BAD_PAGE, f"{simple}/{form}", None, "root page missing", action)
                )
        for top in (layout.SIMPLE, layout.JSON_DIR, layout.PYPI_DIR):
            try:
                entries = os.scandir(root / top)
            except FileNotFoundError:
                continue
            with entries:
                for entry in entries:
                    path = f"{top}/{entry.name}"
                    if entry.name.startswith("."):
                        self._found(Kind.TEMP, path, None, "temp file")
                    elif entry.name not in self.ledger and (top != layout.SIMPLE or entry.is_dir()):
                        listed_page = Path(entry.path) / layout.V1_JSON_PAGE
                        if top == layout.SIMPLE and not self._add_links(listed_page):
                            self.unreadable_pages = True
                        detail = "not in the ledger: `sync` or `delete` it"
                        self._found(Kind.UNLISTED, path, entry.name, detail)
        self.links.freeze()
        with os.scandir(root) as entries:
            tops = [e.name for e in entries if e.name.startswith(".") and e.name not in _TOP_KEEP]
        for path in [*tops, *walk_files(root, TMP_DIR)]:
            self._found(Kind.TEMP, path, None, "temp file left by an interrupted write")
        for path in walk_files(root, str(layout.PACKAGES)):
            if path.rpartition("/")[2].startswith("."):
                self._found(Kind.TEMP, path, None, "temp file left by an interrupted write")
            elif path not in self.links:
                self._found(Kind.ORPHAN, path, None, "no page links to it")

    async def run(self, restart: bool) -> VerifySummary:
        started = time.monotonic()
        self.ledger, _ = await asyncio.to_thread(load_ledger, self.root)
        names = sorted(self.ledger)
        last, dirty = None, set[str]()
        if self.progress is not None:
            if not restart:
                last, dirty = await asyncio.to_thread(self.progress.load)
            await asyncio.to_thread(self.progress.begin, last is None)
            if last is not None:
                log.info("resuming an interrupted verify after %s", last)
        try:
            complete = await self._pass(names, last, dirty)
            await self._resync_queued()
            if complete:
                skipped = [n for n in names if last is not None and n <= last and n not in dirty]
                await asyncio.to_thread(self._sweep, skipped)
            if self.write_root:
                status = await asyncio.to_thread(read_status, self.root)
                await asyncio.to_thread(record_paths, self.root, ROOT_PAGES)
                await write_root_index(self.storage, self.ledger, status, rewrite=True)
        finally:
            if self.progress is not None:
                await asyncio.to_thread(self.progress.flush)
        if complete and self.progress is not None:
            self.progress.path.unlink(missing_ok=True)
        return VerifySummary(
            projects_checked=self.checked,
            projects_skipped=self.skipped,
            files_checked=self.files,
            bytes_hashed=self.hashed,
            elapsed=time.monotonic() - started,
            quick=self.quick,
            dry_run=self.dry_run,
            complete=complete,
            found=MappingProxyType(dict(self.found)),
            fixed=self.fixed,
            problems=tuple(self.listed),
            exit_code=1 if self.unfixed else 0,
        )

    async def close(self) -> None:
        await asyncio.to_thread(self.pool.shutdown, True, cancel_futures=True)
        if self._own_session and self._session is not None:
            await self._session.close()


async def run_verify(
    config: Config,
    *,
    repair: bool = False,
    delete_orphans: bool = False,
    dry_run: bool = False,
    quick: bool = False,
    restart: bool = False,
    workers: int | None = None,
    limit: int | None = None,
    on_project: Callable[[str], None] | None = None,
    session: aiohttp.ClientSession | None = None,
) -> tuple[int, VerifySummary]:
    """`verify`: every file the project pages link to, against the pages' hashes, under the lock.

    ``repair`` fetches missing and corrupt files again (re-syncing a project when that cannot
    work, or when its page is bad) and removes temp files; ``delete_orphans`` removes files no
    page links to (and temp files); ``dry_run`` writes nothing, not even progress; ``quick``
    checks existence and sizes, no hashing. An interrupted pass resumes from
    ``verify.progress`` unless ``restart``; ``limit`` stops after that many projects (the next
    run goes on). ``on_project`` is called as each project is done. Exit code 0 when nothing is
    left wrong, 1 otherwise. Raises `LockedError` when the lock is held.
    """
    directory = config.mirror.directory
    if not directory.is_dir():
        raise StorageError(str(directory), "no mirror here (the directory does not exist)")
    with MirrorLock(directory):
        verifier = _Verifier(
            config,
            repair=repair,
            delete_orphans=delete_orphans,
            dry_run=dry_run,
            quick=quick,
            workers=workers,
            limit=limit,
            on_project=on_project,
            session=session,
        )
        try:
            summary = await verifier.run(restart)
        finally:
            await verifier.close()
    return summary.exit_code, summary
