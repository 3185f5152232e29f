"""Built-in filters on metadata fields: regular expressions, version ranges, project size.

``regex_*_metadata`` and ``version_range_*_metadata`` tables map a *key* to values. A key is
``[tag:...]path``: the path is dotted into PyPI's JSON API document (``info.classifiers``,
``release_file.packagetype``); the tags say how to match (bandersnatch's):

- ``any`` (default) a value matches some pattern; ``all`` every value matches every pattern;
  ``none`` no value matches any pattern (regex filters only);
- ``match-null`` (default) a missing or null field passes; ``not-null`` it fails.

Every key must pass for the project (or file) to be kept.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import NormalizedName
from packaging.version import Version

from bandersnatch_clone.filters.base import (
    Info,
    MetadataFilter,
    PluginContext,
    Release,
    ReleaseFileFilter,
    parse_version,
)
from bandersnatch_clone.filters.distfiles import release_file_view
from bandersnatch_clone.filters.options import Options, names_of
from bandersnatch_clone.filters.projects import ALLOWLIST_KEYS
from bandersnatch_clone.model import DistFile, ProjectDetail

log = logging.getLogger(__name__)

_MODES = ("any", "all", "none")
_NULLS = ("match-null", "not-null")


@dataclass(frozen=True, slots=True)
class _Key:
    """One parsed key: where to look and how to match."""

    text: str
    path: tuple[str, ...]
    mode: str
    nulls_match: bool


def _parse_key(options: Options, key: str, roots: tuple[str, ...], modes: tuple[str, ...]) -> _Key:
    *tags, path = key.split(":")
    mode, nulls_match = "any", True
    for tag in tags:
        if tag in modes:
            mode = tag
        elif tag in _NULLS:
            nulls_match = tag == "match-null"
        else:
            allowed = ", ".join((*modes, *_NULLS))
            raise options.error(key, f"unknown tag {tag!r}; tags are {allowed}")
    parts = tuple(path.split("."))
    if parts[0] not in roots or not all(parts):
        raise options.error(key, f"the path must start with one of {', '.join(roots)}")
    return _Key(key, parts, mode, nulls_match)


def _values(document: Mapping[str, object], path: tuple[str, ...]) -> list[str]:
    """The field's values as text: [] when missing or null, each item of an array."""
    node: object = document
    for part in path:
        if not isinstance(node, Mapping) or node.get(part) is None:
            return []
        node = node[part]
    items = node if isinstance(node, list | tuple) else [node]
    return [str(v) for v in items if v is not None and not isinstance(v, Mapping)]


class _RegexMatcher:
    """The ``regex_*_metadata`` rule set (shared by the project and the file stage)."""

    def __init__(self, options: Options, roots: tuple[str, ...]) -> None:
        self.rules = [
            (_parse_key(options, key, roots, _MODES), options.patterns(key))
            for key in options.table
        ]

    def accepts(self, document: Mapping[str, object]) -> bool:
        return all(self._accepts(key, patterns, document) for key, patterns in self.rules)

    @staticmethod
    def _accepts(
        key: _Key, patterns: tuple[re.Pattern[str], ...], doc: Mapping[str, object]
    ) -> bool:
        values = _values(doc, key.path)
        if not values:
            # Nothing to match: the null rule decides, whatever the mode.
            return key.nulls_match
        if key.mode == "all":
            return all(p.match(v) for p in patterns for v in values)
        hit = any(p.match(v) for p in patterns for v in values)
        return not hit if key.mode == "none" else hit

    @property
    def needs_info(self) -> bool:
        return any(key.path[0] == "info" for key, _ in self.rules)


class _RangeMatcher:
    """The ``version_range_*_metadata`` rule set: the field holds a specifier
    (``info.requires_python``), the table lists versions; a key passes when the specifier
    contains at least one of them."""

    def __init__(self, options: Options, roots: tuple[str, ...]) -> None:
        self.rules: list[tuple[_Key, tuple[Version, ...]]] = []
        for key in options.table:
            versions = []
            for text in options.strings(key):
                version = parse_version(text)
                if version is None:
                    raise options.error(key, f"not a PEP 440 version: {text!r}")
                versions.append(version)
            self.rules.append((_parse_key(options, key, roots, ()), tuple(versions)))

    def accepts(self, document: Mapping[str, object]) -> bool:
        for key, versions in self.rules:
            values = _values(document, key.path)
            if not values or not values[0].strip():
                if key.nulls_match:
                    continue
                return False
            try:
                spec = SpecifierSet(values[0])
            except InvalidSpecifier:
                log.debug("%s: %r is not a specifier; not filtered on it", key.text, values[0])
                continue
            if not any(spec.contains(v, prereleases=True) for v in versions):
                return False
        return True

    @property
    def needs_info(self) -> bool:
        return any(key.path[0] == "info" for key, _ in self.rules)


def _project_document(detail: ProjectDetail, info: Info | None) -> Mapping[str, object]:
    return {"info": info or {}, "last_serial": detail.serial}


def _file_document(file: DistFile, release: Release) -> Mapping[str, object]:
    return {
        "info": release.info or {},
        "release": release.version,
        "release_file": release_file_view(file, release),
    }


