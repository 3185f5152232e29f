"""Built-in project filters: they decide by name alone, before any request for the project."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Self

from packaging.utils import NormalizedName

from bandersnatch_clone.filters.base import PluginContext, ProjectFilter
from bandersnatch_clone.filters.options import Options, names_of
from bandersnatch_clone.filters.requirements import load_requirements

#: ``[allowlist]`` serves allowlist_project/_release, project_requirements(_pinned) and the
#: size_project_metadata exemption; ``[blocklist]`` serves blocklist_* and exclude_platform;
#: ``[filter_regex]`` serves regex_project and regex_release.
ALLOWLIST_KEYS = ("packages", "requirements_path", "requirements")
BLOCKLIST_KEYS = ("packages", "platforms")
FILTER_REGEX_KEYS = ("packages", "releases")


def _sample(names: frozenset[NormalizedName]) -> str:
    shown = ", ".join(sorted(names)[:5])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 5 else "")


class AllowlistProject(ProjectFilter):
    """Mirror only the projects ``[allowlist] packages`` names (an empty list allows all).

    Lines may carry PEP 440 specifiers (``black==24.1.0``); they are for ``allowlist_release``
    and ignored here.
    """

    name = "allowlist_project"
    section = "allowlist"

    def __init__(self, names: frozenset[NormalizedName]) -> None:
        self.names = names

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        options = Options(cls.name, cls.section, section, ALLOWLIST_KEYS)
        return cls(names_of(options.requirements("packages")))

    def allow(self, name: NormalizedName) -> bool:
        return not self.names or name in self.names

    def allowlist(self) -> frozenset[NormalizedName] | None:
        return self.names or None

    def describe(self) -> str:
        if not self.names:
            return f"{self.name}: [allowlist] packages is empty: every project is allowed"
        return f"{self.name}: only {_sample(self.names)}"


class ProjectRequirements(AllowlistProject):
    """Mirror only the projects named in the requirements files ``[allowlist]`` lists."""

    name = "project_requirements"

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        return cls.from_context(PluginContext(tables={cls.section: section}))

    @classmethod
    def from_context(cls, context: PluginContext) -> Self:
        options = Options(cls.name, cls.section, context.table(cls.section), ALLOWLIST_KEYS)
        return cls(names_of(load_requirements(options, context.base)))

    def fingerprint(self) -> str:
        return " ".join(sorted(self.names))

    def describe(self) -> str:
        if not self.names:
            return f"{self.name}: the requirements files name no project: every project allowed"
        return f"{self.name}: only {_sample(self.names)} (from requirements files)"


class BlocklistProject(ProjectFilter):
    """Never mirror the projects ``[blocklist] packages`` names without a version specifier
    (lines with one, ``foo>=2``, are ``blocklist_release``'s)."""

    name = "blocklist_project"
    section = "blocklist"

    def __init__(self, names: frozenset[NormalizedName]) -> None:
        self.names = names

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        options = Options(cls.name, cls.section, section, BLOCKLIST_KEYS)
        requirements = options.requirements("packages")
        return cls(names_of(r for r in requirements if not r.specifier))

    def allow(self, name: NormalizedName) -> bool:
        return name not in self.names

    def describe(self) -> str:
        return f"{self.name}: never {_sample(self.names)}" if self.names else f"{self.name}: -"


class RegexProject(ProjectFilter):
    """Never mirror a project whose normalised name matches (``re.match``, anchored at the
    start) one of ``[filter_regex] packages``."""

    name = "regex_project"
    section = "filter_regex"

    def __init__(self, patterns: tuple[re.Pattern[str], ...]) -> None:
        self.patterns = patterns

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        options = Options(cls.name, cls.section, section, FILTER_REGEX_KEYS)
        return cls(options.patterns("packages"))

    def allow(self, name: NormalizedName) -> bool:
        return not any(p.match(name) for p in self.patterns)

    def describe(self) -> str:
        return f"{self.name}: drop names matching {[p.pattern for p in self.patterns]}"
