"""`verify`: every linked file against its page, orphans, temp leftovers; repair; resumable.

This module runs a pass over the ledger's projects, repairs, sweeps and reports; reading the tree
(a local directory on threads, or any `Storage` such as an object store) is `scan`'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import TYPE_CHECKING

from bandersnatch_clone import layout
from bandersnatch_clone.changes import ROOT_PAGES, record_paths
from bandersnatch_clone.config import Config
from bandersnatch_clone.errors import MirrorError, ProjectNotFound, StorageError
from bandersnatch_clone.filters import load_filters
from bandersnatch_clone.root_index import write_root_index
from bandersnatch_clone.scan import (
    Check,
    Kind,
    LocalScanner,
    Problem,
    Scanner,
    StoreScanner,
    default_workers,
    walk_files,
)
from bandersnatch_clone.state import Ledger, load_ledger, read_status
from bandersnatch_clone.storage import Storage
from bandersnatch_clone.storage.filesystem import TMP_DIR, FilesystemStorage
from bandersnatch_clone.storage.loader import held_tree
from bandersnatch_clone.verify_records import LinkSet, ProgressFile, VerifySummary

if TYPE_CHECKING:
    # Only a repair talks to the upstream: aiohttp and the engine are imported then, which
    # keeps a plain verify's start-up to what hashing needs.
    import aiohttp

    from bandersnatch_clone.upstream import Upstream

log = logging.getLogger(__name__)

#: Problems kept in the summary; every one is logged as it is found.
MAX_LISTED = 1000
# Projects per check job.
_CHUNK = 8
#: Pages whose links a resumed pass's sweep reads per job; files deleted per request.
_LINK_BATCH, _DELETE_BATCH = 256, 1000
_TOP_KEEP = {".lock", TMP_DIR}


class _Verifier:
    """One verify run over a locked mirror: the state in its directory, the tree in `storage`."""

    def __init__(
        self,
        config: Config,
        storage: Storage,
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
        self.root = config.mirror.directory
        self.storage = storage
        #: The state directory's own files (its temp leftovers), whatever holds the tree.
        self.local = FilesystemStorage(self.root)
        self.scanner: Scanner
        if isinstance(storage, FilesystemStorage) and storage.root == self.root:
            # The fast path: local files hashed on threads.
            self.workers = workers or default_workers()
            self.scanner = LocalScanner(self.root, self.root_uri, quick=quick, workers=self.workers)
        else:
            self.workers = workers or config.mirror.download_workers
            self.scanner = StoreScanner(storage, self.root_uri, quick=quick, workers=self.workers)
        self.repair, self.delete_orphans, self.dry_run = repair, delete_orphans, dry_run
        self.quick, self.limit, self.on_project = quick, limit, on_project
        mode = "quick" if quick else "full"
        self.progress = None if dry_run else ProgressFile(self.root, mode)
        self.ledger = Ledger()
        self.links = LinkSet()
        self.found: Counter[str] = Counter()
        self.listed: list[Problem] = []
        self.fixed = self.unfixed = self.checked = self.skipped = self.files = self.hashed = 0
        self.write_root = self.unreadable_pages = False
        #: Projects to re-sync in full after the pass, with what their check found.
        self.resync: dict[str, Check] = {}
        #: Problems whose fix is a deletion, waiting for a batch: in the tree, in the state dir.
        self._doomed: list[Problem] = []
        self._doomed_local: list[Problem] = []
        self._session, self._own_session = session, session is None

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

    async def _finish(self, check: Check) -> None:
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

    async def _account(self, check: Check, *, counted: bool) -> None:
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

    async def _repair(self, check: Check) -> Check:
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

    async def _recheck(self, check: Check, action: str) -> Check:
        """Check a repaired project again: what is gone is fixed by `action`, the rest is not."""
        (again,) = await self.scanner.check([check.name])
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
        from bandersnatch_clone import mirror

        if self._session is None:
            self._session = mirror.make_session(self.config)
        return mirror.make_upstream(self.config, self._session)

    async def _refetch(self, check: Check) -> bool:
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
            sink = await self.storage.open_temp(path, sha256=link.sha256)
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
        from bandersnatch_clone import mirror

        upstream = await self._upstream()
        filters = load_filters(self.config)
        names = list(self.resync)
        # mirror's run body under the lock this process already holds: `sync NAME...` exactly.
        outcome = await mirror.locked_run(
            self.config, self.root, upstream, filters, names, None, tree=self.storage
        )
        self.ledger, _ = await asyncio.to_thread(load_ledger, self.root)
        for name, check in self.resync.items():
            if name in outcome.result.failed:
                failed = f"repair failed: {outcome.result.failed[name]}"
                check.problems = [dataclasses.replace(p, action=failed) for p in check.problems]
            elif name not in self.ledger:  # a 404 upstream, or filters exclude it now
                gone = [dataclasses.replace(p, action="removed by re-sync") for p in check.problems]
                check = Check(name, gone, files=check.files, hashed=check.hashed)
            else:
                check = await self._recheck(check, "resynced")
            await self._account(check, counted=True)

    # -- the pass, the sweep, the run ----------------------------------------------------------

    async def _pass(self, names: list[str], last: str | None, dirty: set[str]) -> bool:
        """Check projects in ledger order, a window of chunks at once; True when all were.

        On an error or a cancellation, what is in flight is dropped: the progress file holds
        only projects whose every result was recorded."""
        window: deque[asyncio.Task[list[Check]]] = deque()
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
                    window.append(asyncio.create_task(self.scanner.check(chunk)))
                    chunk = []
                if len(window) > 2 * self.workers:
                    await self._finish_chunk(window)
            if chunk:
                window.append(asyncio.create_task(self.scanner.check(chunk)))
            while window:
                await self._finish_chunk(window)
            return complete
        finally:
            for task in window:
                task.cancel()
            await asyncio.gather(*window, return_exceptions=True)

    async def _finish_chunk(self, window: deque[asyncio.Task[list[Check]]]) -> None:
        for check in await window[0]:
            await self._finish(check)
        window.popleft()

    # -- the sweep -----------------------------------------------------------------------------

    def _add_links(self, links: list[str] | None) -> bool:
        if links is None:
            self.unreadable_pages = True
            return False
        for link in links:
            self.links.add(link)
        return True

    async def _found(
        self, kind: Kind, path: str, project: str | None, detail: str, *, local: bool = False
    ) -> None:
        """Record a problem of the sweep; one whose action is a deletion waits for a batch
        (``local``: a file of the state directory, not of the tree)."""
        problem = Problem(kind, path, project, detail, self._act(kind))
        if problem.action != "delete":
            self._record(problem)
            return
        doomed = self._doomed_local if local else self._doomed
        doomed.append(problem)
        if len(doomed) >= _DELETE_BATCH:
            await self._delete(doomed, local=local)

    async def _delete(self, doomed: list[Problem], *, local: bool) -> None:
        """Delete a batch (one request per 1000 on an object store), then record it."""
        batch = list(doomed)
        doomed.clear()
        if not batch:
            return
        storage = self.local if local else self.storage
        try:
            # The change log hears of a deleted orphan first: the next `export` carries it.
            orphans = [PurePosixPath(p.path) for p in batch if p.kind is Kind.ORPHAN]
            if orphans:
                await asyncio.to_thread(record_paths, self.root, orphans)
            await storage.delete_many(PurePosixPath(p.path) for p in batch)
            action = "deleted"
        except StorageError as e:
            action = f"delete failed: {e.problem}"
        for problem in batch:
            self._record(dataclasses.replace(problem, action=action))

    def _state_leftovers(self) -> list[str]:
        """Temp files in the state directory: dot-files (a torn atomic write) and ``.tmp/``
        (the filesystem backend's downloads). Blocking."""
        with os.scandir(self.root) as entries:
            tops = [e.name for e in entries if e.name.startswith(".") and e.name not in _TOP_KEEP]
        return [*tops, *walk_files(self.root, TMP_DIR)]

    async def _sweep_top(self, top: PurePosixPath) -> None:
        """What sits directly in web/simple, web/json or web/pypi: temp files, and pages or
        JSON copies of projects the ledger does not know (whose links count as links)."""
        reported: set[str] = set()  # a store may list a name more than once
        async for name, folder in self.scanner.entries(str(top)):
            path = f"{top}/{name}"
            unlisted = name not in self.ledger and (top != layout.SIMPLE or folder)
            if path in reported or not (name.startswith(".") or unlisted):
                continue
            reported.add(path)
            if name.startswith("."):
                await self._found(Kind.TEMP, path, None, "temp file")
                continue
            if top == layout.SIMPLE:
                page = f"{path}/{layout.V1_JSON_PAGE}"
                self._add_links((await self.scanner.links([page]))[0])
            detail = "not in the ledger: `sync` or `delete` it"
            await self._found(Kind.UNLISTED, path, name, detail)

    async def _sweep(self, skipped: list[str]) -> None:
        """After a complete pass: root index, unlisted projects, temp files, orphans."""
        simple = str(layout.SIMPLE)
        for start in range(0, len(skipped), _LINK_BATCH):
            # Verified by an earlier run: only their links are needed now.
            names = skipped[start : start + _LINK_BATCH]
            pages = [f"{simple}/{name}/{layout.V1_JSON_PAGE}" for name in names]
            for name, page, links in zip(
                names, pages, await self.scanner.links(pages), strict=True
            ):
                if not self._add_links(links):
                    self._record(
                        Problem(Kind.BAD_PAGE, page, name, "page unreadable since checked")
                    )
        for form in (layout.HTML_PAGE, layout.V1_HTML_PAGE, layout.V1_JSON_PAGE):
            if not await self.scanner.exists(f"{simple}/{form}"):
                self.write_root = self.repair and not self.dry_run
                action = ("would repair" if self.dry_run else "repaired") if self.repair else ""
                self._record(
                    Problem(Kind.BAD_PAGE, f"{simple}/{form}", None, "root page missing", action)
                )
        for top in (layout.SIMPLE, layout.JSON_DIR, layout.PYPI_DIR):
            await self._sweep_top(top)
        self.links.freeze()
        for path in await asyncio.to_thread(self._state_leftovers):
            detail = "temp file left by an interrupted write"
            await self._found(Kind.TEMP, path, None, detail, local=True)
        async for path in self.scanner.files(str(layout.PACKAGES)):
            if path.rpartition("/")[2].startswith("."):
                await self._found(Kind.TEMP, path, None, "temp file left by an interrupted write")
            elif path not in self.links:
                await self._found(Kind.ORPHAN, path, None, "no page links to it")
        await self._delete(self._doomed_local, local=True)
        await self._delete(self._doomed, local=False)

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
                await self._sweep(skipped)
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
        await self.scanner.close()
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
    checks existence and sizes (and on an object store the sha256 recorded at upload), no
    hashing. An interrupted pass resumes from ``verify.progress`` unless ``restart``; ``limit``
    stops after that many projects (the next run goes on). ``on_project`` is called as each
    project is done. The tree is read from the configured storage backend, whose lock is held
    too (an object store's, like `mirror`). Exit code 0 when nothing is left wrong, 1
    otherwise. Raises `LockedError` when a lock is held.
    """
    async with held_tree(config) as storage:
        verifier = _Verifier(
            config,
            storage,
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
