"""`delete NAME...`: remove projects: from the ledger and root index first, then pages and files."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from humanfriendly import format_size
from packaging.utils import NormalizedName

from bandersnatch_clone import layout
from bandersnatch_clone.changes import ROOT_PAGES, record_paths
from bandersnatch_clone.config import Config
from bandersnatch_clone.errors import UnsafePath
from bandersnatch_clone.root_index import save_ledger, write_root_index
from bandersnatch_clone.state import (
    Journal,
    JournalState,
    Ledger,
    load_ledger,
    read_status,
)
from bandersnatch_clone.storage import Storage
from bandersnatch_clone.storage.loader import held_tree

log = logging.getLogger(__name__)

_PAGES = (layout.V1_JSON_PAGE, layout.V1_HTML_PAGE, layout.HTML_PAGE)
#: Files looked up at once (a HEAD each on an object store).
_LOOKUPS = 32


@dataclass(frozen=True, slots=True)
class DeleteSummary:
    """What `run_delete` removed (or, with ``dry_run``, would remove)."""

    #: Normalised names of the projects removed, in the order given.
    deleted: tuple[str, ...]
    #: Names as given that match no project here -> why.
    unknown: Mapping[str, str]
    #: Files under ``web/`` removed (pages, JSON copies, distribution and ``.metadata`` files).
    files_removed: int
    bytes_removed: int
    dry_run: bool
    exit_code: int

    def render_text(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        lines = [
            f"{verb} {len(self.deleted):,} projects: {self.files_removed:,} files, "
            f"{format_size(self.bytes_removed)}"
        ]
        lines += [f"  {name}" for name in self.deleted]
        if self.unknown:
            lines.append(f"{len(self.unknown):,} names not found:")
            lines += [f"  {name}: {why}" for name, why in self.unknown.items()]
        lines.append(f"exit code {self.exit_code}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {
                "deleted": list(self.deleted),
                "unknown": dict(self.unknown),
                "files_removed": self.files_removed,
                "bytes_removed": self.bytes_removed,
                "dry_run": self.dry_run,
                "exit_code": self.exit_code,
            },
            indent=2,
        )


def _rewrite_journal(directory: Path, pending: JournalState) -> None:
    """The interrupted run's journal without its ``done`` lines, now in the saved ledger (left
    in, they would bring a deleted project back). Its pending removals stay for `mirror`."""
    journal = Journal(directory)
    journal.begin(pending.target_serial, pending.planned)
    try:
        for name in sorted(pending.deleted):
            journal.deleted(name)
        for name, path in pending.obsolete:
            journal.obsolete(name, PurePosixPath(path))
    finally:
        journal.close()


async def _commit(
    directory: Path, storage: Storage, ledger: Ledger, pending: JournalState | None
) -> None:
    """Root index (at the status serial) from the ledger, then the ledger, then the journal."""
    status = await asyncio.to_thread(read_status, directory)
    await write_root_index(storage, ledger, status)
    await save_ledger(directory, ledger)
    if pending is not None:
        await asyncio.to_thread(_rewrite_journal, directory, pending)


async def project_paths(
    storage: Storage, name: NormalizedName, root_uri: str | None
) -> dict[PurePosixPath, int]:
    """Every existing file of a project -> its size, in removal order: pages (so nothing links to
    the files any more), JSON API copies, then the files its JSON page links to."""
    page_dir = layout.project_dir(name)
    candidates = [page_dir / page for page in _PAGES] + list(layout.json_paths(name))
    body = await storage.read_bytes(page_dir / layout.V1_JSON_PAGE)
    if body is not None:
        candidates += layout.linked_paths(body, root_uri)
    candidates = list(dict.fromkeys(candidates))
    found: dict[PurePosixPath, int] = {}
    for start in range(0, len(candidates), _LOOKUPS):
        group = candidates[start : start + _LOOKUPS]
        sizes = await asyncio.gather(*(storage.size(path) for path in group))
        found.update(
            (path, size) for path, size in zip(group, sizes, strict=True) if size is not None
        )
    return found


async def run_delete(
    config: Config, names: Sequence[str], *, dry_run: bool = False
) -> tuple[int, DeleteSummary]:
    """`delete NAME...`: remove the named projects, under the mirror's lock.

    Names are normalised (PEP 503). A name that matches neither a ledger entry nor pages in the
    tree is reported (exit 1) and the others are still deleted. Order: the ledger and the root
    index stop naming the projects first, then their pages go, then their files, so a reader
    never follows a link to something already removed. The tree is the configured storage
    backend's (an object store's lock is held too). A project the upstream still lists comes
    back at the next `mirror` unless a filter excludes it. Raises `LockedError` when a lock is
    held.
    """
    async with held_tree(config) as storage:
        doomed, unknown = await _delete(config, storage, names, dry_run)
    for raw, why in unknown.items():
        log.warning("%s: %s", raw, why)
    summary = DeleteSummary(
        deleted=tuple(doomed),
        unknown=MappingProxyType(unknown),
        files_removed=sum(len(p) for p in doomed.values()),
        bytes_removed=sum(sum(p.values()) for p in doomed.values()),
        dry_run=dry_run,
        exit_code=1 if unknown else 0,
    )
    return summary.exit_code, summary


async def _delete(
    config: Config, storage: Storage, names: Sequence[str], dry_run: bool
) -> tuple[dict[NormalizedName, dict[PurePosixPath, int]], dict[str, str]]:
    """(the projects deleted -> their files and sizes, names not found -> why), locked."""
    directory = config.mirror.directory
    ledger, pending = await asyncio.to_thread(load_ledger, directory)
    root_uri = config.mirror.root_uri or None
    doomed: dict[NormalizedName, dict[PurePosixPath, int]] = {}
    unknown: dict[str, str] = {}
    for raw in names:
        try:
            name = layout.normalize(raw)
        except UnsafePath:
            unknown[raw] = "not a valid project name"
            continue
        if name in doomed:
            continue
        paths = await project_paths(storage, name, root_uri)
        if name not in ledger and not paths:
            unknown[raw] = "no such project in this mirror"
            continue
        doomed[name] = paths
    if doomed and not dry_run:
        # The change log hears of it first, so the next `export` carries the deletions.
        gone = [path for paths in doomed.values() for path in paths]
        await asyncio.to_thread(record_paths, directory, [*ROOT_PAGES, *gone])
        for name in doomed:
            ledger.pop(name, None)
        await _commit(directory, storage, ledger, pending)
        for name, paths in doomed.items():
            # Pages and JSON copies first, then (one request per 1000 on an object store)
            # the files nothing links to any more.
            await storage.delete_many(p for p in paths if not p.is_relative_to(layout.PACKAGES))
            await storage.delete_many(p for p in paths if p.is_relative_to(layout.PACKAGES))
            log.info("%s: deleted (%d files)", name, len(paths))
    return doomed, unknown
