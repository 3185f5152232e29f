"""Built-in release filters: which versions of a project are mirrored, with all their files."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Self

from packaging.requirements import Requirement
from packaging.utils import NormalizedName
from packaging.version import Version

from bandersnatch_clone.filters.base import PluginContext, Release, ReleaseFilter, parse_version
from bandersnatch_clone.filters.options import Options, names_of
from bandersnatch_clone.filters.projects import ALLOWLIST_KEYS, BLOCKLIST_KEYS, FILTER_REGEX_KEYS
from bandersnatch_clone.filters.requirements import load_requirements


def _by_name(requirements: Iterable[Requirement]) -> dict[str, list[Requirement]]:
    grouped: dict[str, list[Requirement]] = {}
    for requirement in requirements:
        grouped.setdefault(requirement.name, []).append(requirement)
    return grouped


class AllowlistRelease(ReleaseFilter):
    """Keep only the versions that ``[allowlist] packages`` specifiers allow.

    A listed name without a specifier keeps every version; a project the list does not name
    keeps none (as in bandersnatch: enable ``allowlist_project`` with it). A legacy
    (non PEP 440) version never matches.
    """

    name = "allowlist_release"
    section = "allowlist"

    def __init__(self, requirements: Iterable[Requirement]) -> None:
        self.requirements = _by_name(requirements)

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        options = Options(cls.name, cls.section, section, ALLOWLIST_KEYS)
        return cls(options.requirements("packages"))

    def filter(self, release: Release) -> bool:
        listed = self.requirements.get(release.project, ())
        version = release.parsed
        return version is not None and any(version in r.specifier for r in listed)

    def describe(self) -> str:
        pinned = [str(r) for rs in self.requirements.values() for r in rs if r.specifier]
        return f"{self.name}: versions of listed projects within {pinned or 'any version'}"


class ProjectRequirementsPinned(AllowlistRelease):
    """Keep only the versions the requirements files allow (``foo==1.2``, ``bar>=2``).

    For a project whose requirement has a specifier the other release filters are skipped:
    the pinned versions are mirrored even if, say, ``latest_release`` would drop them.
    """

    name = "project_requirements_pinned"

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        return cls.from_context(PluginContext(tables={cls.section: section}))

    @classmethod
    def from_context(cls, context: PluginContext) -> Self:
        options = Options(cls.name, cls.section, context.table(cls.section), ALLOWLIST_KEYS)
        return cls(load_requirements(options, context.base))

    def pins(self, project: NormalizedName) -> bool:
        return any(r.specifier for r in self.requirements.get(project, ()))

    def fingerprint(self) -> str:
        return " ".join(sorted(str(r) for rs in self.requirements.values() for r in rs))

    def describe(self) -> str:
        names = names_of(r for rs in self.requirements.values() for r in rs if r.specifier)
        return f"{self.name}: {len(names)} projects pinned by the requirements files"


class BlocklistRelease(ReleaseFilter):
    """Drop the versions that ``[blocklist] packages`` specifiers match (``foo>=1.4,<1.9``).

    A bare name matches every version of that project. Pre-releases inside a range are
    matched too.
    """

    name = "blocklist_release"
    section = "blocklist"

    def __init__(self, requirements: Iterable[Requirement]) -> None:
        self.requirements = _by_name(requirements)

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        options = Options(cls.name, cls.section, section, BLOCKLIST_KEYS)
        return cls(options.requirements("packages"))

    def filter(self, release: Release) -> bool:
        version = release.parsed
        if version is None:
            return True
        return not any(version in r.specifier for r in self.requirements.get(release.project, ()))

    def describe(self) -> str:
        listed = [str(r) for rs in self.requirements.values() for r in rs]
        return f"{self.name}: drop {listed}"


class RegexRelease(ReleaseFilter):
    """Drop the versions matching (``re.match``) one of ``[filter_regex] releases``."""

    name = "regex_release"
    section = "filter_regex"

    def __init__(self, patterns: tuple[re.Pattern[str], ...]) -> None:
        self.patterns = patterns

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        options = Options(cls.name, cls.section, section, FILTER_REGEX_KEYS)
        return cls(options.patterns("releases"))

    def filter(self, release: Release) -> bool:
        return not any(p.match(release.version) for p in self.patterns)

    def describe(self) -> str:
        return f"{self.name}: drop versions matching {[p.pattern for p in self.patterns]}"


class PrereleaseRelease(ReleaseFilter):
    """Drop pre-releases and development releases (PEP 440 ``Version.is_prerelease``).

    ``[filter_prerelease] packages``, when given, limits this to the projects it names.
    """

    name = "prerelease_release"
    section = "filter_prerelease"

    def __init__(self, only: frozenset[NormalizedName]) -> None:
        self.only = only

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        options = Options(cls.name, cls.section, section, ("packages",))
        return cls(names_of(options.requirements("packages")))

    def filter(self, release: Release) -> bool:
        if self.only and release.project not in self.only:
            return True
        return release.parsed is None or not release.parsed.is_prerelease

    def describe(self) -> str:
        where = f" of {sorted(self.only)}" if self.only else ""
        return f"{self.name}: drop pre-releases{where}"


class LatestRelease(ReleaseFilter):
    """Keep the ``keep`` newest versions, by PEP 440 order or by upload time (``sort_by``).

    The project's current version (JSON API ``info.version`` when fetched; else the highest
    final release) is always kept, in place of the last of the N. ``keep = 0`` keeps all.
    Runs after the per-version filters, on the versions they kept.
    """

    name = "latest_release"
    section = "latest_release"
    sees_all_versions = True

    def __init__(self, keep: int, sort_by: str) -> None:
        self.keep = keep
        self.sort_by = sort_by

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        options = Options(cls.name, cls.section, section, ("keep", "sort_by"))
        return cls(
            options.integer("keep", 0), options.choice("sort_by", ("version", "time"), "version")
        )

    def select(self, releases: Sequence[Release]) -> Collection[str]:
        if self.keep == 0 or len(releases) <= self.keep:
            return {r.version for r in releases}
        ordered = sorted(releases, key=self._sort_key, reverse=True)
        kept = [r.version for r in ordered[: self.keep]]
        current = _current_version(releases)
        if current is not None and current not in kept:
            kept[-1] = current
        return set(kept)

    def _sort_key(self, release: Release) -> tuple[int, object]:
        if self.sort_by == "time":
            moment = release.upload_time
            return (0, 0.0) if moment is None else (1, moment.timestamp())
        # Legacy versions sort below every PEP 440 version.
        return (0, Version("0")) if release.parsed is None else (1, release.parsed)

    def describe(self) -> str:
        return f"{self.name}: keep the {self.keep} newest versions by {self.sort_by}"


def _current_version(releases: Sequence[Release]) -> str | None:
    """What PyPI calls the project's version: ``info.version``, else the highest final
    release that still has a file not yanked, else None."""
    info = releases[0].info if releases else None
    if info is not None and isinstance(info.get("version"), str):
        wanted = parse_version(str(info["version"]))
        for release in releases:
            if release.version == info["version"] or (wanted and release.parsed == wanted):
                return release.version
        return None
    finals = [
        r
        for r in releases
        if r.parsed is not None
        and not r.parsed.is_prerelease
        and any(f.yanked is None for f in r.files)
    ]
    return max(finals, key=lambda r: r.parsed or Version("0")).version if finals else None


class UploadedAfterRelease(ReleaseFilter):
    """Keep only versions first uploaded at or after ``[uploaded_after] date``.

    A version with no upload time (no files, or an upstream without PEP 700) is kept.
    """

    name = "uploaded_after_release"
    section = "uploaded_after"

    def __init__(self, after: datetime | None) -> None:
        self.after = after

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        options = Options(cls.name, cls.section, section, ("date",))
        after = options.moment("date")
        if after is None:
            raise options.error("date", "missing: the date from which releases are kept")
        return cls(after)

    def filter(self, release: Release) -> bool:
        moment = release.upload_time
        return self.after is None or moment is None or moment >= self.after

    def describe(self) -> str:
        return f"{self.name}: versions uploaded since {self.after}"
