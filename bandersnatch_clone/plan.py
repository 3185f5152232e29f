"""Pure planning: (local ledger, upstream serials) -> which projects to fetch, which to delete."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from packaging.utils import NormalizedName, canonicalize_name

from bandersnatch_clone.layout import VALID_NAME as _VALID_NAME
from bandersnatch_clone.model import ListedProject
from bandersnatch_clone.names import canonical_names
from bandersnatch_clone.state import Ledger, LedgerEntry

LedgerView = Mapping[str, LedgerEntry]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PlannedProject:
    #: PEP 503 normalised name.
    name: NormalizedName
    #: The serial the upstream promised; a response older than this is stale. None: unknown.
    serial: int | None
    #: The name as listed upstream (kept for the root index).
    display: str | None = None


@dataclass(frozen=True, slots=True)
class SyncPlan:
    target_serial: int
    fetch: tuple[PlannedProject, ...]
    delete: tuple[str, ...]
    #: How many rows the upstream's listing had, when the plan came from one.
    listed: int | None = None
    #: Whether only the listing's changed rows were looked at (not a diff of all of it).
    incremental: bool = False
    #: Removals the guard held back (`guard_removals`): this run removes none of them.
    held: int = 0

    @property
    def empty(self) -> bool:
        return not self.fetch and not self.delete and not self.held


def _serials(ledger: LedgerView) -> Mapping[str, int]:
    if isinstance(ledger, Ledger):
        return ledger.serials()
    return {name: entry.serial for name, entry in ledger.items()}


def _planned(row: ListedProject, name: str) -> PlannedProject | None:
    if not _VALID_NAME.match(row.name):
        # Not a project name (PEP 508): never fetched, never shown raw to the operator.
        log.warning("ignoring an invalid project name in the listing: %r", row.name)
        return None
    return PlannedProject(NormalizedName(name), row.serial, row.name)


def plan_from_listing(
    ledger: LedgerView,
    listing: Iterable[ListedProject],
    target_serial: int,
    *,
    delete_removed: bool,
    refetch_all: bool = False,
) -> SyncPlan:
    """Diff a full upstream listing against the ledger.

    A project is fetched when it is new or its serial moved; a project in the ledger but absent from
    the listing was removed upstream and is deleted (when `delete_removed`). `refetch_all`
    fetches every listed project whatever its serial (the filters changed).
    """
    rows = list(listing)
    norms = canonical_names([row.name for row in rows])
    known = _serials(ledger)
    fetch = [
        planned
        for row, name in zip(rows, norms, strict=True)
        if (refetch_all or known.get(name, -1) < row.serial)
        and (planned := _planned(row, name)) is not None
    ]
    delete: tuple[str, ...] = ()
    if delete_removed:
        seen = set(norms)
        delete = tuple(sorted(n for n in known if n not in seen))
    return SyncPlan(target_serial, tuple(fetch), delete, listed=len(rows))


def plan_from_changed_rows(
    ledger: LedgerView,
    changed: Iterable[ListedProject],
    target_serial: int,
    *,
    listed: int,
    listed_before: int,
    delete_removed: bool,
) -> SyncPlan | None:
    """The plan from only the listing rows whose serial is above the mirror's, or None when
    projects may have been removed upstream and the whole listing must be diffed.

    Sound after a complete run at the mirror's serial, when the ledger holds no project that
    listing lacked (which `listed_before` rows had): every project listed then is in step, so
    only rows above that serial can need fetching. Removals change no serial in the listing, so
    they are counted instead: of the rows now, at most those changed and not in the ledger are
    new, so ``listed_before - listed + new`` bounds the removed from above; nonzero, diff all.
    """
    fetch: list[PlannedProject] = []
    new = 0
    for row in changed:
        name = canonicalize_name(row.name)
        entry = ledger.get(name)
        if entry is None:
            new += 1
        if entry is None or entry.serial < row.serial:
            planned = _planned(row, name)
            if planned is not None:
                fetch.append(planned)
    if delete_removed and listed_before - listed + new != 0:
        return None
    return SyncPlan(target_serial, tuple(fetch), (), listed=listed, incremental=True)


def plan_from_changelog(
    ledger: LedgerView, changed: Iterable[tuple[str, int]], target_serial: int
) -> SyncPlan:
    """Projects named by changelog events since the last run, each with its newest serial.

    Removals show up as a 404 when the project is fetched, so nothing is planned for deletion here.
    """
    newest: dict[NormalizedName, tuple[int, str]] = {}
    for raw, serial in changed:
        if not _VALID_NAME.match(raw):
            log.warning("ignoring an invalid project name in the changelog: %r", raw)
            continue
        name = canonicalize_name(raw)
        if name not in newest or newest[name][0] < serial:
            newest[name] = (serial, raw)
    fetch = tuple(
        PlannedProject(name, serial, raw)
        for name, (serial, raw) in sorted(newest.items())
        if name not in ledger or ledger[name].serial < serial
    )
    return SyncPlan(target_serial, fetch, ())


def plan_named(names: Iterable[str]) -> SyncPlan:
    """`sync NAME...`: fetch exactly these projects now, whatever their serial."""
    unique = dict.fromkeys(canonicalize_name(n) for n in names)
    return SyncPlan(0, tuple(PlannedProject(n, None) for n in unique), ())


#: Up to this many removals never trip the guard, so a small mirror is not held up by a few.
GUARD_FLOOR = 10


def guard_removals(plan: SyncPlan, mirrored: int, share: float) -> SyncPlan:
    """`plan` without its removals when they are more than `share` of the `mirrored` projects
    (and more than `GUARD_FLOOR`); `held` then says how many.

    A listing cut short by a proxy, or an upstream that lost most of its projects for an
    hour, must not empty the mirror: removals that big wait for an operator. ``share >= 1``
    turns the guard off.
    """
    if removals_allowed(len(plan.delete), mirrored, share):
        return plan
    return replace(plan, delete=(), held=len(plan.delete))


def removals_allowed(count: int, mirrored: int, share: float) -> bool:
    """Whether one run may remove `count` of the `mirrored` projects for the upstream's sake:
    at most `share` of them, or at most `GUARD_FLOOR`; ``share >= 1`` allows any number."""
    return share >= 1 or count <= max(GUARD_FLOOR, share * mirrored)


def apply_filters(
    plan: SyncPlan,
    ledger: LedgerView,
    allows: Callable[[NormalizedName], bool],
    *,
    recheck: Iterable[NormalizedName] = (),
    refilter: bool = False,
) -> SyncPlan:
    """Drop what project filters exclude before any request; add projects due a recheck.

    With `refilter` (the filter configuration changed) local projects the filters now
    exclude are deleted too.
    """
    fetch = [p for p in plan.fetch if allows(p.name)]
    planned = {p.name for p in fetch}
    fetch += [PlannedProject(n, None) for n in recheck if n not in planned and allows(n)]
    delete = set(plan.delete)
    if refilter:
        delete.update(n for n in ledger if not allows(NormalizedName(n)))
    return replace(plan, fetch=tuple(fetch), delete=tuple(sorted(delete)))


def plan_allowlist(ledger: LedgerView, allowlist: Iterable[NormalizedName]) -> SyncPlan:
    """The allowlist fast path: ask only about the listed projects (no listing, no changelog);
    local projects outside the list go. The serial is taken from what was fetched."""
    names = sorted(set(allowlist))
    keep = set(names)
    delete = tuple(sorted(n for n in ledger if n not in keep))
    return SyncPlan(0, tuple(PlannedProject(n, None) for n in names), delete)
