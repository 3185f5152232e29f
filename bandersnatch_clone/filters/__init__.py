"""Filter plugins: load the enabled ones and apply them to projects (pure, no I/O).

The engine builds one `FilterSet` per run with `load_filters` and asks it, in order:

1. `FilterSet.allows_project(name)` for each listed project, before any request (project
   filters); `FilterSet.allowlist`, when set, is the only names that can pass;
2. `FilterSet.filter_project(detail, info)` on each fetched project page: metadata filters
   (whole project), then release filters (each version with its files), then release-file
   filters (one file). It returns the page with the surviving files, or None when nothing of
   the project is left to mirror.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from packaging.utils import NormalizedName

from bandersnatch_clone.config import Config
from bandersnatch_clone.filters.base import (
    GROUPS,
    Info,
    MetadataFilter,
    Plugin,
    PluginContext,
    ProjectFilter,
    Release,
    ReleaseFileFilter,
    ReleaseFilter,
)
from bandersnatch_clone.filters.distfiles import group_releases, version_key
from bandersnatch_clone.filters.loader import discover, instantiate
from bandersnatch_clone.model import DistFile, ProjectDetail

__all__ = [
    "GROUPS",
    "FilterSet",
    "MetadataFilter",
    "Plugin",
    "PluginContext",
    "ProjectFilter",
    "Release",
    "ReleaseFileFilter",
    "ReleaseFilter",
    "discover",
    "load_filters",
]

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _jsonable(value: object) -> object:
    """Read-only tables (mapping proxies) and TOML dates, for the fingerprint's JSON."""
    return dict(value) if isinstance(value, Mapping) else str(value)


@dataclass(frozen=True, slots=True)
class FilterSet:
    """The enabled filters of a run, by stage, in the order ``[plugins] enabled`` lists them."""

    project_filters: tuple[ProjectFilter, ...] = ()
    metadata_filters: tuple[MetadataFilter, ...] = ()
    release_filters: tuple[ReleaseFilter, ...] = ()
    file_filters: tuple[ReleaseFileFilter, ...] = ()
    #: sha256 of everything the filters decide by (enabled names, their tables, the files they
    #: read). When it differs from the last run's, every project must be filtered again.
    fingerprint: str = ""

    @property
    def plugins(self) -> tuple[Plugin, ...]:
        return (
            *self.project_filters,
            *self.metadata_filters,
            *self.release_filters,
            *self.file_filters,
        )

    @property
    def needs_metadata(self) -> bool:
        """True when some filter reads the JSON API ``info``: the engine then fetches
        ``/pypi/<name>/json`` for each project and passes its ``info`` to `filter_project`."""
        return any(p.needs_metadata for p in self.plugins)

    @property
    def allowlist(self) -> frozenset[NormalizedName] | None:
        """When allowlists decide the project set: exactly the names `allows_project` passes
        (the intersection of the allowlists, less what the other project filters drop)."""
        lists = [names for f in self.project_filters if (names := f.allowlist()) is not None]
        if not lists:
            return None
        names = frozenset.intersection(*lists)
        return frozenset(n for n in names if self.allows_project(n))

    def allows_project(self, name: NormalizedName) -> bool:
        """False when a project filter drops the project (before any request for it)."""
        return all(f.allow(name) for f in self.project_filters)

    def describe(self) -> list[str]:
        """One line per enabled filter, for the logs."""
        return [p.describe() for p in self.plugins]

    def filter_project(self, detail: ProjectDetail, info: Info | None) -> ProjectDetail | None:
        """The project page with only the surviving files (and versions), or None when the
        project is dropped: a metadata filter rejects it, or filters removed every file."""
        if not all(f.allow(detail, info) for f in self.metadata_filters):
            return None
        if not self.release_filters and not self.file_filters:
            return detail
        releases, unplaced = group_releases(detail.name, detail.versions, detail.files, info)
        if self.release_filters:
            kept = self._kept_versions(detail.name, releases)
            releases = [r for r in releases if r.version in kept]
            if unplaced:
                # A release filter cannot judge a file whose version its name does not tell.
                log.debug("%s: dropping files of unknown version: %s", detail.name, unplaced)
            unplaced = []
        survivors: dict[str, DistFile] = {}
        for release in releases:
            for file in release.files:
                if all(f.allow(file, release) for f in self.file_filters):
                    survivors[file.filename] = file
        if unplaced:
            orphan = Release(detail.name, "", (), None, info)
            for file in unplaced:
                if all(f.allow(file, orphan) for f in self.file_filters):
                    survivors[file.filename] = file
        return self._rebuild(detail, releases, survivors)

    def changes_at(self, detail: ProjectDetail) -> datetime | None:
        """The earliest moment time alone changes what `filter_project` keeps of ``detail`` (a
        file held back by ``cooldown`` becomes old enough), or None. Call it with the page as
        fetched; the engine should sync the project again then, serial moved or not."""
        moments = [
            moment
            for plugin in self.file_filters
            for file in detail.files
            if (moment := plugin.changes_at(file)) is not None
        ]
        return min(moments, default=None)

    def _kept_versions(self, project: NormalizedName, releases: list[Release]) -> set[str]:
        pinning = [f for f in self.release_filters if f.pins(project)]
        active = pinning[:1] or list(self.release_filters)
        kept = {r.version for r in releases}
        # Per-version filters first (their order does not matter), then the ones that look
        # at the whole list ("latest N"), in the order enabled, on what is left.
        ordered = [f for f in active if not f.sees_all_versions]
        ordered += [f for f in active if f.sees_all_versions]
        for plugin in ordered:
            remaining: Sequence[Release] = [r for r in releases if r.version in kept]
            chosen: Collection[str] = plugin.select(remaining)
            kept &= set(chosen)
        return kept

    @staticmethod
    def _rebuild(
        detail: ProjectDetail, releases: list[Release], survivors: Mapping[str, DistFile]
    ) -> ProjectDetail | None:
        # A version stays listed while it passed the release filters and, if it had files,
        # still has one: the page's versions and files must tell the same story.
        alive = {
            version_key(r.version)
            for r in releases
            if not r.files or any(f.filename in survivors for f in r.files)
        }
        versions = tuple(v for v in detail.versions if version_key(v) in alive)
        if len(survivors) == len(detail.files) and len(versions) == len(detail.versions):
            return detail  # nothing removed
        emptied = not survivors if detail.files else bool(detail.versions) and not versions
        if emptied:
            return None  # nothing left to mirror: no empty page
        files = tuple(f for f in detail.files if f.filename in survivors)
        return replace(detail, files=files, versions=versions)