class RegexProjectMetadata(MetadataFilter):
    """Keep only projects whose JSON API fields match ``[regex_project_metadata]``."""

    name = "regex_project_metadata"
    section = "regex_project_metadata"

    def __init__(self, matcher: _RegexMatcher) -> None:
        self.matcher = matcher
        self.needs_metadata = matcher.needs_info

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        options = Options(cls.name, cls.section, section, tuple(section))
        return cls(_RegexMatcher(options, ("info", "last_serial")))

    def allow(self, detail: ProjectDetail, info: Info | None) -> bool:
        return self.matcher.accepts(_project_document(detail, info))

    def describe(self) -> str:
        return f"{self.name}: {[key.text for key, _ in self.matcher.rules]}"


class VersionRangeProjectMetadata(MetadataFilter):
    """Keep only projects whose specifier fields (``info.requires_python``) contain one of the
    versions ``[version_range_project_metadata]`` lists."""

    name = "version_range_project_metadata"
    section = "version_range_project_metadata"

    def __init__(self, matcher: _RangeMatcher) -> None:
        self.matcher = matcher
        self.needs_metadata = matcher.needs_info

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        options = Options(cls.name, cls.section, section, tuple(section))
        return cls(_RangeMatcher(options, ("info",)))

    def allow(self, detail: ProjectDetail, info: Info | None) -> bool:
        return self.matcher.accepts(_project_document(detail, info))

    def describe(self) -> str:
        return f"{self.name}: {[key.text for key, _ in self.matcher.rules]}"


class RegexReleaseFileMetadata(ReleaseFileFilter):
    """Keep only files whose fields match ``[regex_release_file_metadata]`` (paths under
    ``release_file.``, ``release`` or ``info.``)."""

    name = "regex_release_file_metadata"
    section = "regex_release_file_metadata"

    def __init__(self, matcher: _RegexMatcher) -> None:
        self.matcher = matcher
        self.needs_metadata = matcher.needs_info

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        options = Options(cls.name, cls.section, section, tuple(section))
        return cls(_RegexMatcher(options, ("release_file", "release", "info")))

    def allow(self, file: DistFile, release: Release) -> bool:
        return self.matcher.accepts(_file_document(file, release))

    def describe(self) -> str:
        return f"{self.name}: {[key.text for key, _ in self.matcher.rules]}"


class VersionRangeReleaseFileMetadata(ReleaseFileFilter):
    """Keep only files whose specifier fields (``release_file.requires_python``) contain one
    of the versions ``[version_range_release_file_metadata]`` lists."""

    name = "version_range_release_file_metadata"
    section = "version_range_release_file_metadata"

    def __init__(self, matcher: _RangeMatcher) -> None:
        self.matcher = matcher
        self.needs_metadata = matcher.needs_info

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        options = Options(cls.name, cls.section, section, tuple(section))
        return cls(_RangeMatcher(options, ("release_file", "info")))

    def allow(self, file: DistFile, release: Release) -> bool:
        return self.matcher.accepts(_file_document(file, release))

    def describe(self) -> str:
        return f"{self.name}: {[key.text for key, _ in self.matcher.rules]}"


class SizeProjectMetadata(MetadataFilter):
    """Drop projects whose files add up to more than ``[size_project_metadata]
    max_package_size`` bytes (``"1G"`` works); projects ``[allowlist] packages`` names are
    exempt. Sizes come from the project page (PEP 700), so no extra request is made."""

    name = "size_project_metadata"
    section = "size_project_metadata"
    extra_sections = ("allowlist",)

    def __init__(self, limit: int, exempt: frozenset[NormalizedName]) -> None:
        self.limit = limit
        self.exempt = exempt

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        return cls.from_context(PluginContext(tables={cls.section: section}))

    @classmethod
    def from_context(cls, context: PluginContext) -> Self:
        options = Options(cls.name, cls.section, context.table(cls.section), ("max_package_size",))
        if "max_package_size" not in options.table:
            raise options.error("max_package_size", "missing: the largest project size to keep")
        allowlist = Options(cls.name, "allowlist", context.table("allowlist"), ALLOWLIST_KEYS)
        return cls(options.size("max_package_size"), names_of(allowlist.requirements("packages")))

    def allow(self, detail: ProjectDetail, info: Info | None) -> bool:
        if self.limit <= 0 or detail.name in self.exempt:
            return True
        return sum(f.size or 0 for f in detail.files) <= self.limit

    def describe(self) -> str:
        exempt = f" (except {len(self.exempt)} allowlisted)" if self.exempt else ""
        return f"{self.name}: drop projects over {self.limit} bytes{exempt}"


class VersionCountProjectMetadata(MetadataFilter):
    """Keep only projects with between ``[version_count] min`` and ``max`` versions (PEP 700
    ``versions``, counted as the upstream lists them): skip one-off and placeholder projects, or
    projects that publish a release a day. ``max = 0`` (the default) sets no upper bound."""

    name = "version_count_project_metadata"
    section = "version_count"

    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        options = Options(cls.name, cls.section, section, ("min", "max"))
        low, high = options.integer("min", 0), options.integer("max", 0)
        if high and high < low:
            raise options.error("max", f"{high} is below min ({low})")
        return cls(low, high)

    def allow(self, detail: ProjectDetail, info: Info | None) -> bool:
        count = len(detail.versions)
        return count >= self.low and (not self.high or count <= self.high)

    def describe(self) -> str:
        top = f"..{self.high}" if self.high else " or more"
        return f"{self.name}: keep projects with {self.low}{top} versions"
