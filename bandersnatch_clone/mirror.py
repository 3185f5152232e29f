"""One run against a mirror directory: lock, state, plan, engine, then the commit of the serial."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import aiohttp
from packaging.utils import NormalizedName

from bandersnatch_clone.changes import RecordingStorage, seal, write_run_diff
from bandersnatch_clone.config import Config
from bandersnatch_clone.filters import FilterSet, load_filters
from bandersnatch_clone.listing_scan import scan
from bandersnatch_clone.plan import (
    SyncPlan,
    apply_filters,
    guard_removals,
    plan_allowlist,
    plan_from_changed_rows,
    plan_from_changelog,
    plan_from_listing,
    plan_named,
)
from bandersnatch_clone.retry import RetryPolicy
from bandersnatch_clone.root_index import save_ledger, write_root_index
from bandersnatch_clone.state import (
    GENERATION,
    FilterState,
    Journal,
    Ledger,
    ListingState,
    MirrorLock,
    ensure_generation,
    fold_journal,
    read_filter_state,
    read_ledger,
    read_listing_state,
    read_status,
    write_filter_state,
    write_listing_state,
    write_status,
)
from bandersnatch_clone.storage import Storage
from bandersnatch_clone.storage.filesystem import FilesystemStorage
from bandersnatch_clone.storage.loader import open_storage
from bandersnatch_clone.sync import (
    Engine,
    EngineSettings,
    Reporter,
    RunResult,
)
from bandersnatch_clone.upstream import ListingDocument, Timeouts, Upstream

log = logging.getLogger(__name__)


#: The exit code of a run that did everything but the removals its guard held back.
EXIT_REMOVALS_HELD = 4


@dataclass(slots=True)
class Outcome:
    """What a run did, for the summary and the exit code."""

    serial_before: int
    serial_after: int
    planned: int = 0
    result: RunResult = field(default_factory=RunResult)
    temp_files_removed: int = 0
    #: Paths this run created or changed, in order (for the diff file).
    changed: list[PurePosixPath] = field(default_factory=list)
    #: Removals the guard held back (`plan.guard_removals`).
    removals_held: int = 0

    @property
    def exit_code(self) -> int:
        if self.result.failed or self.result.aborted:
            return 1
        return EXIT_REMOVALS_HELD if self.removals_held else 0


def engine_settings(config: Config, *, guard: bool = False) -> EngineSettings:
    """`guard`: hold 404 removals beyond ``removal_guard`` (a whole-mirror run without
    ``--allow-removals``; a run for named projects removes what it was asked about)."""
    m = config.mirror
    return EngineSettings(
        directory=m.directory,
        metadata_workers=m.metadata_workers,
        download_workers=m.download_workers,
        large_file_workers=m.large_file_workers,
        json=m.json,
        release_files=m.release_files,
        root_uri=m.root_uri or None,
        stop_on_error=m.stop_on_error,
        delete_removed_projects=m.delete_removed_projects,
        removal_guard=m.removal_guard if guard else 1.0,
        cleanup=m.cleanup,
    )


def make_session(config: Config) -> aiohttp.ClientSession:
    m = config.mirror
    connector = aiohttp.TCPConnector(
        limit=m.metadata_workers + m.download_workers + 4, ttl_dns_cache=300
    )
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=m.connect_timeout, sock_read=m.timeout)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=True)


def make_upstream(
    config: Config, session: aiohttp.ClientSession, retry: RetryPolicy | None = None
) -> Upstream:
    m = config.mirror
    return Upstream(
        session,
        m.upstream,
        download_url=m.download_url or None,
        retry=retry or RetryPolicy(attempts=m.retries + 1),
        timeouts=Timeouts(connect=m.connect_timeout, metadata=m.timeout * 4, idle=m.timeout),
        user_agent_extra=m.user_agent_extra or None,
    )


#: However well the listing's counts add up, its whole is diffed against the ledger this often.
FULL_DIFF_EVERY = 24 * 3600.0


async def plan_run(
    config: Config,
    upstream: Upstream,
    ledger: Ledger,
    status: int,
    *,
    refetch_all: bool = False,
    listing: ListingDocument | None = None,
    since: ListingState | None = None,
    rediff: bool = False,
) -> SyncPlan:
    """Ask the upstream what changed since `status` and diff it against the ledger.

    `refetch_all` (the filters changed): every listed project, whatever its serial. `listing`:
    the simple listing when the caller already fetched it. `since`: what the last complete run
    saw, when only the listing rows above `status` need a look (`plan_from_changed_rows`).
    `rediff`: diff the whole listing even if its serial has not moved (removals were held).
    """
    m = config.mirror
    delete = m.delete_removed_projects
    if m.listing == "xmlrpc":
        last = await upstream.changelog_last_serial()
        if status == 0 or refetch_all:
            rows = await upstream.list_packages_with_serial()
            return plan_from_listing(
                ledger, rows, last, delete_removed=delete, refetch_all=refetch_all
            )
        if last <= status:
            return SyncPlan(status, (), ())
        events = await upstream.changelog_since_serial(status)
        target = max([last, *(e.serial for e in events)])
        return plan_from_changelog(ledger, ((e.name, e.serial) for e in events), target)
    if listing is None:
        whole = refetch_all or rediff
        listing = await upstream.listing_document(stop_at=None if whole else status)
    if listing is None:
        # Nothing happened upstream since the last complete run: one request, no 700k-row diff.
        return SyncPlan(status, (), ())
    if since is not None and not refetch_all:
        plan = await asyncio.to_thread(_changed_plan, ledger, listing, status, since, delete)
        if plan is not None:
            return plan
        log.info("projects may have left the listing: diffing all of it against the ledger")
    serial, rows = await listing.rows()
    return plan_from_listing(ledger, rows, serial, delete_removed=delete, refetch_all=refetch_all)


def _changed_plan(
    ledger: Ledger, listing: ListingDocument, status: int, since: ListingState, delete: bool
) -> SyncPlan | None:
    scanned = scan(listing.body, status)
    if scanned is None:
        return None
    changed, listed = scanned
    return plan_from_changed_rows(
        ledger,
        changed,
        listing.serial,
        listed=listed,
        listed_before=since.rows,
        delete_removed=delete,
    )


async def make_plan(
    config: Config,
    upstream: Upstream,
    ledger: Ledger,
    status: int,
    filters: FilterSet,
    filter_state: FilterState,
    names: Sequence[str] | None,
    now: float,
    listing: ListingDocument | None = None,
    since: ListingState | None = None,
    *,
    rediff: bool = False,
    guard: bool = True,
) -> SyncPlan:
    """The run's plan: named projects, the allowlist fast path, or the upstream's changes
    (their removals held back by the guard when too many, unless `guard` is off); then what
    the filters exclude, and projects whose cooldown has run out. Removals the filters ask
    for are the operator's own doing: the guard leaves them alone."""
    if names is not None:
        return apply_filters(plan_named(names), ledger, filters.allows_project)
    if filters.allowlist is not None:
        return plan_allowlist(ledger, filters.allowlist)
    refilter = bool(ledger) and filter_state.fingerprint != filters.fingerprint
    if refilter:
        log.info("the filter configuration changed: every project is filtered again")
    plan = await plan_run(
        config,
        upstream,
        ledger,
        status,
        refetch_all=refilter,
        listing=listing,
        since=since,
        rediff=rediff,
    )
    if guard:
        plan = guard_removals(plan, len(ledger), config.mirror.removal_guard)
    due = [NormalizedName(n) for n, t in filter_state.recheck.items() if t <= now]
    return apply_filters(plan, ledger, filters.allows_project, recheck=due, refilter=refilter)