def load_filters(config: Config, *, now: Callable[[], datetime] = _utcnow) -> FilterSet:
    """Build the filters ``[plugins] enabled`` names from the installed entry points.

    Raises `PluginError` (exit 2) for an unknown plugin, one that cannot be imported, or a
    bad option, naming the plugin and the key. Requirements files are read here, once.
    """
    context = PluginContext(tables=config.plugin_sections, base=config.path.parent, now=now)
    available = discover()
    plugins = [instantiate(name, available, context) for name in config.plugins_enabled]
    read = {t for p in plugins for t in (type(p).section, *type(p).extra_sections)}
    for table in sorted(set(config.plugin_sections) - read):
        log.warning("%s: table [%s] is not read by any enabled plugin", config.path, table)
    inputs = {
        "enabled": list(config.plugins_enabled),
        "tables": {
            t: config.plugin_sections[t] for t in sorted(read & set(config.plugin_sections))
        },
        "plugins": [p.fingerprint() for p in plugins],
    }
    canonical = json.dumps(inputs, sort_keys=True, default=_jsonable, separators=(",", ":"))
    filters = FilterSet(
        project_filters=tuple(p for p in plugins if isinstance(p, ProjectFilter)),
        metadata_filters=tuple(p for p in plugins if isinstance(p, MetadataFilter)),
        release_filters=tuple(p for p in plugins if isinstance(p, ReleaseFilter)),
        file_filters=tuple(p for p in plugins if isinstance(p, ReleaseFileFilter)),
        fingerprint=hashlib.sha256(canonical.encode()).hexdigest(),
    )
    for line in filters.describe():
        log.info("filter %s", line)
    return filters
