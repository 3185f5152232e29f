"""Reading a plugin's config table: typed getters whose errors name the plugin and the key."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, time

import humanfriendly
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name

from bandersnatch_clone.errors import PluginError


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"a boolean ({value!r})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list | tuple):
        return "an array"
    return "a table" if isinstance(value, Mapping) else type(value).__name__


class Options:
    """One plugin's view of one table: checks that every key is known, then reads them.

    ``known`` is every key the table may hold, including keys that other plugins sharing the
    table read (``[allowlist]`` serves four plugins), so that one plugin does not reject
    another's key.
    """

    def __init__(
        self, plugin: str, section: str, table: Mapping[str, object], known: Iterable[str]
    ) -> None:
        self.plugin = plugin
        self.section = section
        self.table = table
        names = tuple(known)
        for key in table:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                takes = f"takes: {', '.join(names)}" if names else "takes no keys"
                raise self.error(key, f"unknown key{hint}; [{section}] {takes}")

    def error(self, key: str | None, problem: str) -> PluginError:
        return PluginError(self.plugin, f"{self.section}.{key}" if key else self.section, problem)

    def strings(self, key: str) -> tuple[str, ...]:
        """An array of strings (absent = empty)."""
        value = self.table.get(key, ())
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected an array of strings, got {_describe(value)}")
        return tuple(value)

    def string(self, key: str, default: str | None = None) -> str | None:
        value = self.table.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_describe(value)}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.string(key, default) or default
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise self.error(key, f"expected one of {allowed}, got {value!r}")
        return value

    def integer(self, key: str, default: int, low: int = 0) -> int:
        value = self.table.get(key, default)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)  # bandersnatch configs carry numbers as text
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_describe(value)}")
        if value < low:
            raise self.error(key, f"expected an integer >= {low}, got {value}")
        return value

    def size(self, key: str, default: int = 0) -> int:
        """Bytes: an integer, or a human-friendly size such as ``"1G"`` or ``"500 MB"``.

        Units are powers of 1024 whichever spelling is used (as bandersnatch reads them).
        """
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise self.error(key, f"expected a size such as 1073741824 or '1G', got {value!r}")
        if isinstance(value, int):
            return value
        try:
            return int(humanfriendly.parse_size(value, binary=True))
        except humanfriendly.InvalidSize as exc:
            raise self.error(key, f"not a size: {value!r} (try '500M' or '1G')") from exc

    def moment(self, key: str) -> datetime | None:
        """A TOML date or date-time, or an ISO 8601 string; naive values are taken as UTC."""
        value = self.table.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError as exc:
                raise self.error(key, f"not an ISO 8601 date: {value!r}") from exc
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, date):
            return datetime.combine(value, time(), tzinfo=UTC)
        raise self.error(key, f"expected a date such as 2024-01-31, got {_describe(value)}")

    def patterns(self, key: str) -> tuple[re.Pattern[str], ...]:
        """An array of regular expressions, compiled."""
        compiled = []
        for text in self.strings(key):
            try:
                compiled.append(re.compile(text))
            except re.error as exc:
                raise self.error(key, f"invalid regular expression {text!r}: {exc}") from exc
        return tuple(compiled)

    def requirements(self, key: str) -> tuple[Requirement, ...]:
        """An array of PEP 508 lines (``name`` or ``name>=1.0``); ``#`` starts a comment."""
        return tuple(
            parse_requirement(line, lambda p: self.error(key, p))
            for line in self.strings(key)
            if strip_comment(line)
        )


def strip_comment(line: str) -> str:
    """A requirement line without its ``#`` comment and surrounding space."""
    return line.split("#", 1)[0].strip()


def parse_requirement(line: str, error: Callable[[str], PluginError]) -> Requirement:
    """One requirement line, with the name normalised (PEP 503) and pre-releases matched.

    Pre-releases are matched because a listed range means "these versions", not "what pip
    would pick" (bandersnatch does the same for its allowlist).
    """
    text = strip_comment(line)
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise error(f"not a project name or requirement: {line!r} ({exc})") from exc
    requirement.name = canonicalize_name(requirement.name)
    requirement.specifier.prereleases = True
    return requirement


def names_of(requirements: Iterable[Requirement]) -> frozenset[NormalizedName]:
    return frozenset(NormalizedName(r.name) for r in requirements)