async def run(
    config: Config,
    *,
    names: Sequence[str] | None = None,
    reporter: Reporter | None = None,
    session: aiohttp.ClientSession | None = None,
    retry: RetryPolicy | None = None,
    now: Callable[[], datetime] | None = None,
    allow_removals: bool = False,
) -> Outcome:
    """`mirror` (names None) or `sync NAME...`: one locked run over the configured directory.
    `allow_removals`: remove what left the upstream, however much (``--allow-removals``)."""
    clock = now or (lambda: datetime.now(UTC))
    # A bad plugin config fails before anything is touched.
    filters = load_filters(config, now=clock)
    # So does a bad [storage] table: checked now, connected under the lock.
    opened = open_storage(config)
    directory = config.mirror.directory
    directory.mkdir(parents=True, exist_ok=True)
    with MirrorLock(directory):
        own_session = session is None
        http = session or make_session(config)
        try:
            async with opened as tree, tree.lock():
                upstream = make_upstream(config, http, retry)
                outcome = await locked_run(
                    config,
                    directory,
                    upstream,
                    filters,
                    names,
                    reporter,
                    clock().timestamp(),
                    tree=tree,
                    allow_removals=allow_removals,
                )
            await asyncio.to_thread(write_run_diff, config.mirror, outcome.changed)
            return outcome
        finally:
            if own_session:
                await http.close()


