"""The filter plugin contract: one base class per stage, the records they see, their context.

A plugin is a class registered under one of four entry-point groups, one per stage::

    bandersnatch_clone.project_filters.v1       ProjectFilter      allow(name)
    bandersnatch_clone.metadata_filters.v1      MetadataFilter     allow(detail, info)
    bandersnatch_clone.release_filters.v1       ReleaseFilter      filter(release), select(...)
    bandersnatch_clone.release_file_filters.v1  ReleaseFileFilter  allow(file, release)

The entry point's name is the plugin's name (what ``[plugins] enabled`` lists) and must equal the
class's ``name``. The class is built once per run from its own config table with
``from_config(section)``; it keeps what it needs on the instance (no globals, no shared state)
and must be pure: the same input gives the same answer, and nothing touches the network.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, Self

from packaging.utils import NormalizedName
from packaging.version import InvalidVersion, Version

from bandersnatch_clone.model import DistFile, ProjectDetail

#: A project's ``info`` object from the JSON API (``/pypi/<name>/json``), read-only.
Info = Mapping[str, object]

_EMPTY: Mapping[str, object] = MappingProxyType({})


def parse_version(text: str) -> Version | None:
    """``text`` as a PEP 440 version, or None when it is not one (legacy versions exist)."""
    try:
        return Version(text)
    except InvalidVersion:
        return None


def parse_upload_time(text: str | None) -> datetime | None:
    """PEP 700 ``upload-time`` (``yyyy-mm-ddThh:mm:ss[.ffffff]Z``) as an aware datetime."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Release:
    """One version of a project with the files that carry it, as release filters see it."""

    project: NormalizedName
    #: The version as the upstream wrote it (PEP 700 ``versions`` entry, else from a filename).
    version: str
    #: The files of this version (possibly none: a version may have no files left upstream).
    files: tuple[DistFile, ...] = ()
    #: ``version`` parsed; None for a legacy (non PEP 440) version string.
    parsed: Version | None = None
    #: The JSON API ``info`` when the engine fetched it (some filter set ``needs_metadata``).
    info: Info | None = None

    @property
    def upload_time(self) -> datetime | None:
        """When the release appeared: its earliest file's PEP 700 ``upload-time``."""
        times = [t for t in (parse_upload_time(f.upload_time) for f in self.files) if t]
        return min(times) if times else None


@dataclass(frozen=True, slots=True)
class PluginContext:
    """What the loader hands `Plugin.from_context`: every config table, read-only."""

    #: Every top-level table of the config file except ``[mirror]`` and ``[plugins]``.
    tables: Mapping[str, Mapping[str, object]] = field(default_factory=lambda: _EMPTY_TABLES)
    #: Folder that relative paths in plugin options resolve against (the config file's).
    base: Path = field(default_factory=Path.cwd)
    #: The clock; plugins that compare with "now" call it per decision, never cache it.
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def table(self, name: str) -> Mapping[str, object]:
        """The table ``[name]``, or an empty mapping when the file has none."""
        return self.tables.get(name, _EMPTY)


_EMPTY_TABLES: Mapping[str, Mapping[str, object]] = MappingProxyType({})


class Plugin:
    """What every filter plugin has, whatever its stage."""

    #: The plugin's name: what ``[plugins] enabled`` lists and the entry point is called.
    name: ClassVar[str]
    #: The config table the plugin reads its options from, e.g. ``"latest_release"``.
    section: ClassVar[str]
    #: Other tables ``from_context`` reads besides ``section`` (e.g. ``("allowlist",)``).
    extra_sections: ClassVar[tuple[str, ...]] = ()
    #: True when the plugin needs the JSON API ``info`` (the engine then fetches
    #: ``/pypi/<name>/json`` for every project). An instance may set it from its options.
    needs_metadata: bool = False

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        """Build the plugin from its table; raise `PluginError` naming any bad or unknown key.

        ``section`` is read-only: arrays are tuples, tables mappings. A missing table is empty.
        """
        raise NotImplementedError(f"{cls.__name__} must implement from_config")

    @classmethod
    def from_context(cls, context: PluginContext) -> Self:
        """What the loader calls. Override only to read more than the own table (another
        table, the config file's folder, the clock); the default is ``from_config``."""
        return cls.from_config(context.table(cls.section))

    def describe(self) -> str:
        """One line for the logs saying what the plugin will do with its options."""
        return self.name

    def fingerprint(self) -> str:
        """What, besides its config table, the plugin's decisions depend on (the contents of
        files it read, say), as text; "" when nothing. A change of the filter set's
        fingerprint makes the engine filter every project again."""
        return ""


class ProjectFilter(Plugin):
    """Decides on a project by name alone, before any request is made for it."""

    def allow(self, name: NormalizedName) -> bool:
        """False drops the project (and removes it from the mirror if it is there)."""
        raise NotImplementedError

    def allowlist(self) -> frozenset[NormalizedName] | None:
        """The only names this filter can allow, when it is a closed list (else None).

        When allowlist filters are enabled the engine asks the upstream only about these.
        """
        return None


class MetadataFilter(Plugin):
    """Decides on a whole project from its page (and its JSON API ``info`` if needed)."""

    def allow(self, detail: ProjectDetail, info: Info | None) -> bool:
        """False drops the project. ``info`` is None unless ``needs_metadata`` is set."""
        raise NotImplementedError


class ReleaseFilter(Plugin):
    """Decides which versions of a project are mirrored (with all their files)."""

    #: True for filters whose answer depends on the other versions (``latest_release``):
    #: they run after the per-version filters and see only the versions those kept.
    sees_all_versions: ClassVar[bool] = False

    def filter(self, release: Release) -> bool:
        """Per-version decision: False drops this version. Default: keep."""
        return True

    def select(self, releases: Sequence[Release]) -> Collection[str]:
        """List-level decision: the ``version`` strings to keep out of ``releases``.

        Override this (and set ``sees_all_versions``) for filters such as "latest N"; the
        default keeps what `filter` keeps.
        """
        return {r.version for r in releases if self.filter(r)}

    def pins(self, project: NormalizedName) -> bool:
        """True when this filter alone decides the project's versions (a pinned requirement):
        the other release filters are then skipped for it. Default: False."""
        return False


class ReleaseFileFilter(Plugin):
    """Decides on one file at a time."""

    def allow(self, file: DistFile, release: Release) -> bool:
        """False drops the file; ``release`` is the version it belongs to (for context)."""
        raise NotImplementedError

    def changes_at(self, file: DistFile) -> datetime | None:
        """When the answer for ``file`` will change by time passing alone (a file held back
        until it is old enough), or None. The engine revisits the project then."""
        return None


#: The four entry-point groups, by stage, with the base class a plugin of that stage extends.
GROUPS: Mapping[str, type[Plugin]] = MappingProxyType(
    {
        "bandersnatch_clone.project_filters.v1": ProjectFilter,
        "bandersnatch_clone.metadata_filters.v1": MetadataFilter,
        "bandersnatch_clone.release_filters.v1": ReleaseFilter,
        "bandersnatch_clone.release_file_filters.v1": ReleaseFileFilter,
    }
)
