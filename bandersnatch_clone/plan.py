"""Pure planning: (local ledger, upstream serials) -> which projects to fetch, which to delete."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from packaging.utils import NormalizedName, canonicalize_name

from bandersnatch_clone.layout import VALID_NAME as _VALID_NAME
from bandersnatch_clone.model import ListedProject
from bandersnatch_clone.state import Ledger

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

    @property
    def empty(self) -> bool:
        return not self.fetch and not self.delete


def plan_from_listing(
    ledger: Ledger,
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
    fetch: list[PlannedProject] = []
    seen: set[str] = set()
    for row in listing:
        if not _VALID_NAME.match(row.name):
            # Not a project name (PEP 508): never fetched, never shown raw to the operator.
            log.warning("ignoring an invalid project name in the listing: %r", row.name)
            continue
        name = canonicalize_name(row.name)
        seen.add(name)
        entry = ledger.get(name)
        if refetch_all or entry is None or entry.serial < row.serial:
            fetch.append(PlannedProject(name, row.serial, row.name))
    delete = tuple(sorted(n for n in ledger if n not in seen)) if delete_removed else ()
    return SyncPlan(target_serial, tuple(fetch), delete)


def plan_from_changelog(
    ledger: Ledger, changed: Iterable[tuple[str, int]], target_serial: int
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


def apply_filters(
    plan: SyncPlan,
    ledger: Ledger,
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
    return SyncPlan(plan.target_serial, tuple(fetch), tuple(sorted(delete)))


def plan_allowlist(ledger: Ledger, allowlist: Iterable[NormalizedName]) -> SyncPlan:
    """The allowlist fast path: ask only about the listed projects (no listing, no changelog);
    local projects outside the list go. The serial is taken from what was fetched."""
    names = sorted(set(allowlist))
    keep = set(names)
    delete = tuple(sorted(n for n in ledger if n not in keep))
    return SyncPlan(0, tuple(PlannedProject(n, None) for n in names), delete)
