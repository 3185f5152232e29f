"""The sync engine: plan, fetch, place files, write pages, commit the serial, in that order.

Visibility order (DESIGN.md section 6): a project's files are in place before its pages; every
project page before the root index; the root index before ``status``. A reader therefore never
sees a link to a missing file, and a crash at any instant leaves a tree that serves only complete,
verified files. Finished projects are journalled as they finish, so a rerun resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from packaging.utils import NormalizedName

from bandersnatch_clone import layout
from bandersnatch_clone.errors import (
    MirrorError,
    ProjectNotFound,
    StorageError,
    UnsafePath,
    UpstreamUnavailable,
)
from bandersnatch_clone.filters import FilterSet
from bandersnatch_clone.model import DistFile, ProjectStatus
from bandersnatch_clone.parse import LegacyProject
from bandersnatch_clone.plan import PlannedProject, SyncPlan, removals_allowed
from bandersnatch_clone.render import filter_legacy_json, project_pages
from bandersnatch_clone.state import Journal, Ledger, LedgerEntry
from bandersnatch_clone.storage import Storage

if TYPE_CHECKING:
    from bandersnatch_clone.upstream import Upstream

log = logging.getLogger(__name__)

#: Files this size and up are paced by bandwidth rather than by round trips (see
#: `EngineSettings.large_file_workers`).
LARGE_FILE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """The part of the configuration the engine acts on."""

    directory: Path
    metadata_workers: int = 16
    download_workers: int = 48
    #: Of the downloads, how many may be files of `LARGE_FILE` bytes or more at once.
    large_file_workers: int = 16
    json: bool = False
    release_files: bool = True
    root_uri: str | None = None
    stop_on_error: bool = False
    delete_removed_projects: bool = True
    #: The share of the mirror's projects that may answer 404 in one run and be removed for
    #: it; more, and the run removes none of them (`RunResult.removals_held`). 1: no limit.
    removal_guard: float = 1.0
    cleanup: bool = True


class Reporter(Protocol):
    """What the engine tells the operator; the CLI passes a live `progress.Progress`."""

    def start(self, total_projects: int, /) -> None: ...
    def file_done(self, size: int, /) -> None: ...
    def project_done(self, name: str, files: int, size: int, /) -> None: ...
    def project_failed(self, name: str, reason: str, /) -> None: ...


class _Silent:
    def start(self, total_projects: int, /) -> None:
        pass

    def file_done(self, size: int, /) -> None:
        pass

    def project_done(self, name: str, files: int, size: int, /) -> None:
        pass

    def project_failed(self, name: str, reason: str, /) -> None:
        log.warning("%s: failed: %s", name, reason)


@dataclass(slots=True)
class RunResult:
    synced: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    #: Projects not mirrored because filters exclude them (and that were not here before).
    skipped: int = 0
    files: int = 0
    bytes: int = 0
    aborted: str | None = None
    #: Mirrored projects the upstream answered 404 for, more than `removal_guard` allows: kept.
    removals_held: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.synced or self.deleted)


class Engine:
    """Runs one `SyncPlan` against one storage, one upstream and one ledger."""

    def __init__(
        self,
        settings: EngineSettings,
        storage: Storage,
        upstream: Upstream,
        ledger: Ledger,
        journal: Journal,
        reporter: Reporter | None = None,
        filters: FilterSet | None = None,
    ) -> None:
        self.settings = settings
        self.filters = filters or FilterSet()
        #: Projects whose filtered page changes with time alone (cooldown): name -> when.
        self.recheck: dict[str, float] = {}
        #: Projects taken off the mirror this run (name -> why): pages removed at the end.
        self.removed: dict[str, str] = {}
        #: Files of removed projects, and obsolete files an interrupted run journalled: each
        #: removed at the end unless its project's current page links it again.
        self.obsolete: list[tuple[str, PurePosixPath]] = []
        self.storage = storage
        self.upstream = upstream
        self.ledger = ledger
        self.journal = journal
        self.reporter: Reporter = reporter or _Silent()
        self.result = RunResult()
        self._metadata_slots = asyncio.Semaphore(settings.metadata_workers)
        self._download_slots = asyncio.Semaphore(settings.download_workers)
        self._large_slots = asyncio.Semaphore(settings.large_file_workers)
        self._stop = False
        #: Mirrored projects the upstream answered 404 for: removed at the end of the run, or
        #: all kept when they are too many (`removal_guard`).
        self.not_found: list[NormalizedName] = []
        self._mirrored = len(ledger)

    # -- the run ----------------------------------------------------------------------------

    async def execute(self, plan: SyncPlan) -> RunResult:
        self.reporter.start(len(plan.fetch))
        items: Iterator[PlannedProject] = iter(plan.fetch)
        # Enough projects in flight to keep both the metadata and the download slots busy.
        width = self.settings.metadata_workers + self.settings.download_workers
        workers = [self._worker(items) for _ in range(min(width, len(plan.fetch)))]
        await asyncio.gather(*workers)
        if not self._stop:
            await self._settle_not_found()
            for name in plan.delete:
                await self.delete_project(name)
        return self.result

    async def _settle_not_found(self) -> None:
        """Remove the mirrored projects the upstream answered 404 for, unless they are more than
        `removal_guard` allows: an upstream (or a proxy) that answers 404 for every page must
        not empty the mirror at the pace its projects change."""
        gone, self.not_found = self.not_found, []
        if removals_allowed(len(gone), self._mirrored, self.settings.removal_guard):
            for name in sorted(gone):
                await self.delete_project(name, "removed upstream")
            return
        self.result.removals_held = len(gone)
        log.error(
            "the upstream answered 404 for %d of the mirror's %d projects: more than "
            "removal_guard = %g, so none is removed this run (an upstream or proxy failing every "
            "page must not empty the mirror); they are asked for again next run. If the upstream "
            "really dropped them, run `mirror --allow-removals` once.",
            len(gone),
            self._mirrored,
            self.settings.removal_guard,
        )

    async def _worker(self, items: Iterator[PlannedProject]) -> None:
        for item in items:
            if self._stop:
                return
            try:
                await self.sync_project(item)
            except StorageError as e:
                # A full or read-only disk fails every project alike: stop at once, say why.
                self._fail(item.name, str(e))
                self.result.aborted = str(e)
                self._stop = True
            except MirrorError as e:
                self._fail(item.name, str(e))
                if self.settings.stop_on_error:
                    self.result.aborted = f"stop_on_error: {item.name} failed"
                    self._stop = True

    def _fail(self, name: str, reason: str) -> None:
        self.result.failed[name] = reason
        self.reporter.project_failed(name, reason)

    # -- one project ------------------------------------------------------------------------

    async def sync_project(self, item: PlannedProject) -> None:
        name = item.name
        if not self.filters.allows_project(name):
            await self._drop(name, "excluded by a project filter")
            return
        async with self._metadata_slots:
            try:
                fetched = await self.upstream.project(name, item.serial)
            except ProjectNotFound:
                if not self.settings.delete_removed_projects:
                    log.info("%s: not found upstream; kept (delete_removed_projects = false)", name)
                elif self.settings.removal_guard < 1 and name in self.ledger:
                    self.not_found.append(name)  # decided at the end (`_settle_not_found`)
                else:
                    await self._drop(name, "removed upstream")
                return
            want_legacy = self.settings.json or self.filters.needs_metadata
            legacy = await self._legacy_json(name, item.serial) if want_legacy else None
        detail = self.filters.filter_project(fetched, legacy.info if legacy else None)
        when = self.filters.changes_at(fetched)
        if when is not None:
            self.recheck[name] = when.timestamp()
        if detail is None:
            await self._drop(name, "every file excluded by filters")
            return
        offered = () if detail.status is ProjectStatus.QUARANTINED else detail.files
        placed, downloaded = await self._place_files(name, offered)
        local = replace(detail, name=name, files=tuple(placed))
        page_dir = layout.project_dir(local.name)
        old_page = await self.storage.read_bytes(page_dir / layout.V1_JSON_PAGE)
        pages = project_pages(local)
        obsolete: list[PurePosixPath] = []
        if old_page is not None and self.settings.cleanup:
            keep = set(layout.linked_paths(pages[layout.V1_JSON_PAGE], self.settings.root_uri))
            obsolete = [
                p for p in layout.linked_paths(old_page, self.settings.root_uri) if p not in keep
            ]
            # Journalled before the old page (the only record of them) is replaced, so a crash
            # in between cannot leave them on disk for ever.
            for path in obsolete:
                self.journal.obsolete(name, path)
        writes = [(page_dir / page, body) for page, body in pages.items()]
        stale: list[PurePosixPath] = []
        if self.settings.json:
            raw = None
            if legacy is not None:
                # Filters apply to the JSON API copy too: it lists only what the pages list.
                kept = {f.filename for f in detail.files}
                raw = legacy.raw if detail is fetched else filter_legacy_json(legacy.raw, kept)
            if raw is None:
                stale = list(layout.json_paths(local.name))
            else:
                writes += [(path, raw) for path in layout.json_paths(local.name)]
        # One batch: for pages of a few KiB a thread hop each was the cost, not the bytes.
        await self.storage.write_many(writes)
        for path in stale:
            await self.storage.delete(path)
        for path in obsolete:
            await self.storage.delete(path)
        display = item.display or (self.ledger[name].display if name in self.ledger else None)
        size = sum(f.size or 0 for f in placed)
        entry = LedgerEntry(detail.serial, len(placed), size, display)
        self.ledger[name] = entry
        self.journal.done(name, entry)
        self.result.synced.append(name)
        self.reporter.project_done(name, downloaded[0], downloaded[1])

    async def _legacy_json(self, name: str, serial: int | None) -> LegacyProject | None:
        """The JSON API document; None when PyPI has none (a project with no releases 404s
        there while its simple page answers 200 with no files)."""
        try:
            return await self.upstream.legacy_json(name, serial)
        except ProjectNotFound:
            return None

    async def _place_files(
        self, name: str, files: tuple[DistFile, ...]
    ) -> tuple[list[DistFile], tuple[int, int]]:
        """Download what is missing, files of one project in parallel.

        Returns the page's file list and (files, bytes) downloaded for it.
        """
        jobs: dict[PurePosixPath, DistFile] = {}
        for f in files:
            try:
                path = layout.file_path(f.url, f.filename, f.sha256)
            except UnsafePath as e:
                log.warning("%s: skipping file: %s", name, e)
                continue
            if f.sha256 is None:
                log.warning("%s: skipping %s: upstream gives no sha256", name, f.filename)
                continue
            jobs.setdefault(path, f)
        if not self.settings.release_files:
            return list(jobs.values()), (0, 0)
        # What is already here, in one look: a changed project with thousands of files would
        # otherwise cost two thread hops (or HEADs) per file before the first download.
        looks = list(jobs)
        looks += [layout.metadata_path(p) for p, f in jobs.items() if f.core_metadata is not None]
        have = dict(zip(looks, await self.storage.sizes(looks), strict=True))
        results = await asyncio.gather(
            *(self._place_file(path, f, have) for path, f in jobs.items()), return_exceptions=True
        )
        placed: list[DistFile] = []
        count = size = 0
        for result in results:
            if isinstance(result, BaseException):
                raise result
            placed.append(result[0])
            if result[1] is not None:
                count, size = count + 1, size + result[1]
        return placed, (count, size)

    async def _place_file(
        self, path: PurePosixPath, f: DistFile, have: Mapping[PurePosixPath, int | None]
    ) -> tuple[DistFile, int | None]:
        """Make sure one file (and its ``.metadata``, fetched alongside rather than after it:
        on a slow link each request costs a round trip) is in place; returns its page entry
        and the bytes downloaded. `have` holds the sizes found on disk."""
        (written, have_size), core_metadata = await asyncio.gather(
            self._download_file(path, f, have[path]),
            self._place_metadata(path, f, have.get(layout.metadata_path(path)) is not None),
        )
        link = layout.page_link(path, self.settings.root_uri)
        # PEP 700 makes size mandatory; an upstream on api-version 1.0 may not give it.
        size = f.size if f.size is not None else (written if written is not None else have_size)
        return replace(f, url=link, core_metadata=core_metadata, size=size), written

    async def _download_file(
        self, path: PurePosixPath, f: DistFile, have: int | None
    ) -> tuple[int | None, int | None]:
        """(bytes downloaded or None when the file was already here, size found on disk)."""
        assert f.sha256 is not None
        if have is not None and (f.size is None or have == f.size):
            return None, have
        # A large file waits for its own slot before it takes a download slot, so the small
        # files queued behind it keep every download slot it does not use.
        large = f.size is not None and f.size >= LARGE_FILE
        async with self._large_slots if large else contextlib.nullcontext(), self._download_slots:
            # Path and digest up front: an object store streams straight to the final key.
            sink = await self.storage.open_temp(path, sha256=f.sha256)
            try:
                written = await self.upstream.download(f.url, f.sha256, sink, f.size)
                await sink.commit(path)
            except BaseException:
                await sink.abort()
                raise
        self.result.files += 1
        self.result.bytes += written
        self.reporter.file_done(written)
        return written, have

    async def _place_metadata(
        self, path: PurePosixPath, f: DistFile, present: bool
    ) -> dict[str, str] | None:
        """PEP 658/714: mirror ``<file>.metadata`` byte for byte when the upstream offers it
        (unless `present`: already on disk)."""
        if f.core_metadata is None:
            return None
        expected = f.core_metadata.get("sha256")
        mpath = layout.metadata_path(path)
        if not present:
            try:
                async with self._download_slots:
                    body = await self.upstream.fetch_bytes(f.url + ".metadata", expected)
            except UpstreamUnavailable as e:
                if e.status not in (404, 410):
                    raise  # transient: the project fails and the next run tries again
                # Offered but not there: leave it out of our page rather than fail the project.
                log.warning("%s: core metadata not mirrored: %s", f.filename, e)
                return None
            await self.storage.write_bytes(mpath, body)
        return dict(f.core_metadata)

    # -- removal and the root index ---------------------------------------------------------

    async def _drop(self, name: NormalizedName, why: str) -> None:
        """A project that must not be (or no longer be) on the mirror."""
        page = layout.project_dir(name) / layout.V1_JSON_PAGE
        if name in self.ledger or await self.storage.size(page) is not None:
            await self.delete_project(name, why)
        else:
            log.debug("%s: skipped: %s", name, why)
            self.result.skipped += 1

    async def delete_project(self, name: str, why: str = "removed upstream") -> None:
        """Take a project off the mirror: out of the ledger now (so the root index written at
        the end of the run no longer names it); its pages and files go in `finish_removals`,
        after that root index, so no reader follows a link to something already removed."""
        name = layout.normalize(name)
        old_page = await self.storage.read_bytes(layout.project_dir(name) / layout.V1_JSON_PAGE)
        for path in layout.linked_paths(old_page or b"", self.settings.root_uri):
            self.journal.obsolete(name, path)
            self.obsolete.append((name, path))
        self.ledger.pop(name, None)
        self.journal.deleted(name)
        self.removed[name] = why
        self.result.deleted.append(name)
        log.info("%s: deleted (%s)", name, why)

    def carry_over(self, deleted: Iterable[str], obsolete: Iterable[tuple[str, str]]) -> None:
        """Removals an interrupted run journalled but may not have finished."""
        for name in deleted:
            if name not in self.ledger:
                self.removed.setdefault(name, "removal left by an interrupted run")
                self.journal.deleted(name)
        for name, path in obsolete:
            self.journal.obsolete(name, PurePosixPath(path))
            self.obsolete.append((name, PurePosixPath(path)))

    async def finish_removals(self) -> None:
        """Remove the pages of deleted projects, then every journalled obsolete file that no
        current page links to. Call after the root index is written. In batches: one request
        per 1000 paths on an object store."""
        pages: list[PurePosixPath] = []
        for name in self.removed:
            page_dir = layout.project_dir(NormalizedName(name))
            for page_name in (layout.V1_JSON_PAGE, layout.V1_HTML_PAGE, layout.HTML_PAGE):
                pages.append(page_dir / page_name)
            pages += layout.json_paths(NormalizedName(name))
        if pages:
            await self.storage.delete_many(pages)
        linked: dict[str, set[PurePosixPath]] = {}
        doomed: list[PurePosixPath] = []
        for name, path in self.obsolete:
            if name not in linked:
                current = await self.storage.read_bytes(
                    layout.project_dir(NormalizedName(name)) / layout.V1_JSON_PAGE
                )
                linked[name] = set(layout.linked_paths(current or b"", self.settings.root_uri))
            if path not in linked[name]:
                doomed.append(path)
        if doomed:
            await self.storage.delete_many(doomed)