async def locked_run(
    config: Config,
    directory: Path,
    upstream: Upstream,
    filters: FilterSet,
    names: Sequence[str] | None,
    reporter: Reporter | None,
    now: float | None = None,
    *,
    tree: Storage | None = None,
    allow_removals: bool = False,
) -> Outcome:
    """The body of a run, under a `MirrorLock` the caller already holds (verify --repair
    re-syncs projects through it without letting go of its lock). `tree`: where the tree is
    written (the configured backend, its lock held); None = the directory itself.
    `allow_removals`: carry out removals however many (the guard is off for this run)."""
    tree = FilesystemStorage(directory) if tree is None else tree
    # Every path written or deleted goes to the change log first: what `export` carries.
    storage = RecordingStorage(tree, directory, keep_changed=config.mirror.diff_file is not None)
    temp_removed = await storage.clean_temp()
    if temp_removed:
        log.info("removed %d temporary files left by an interrupted run", temp_removed)
    await asyncio.to_thread(ensure_generation, directory)
    status = await asyncio.to_thread(read_status, directory)
    journal = Journal(directory)
    previous = await asyncio.to_thread(journal.load)
    filter_state = await asyncio.to_thread(read_filter_state, directory)
    now = time.time() if now is None else now
    listing: ListingDocument | None = None
    seen = await asyncio.to_thread(read_listing_state, directory)
    # Removals held back last time are looked at (and reported) again, even if nothing moved.
    rediff = seen is not None and seen.held > 0
    quiet = (
        names is None
        and not rediff
        and previous is None
        and filters.allowlist is None
        and config.mirror.listing == "simple"
        and filter_state.fingerprint == filters.fingerprint
        and not any(t <= now for t in filter_state.recheck.values())
    )
    if quiet:
        # The cron case: ask first, and load nothing (not even the ledger) when nothing moved.
        listing = await upstream.listing_document(stop_at=status)
        if listing is None:
            log.info("nothing to do: the upstream's serial is not above %d", status)
            return Outcome(status, status, temp_files_removed=temp_removed)
    ledger = await asyncio.to_thread(read_ledger, directory)
    if previous is not None:
        fold_journal(ledger, previous)
        # Persist what the interrupted run finished before its journal is replaced.
        await save_ledger(directory, ledger)
        log.info("resuming an interrupted run: %d projects were already done", len(previous.done))
    since = (
        seen
        if seen is not None
        and previous is None
        and not rediff
        and seen.serial == status
        and seen.projects == len(ledger)
        and now - seen.checked < FULL_DIFF_EVERY
        else None
    )
    plan = await make_plan(
        config,
        upstream,
        ledger,
        status,
        filters,
        filter_state,
        names,
        now,
        listing,
        since,
        rediff=rediff,
        guard=not allow_removals,
    )
    outcome = Outcome(status, status, planned=len(plan.fetch) + len(plan.delete))
    outcome.temp_files_removed = temp_removed
    outcome.removals_held = plan.held
    if plan.held:
        log.error(
            "%d projects left the upstream's listing: more than removal_guard = %g of the "
            "mirror's %d, so none is removed this run (a listing cut short must not empty the "
            "mirror). If the upstream really dropped them, run `mirror --allow-removals` once.",
            plan.held,
            config.mirror.removal_guard,
            len(ledger),
        )
    outcome.changed = storage.changed
    # A mirror that held nothing was filtered whole by this run, whatever happens below.
    filters_settled = not ledger or filter_state.fingerprint == filters.fingerprint
    if plan.empty and previous is None and plan.target_serial <= status and filters_settled:
        log.info("nothing to do: upstream serial %d, mirror at %d", plan.target_serial, status)
        return outcome
    if filters_settled and filter_state.fingerprint != filters.fingerprint:
        # Recorded before any project is fetched, so an interrupted first run resumes as one.
        filter_state.fingerprint = filters.fingerprint
        await asyncio.to_thread(write_filter_state, directory, filter_state)
    await asyncio.to_thread(journal.begin, plan.target_serial, len(plan.fetch))
    settings = engine_settings(config, guard=names is None and not allow_removals)
    engine = Engine(settings, storage, upstream, ledger, journal, reporter, filters)
    if previous is not None:
        engine.carry_over(previous.deleted, previous.obsolete)
    try:
        result = await engine.execute(plan)
        outcome.result = result
        outcome.removals_held += result.removals_held
        complete = not result.failed and not result.aborted and names is None
        target = plan.target_serial
        if complete and filters.allowlist is not None:
            # No listing was read: the mirror is at the newest serial of what it holds.
            target = max((e.serial for _, e in ledger.entries()), default=status)
        if result.changed or previous is not None:
            root_serial = target if complete else status
            await write_root_index(storage, ledger, max(root_serial, status))
            await save_ledger(directory, ledger)
        # Only now, with no root index naming them, do removed projects' pages and files go.
        await engine.finish_removals()
        synced = set(result.synced) | set(result.deleted)
        filter_state.recheck = {
            n: t for n, t in filter_state.recheck.items() if n not in synced
        } | engine.recheck
        if complete:
            # Refiltering is done once every project passed the new filters.
            filter_state.fingerprint = filters.fingerprint
        await asyncio.to_thread(write_filter_state, directory, filter_state)
        if names is None:
            # Only a complete run from a listing vouches that the ledger is in step with it.
            checked = since.checked if since is not None and plan.incremental else now
            listed = None
            if complete and plan.listed is not None:
                serial = max(status, target)
                # Held removals (of either kind) make the next run diff the whole listing: the
                # projects kept at their old serials are asked for again.
                held = plan.held + result.removals_held
                listed = ListingState(serial, plan.listed, len(ledger), checked, held)
            await asyncio.to_thread(write_listing_state, directory, listed)
        if complete:
            outcome.serial_after = max(status, target)
            storage.close()
            await asyncio.to_thread(seal, directory, status, outcome.serial_after)
            await publish_status(tree, directory, outcome.serial_after)
            await asyncio.to_thread(write_status, directory, outcome.serial_after)
        journal.remove()
    finally:
        journal.close()
        storage.close()
    return outcome


async def publish_status(tree: Storage, directory: Path, serial: int) -> None:
    """A tree kept apart from the state (an object store) gets copies of ``generation`` and
    ``status``, the latter after everything else: the bucket says which serial it serves. Before
    the local ``status``, so that a crash in between costs a rerun, never a stale copy."""
    if isinstance(tree, FilesystemStorage) and tree.root == directory:
        return  # the same files
    await tree.write_bytes(PurePosixPath("generation"), f"{GENERATION}\n".encode())
    await tree.write_bytes(PurePosixPath("status"), f"{serial}\n".encode())
