"""Built-in release-file filters: they decide on one distribution file at a time."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Self

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag
from packaging.version import Version

from bandersnatch_clone.filters.base import (
    PluginContext,
    Release,
    ReleaseFileFilter,
    parse_upload_time,
)
from bandersnatch_clone.filters.distfiles import packagetype, wheel_tags
from bandersnatch_clone.filters.options import Options
from bandersnatch_clone.filters.projects import BLOCKLIST_KEYS
from bandersnatch_clone.model import DistFile

# Platform keywords -> (wheel platform-tag prefixes, substrings of older binaries' names, the
# packagetypes that are that platform's installers). The substrings are bandersnatch's.
_FAMILIES: Mapping[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # PEP 425 win32/win_amd64/win_arm64; PEP 527 bdist_wininst/bdist_msi installers.
    "windows": (
        ("win",),
        (".win32", "-win32", "win_amd64", "win-amd64"),
        ("bdist_wininst", "bdist_msi"),
    ),
    "macos": (("macosx",), ("macosx_", "macosx-"), ("bdist_dmg",)),
    "freebsd": (("freebsd",), (".freebsd", "-freebsd"), ()),
    # PEP 425 linux_*, PEP 513/571/599/600 manylinux*, PEP 656 musllinux_*.
    "linux": (
        ("linux", "manylinux", "musllinux"),
        (
            *("linux-i686", "linux-x86_64", "linux_i686", "linux_x86_64", "linux_armv"),
            *("linux_aarch64", "linux_ppc64", "linux_s390x", "manylinux", "musllinux"),
        ),
        ("bdist_rpm",),
    ),
}
_ALIASES = {"win": "windows", "macosx": "macos"}
# "py3.11", "py2", "py3": a Python version (minor optional) whose files are not wanted.
_PYTHON_KEYWORD = re.compile(r"py(\d)(?:\.(\d+))?")
# PEP 425 python tag: implementation abbreviation + version digits (cp311, py3, pp39, jy27).
_PYTHON_TAG = re.compile(r"(?:py|cp|pp|ip|jy|graalpy)(\d)(\d*)")
_PLATFORM_TAG = re.compile(r"[a-z0-9_.]+")


class ExcludePlatform(ReleaseFileFilter):
    """Drop binaries for the platforms and Pythons ``[blocklist] platforms`` names.

    Keywords: ``windows`` (``win``), ``macos`` (``macosx``), ``freebsd``, ``linux`` (with
    manylinux and musllinux), a platform tag (``win_amd64``, ``manylinux2014_aarch64``),
    ``pyX.Y`` (``py2.7``, ``py3.8``) or ``py2``/``py3`` for a whole major version.
    A wheel is dropped when every one of its tags is excluded (``py2.py3-none-any`` survives
    ``py2``); other binaries when their name or kind says an excluded platform or Python.
    Source distributions are never dropped.
    """

    name = "exclude_platform"
    section = "blocklist"

    def __init__(
        self,
        families: frozenset[str],
        tags: frozenset[str],
        minors: frozenset[tuple[int, int]],
        majors: frozenset[int],
    ) -> None:
        self.families = families
        self.tags = tags
        self.minors = minors
        self.majors = majors
        self._prefixes = tuple(p for f in families for p in _FAMILIES[f][0])
        self._substrings = tuple(s for f in families for s in _FAMILIES[f][1]) + tuple(tags)
        self._kinds = frozenset(k for f in families for k in _FAMILIES[f][2])

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        options = Options(cls.name, cls.section, section, BLOCKLIST_KEYS)
        families: set[str] = set()
        tags: set[str] = set()
        minors: set[tuple[int, int]] = set()
        majors: set[int] = set()
        for raw in options.strings("platforms"):
            keyword = raw.strip().lower()
            keyword = _ALIASES.get(keyword, keyword)
            python = _PYTHON_KEYWORD.fullmatch(keyword)
            if keyword in _FAMILIES:
                families.add(keyword)
            elif python and python[2] is None:
                majors.add(int(python[1]))
            elif python:
                minors.add((int(python[1]), int(python[2])))
            elif _PLATFORM_TAG.fullmatch(keyword) and ("_" in keyword or keyword == "win32"):
                tags.add(keyword.replace("-", "_").replace(".", "_"))
            else:
                known = [*_FAMILIES, *_ALIASES, "py3.12", "win_amd64"]
                close = difflib.get_close_matches(keyword, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise options.error(
                    "platforms",
                    f"unknown platform {raw!r}{hint}: use windows, macos, freebsd, linux, "
                    "a platform tag such as win_amd64, or a Python such as py2.7 or py2",
                )
        return cls(frozenset(families), frozenset(tags), frozenset(minors), frozenset(majors))

    def allow(self, file: DistFile, release: Release) -> bool:
        kind = packagetype(file.filename)
        if kind == "sdist":
            return True
        tags = wheel_tags(file.filename)
        if tags is not None:
            return not all(self._tag_excluded(tag) for tag in tags)
        if kind in self._kinds:
            return False
        lower = file.filename.lower()
        if any(s in lower for s in self._substrings):
            return False
        return not any(self._python_in_name(lower, major, minor) for major, minor in self.minors)

    def _tag_excluded(self, tag: Tag) -> bool:
        if tag.platform in self.tags or tag.platform.startswith(self._prefixes):
            return True
        python = _PYTHON_TAG.fullmatch(tag.interpreter)
        if python is None:
            return False
        major = int(python[1])
        if major in self.majors:
            return True
        return bool(python[2]) and (major, int(python[2])) in self.minors

    @staticmethod
    def _python_in_name(lower: str, major: int, minor: int) -> bool:
        # Eggs and Windows installers: foo-1.0-py2.7.egg, foo-1.0.win32-py2.7.exe.
        return any(f"-py{major}.{minor}{end}" in lower for end in ("-", ".")) or any(
            f"-{impl}{major}{minor}-" in lower for impl in ("cp", "pp", "ip", "jy")
        )

    def describe(self) -> str:
        pythons = [f"py{a}.{b}" for a, b in sorted(self.minors)] + [f"py{m}" for m in self.majors]
        excluded = sorted(self.families) + sorted(self.tags) + pythons
        return f"{self.name}: drop binaries for {', '.join(excluded) or 'nothing'}"


class ExcludeFilename(ReleaseFileFilter):
    """Drop files whose name matches one of ``[exclude_filename] patterns`` (shell globs,
    case-sensitive: ``*.exe``, ``*-win32.whl``, ``*.egg``)."""

    name = "exclude_filename"
    section = "exclude_filename"

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        options = Options(cls.name, cls.section, section, ("patterns",))
        return cls(options.strings("patterns"))

    def allow(self, file: DistFile, release: Release) -> bool:
        return not any(fnmatch.fnmatchcase(file.filename, p) for p in self.patterns)

    def describe(self) -> str:
        return f"{self.name}: drop files matching {list(self.patterns)}"


class RequiresPythonReleaseFile(ReleaseFileFilter):
    """Drop files whose Requires-Python (PEP 345/691) excludes every one of
    ``[requires_python] targets`` (e.g. ``["3.11", "3.12"]``). Files without one, or with
    one that does not parse (pip ignores those too), are kept."""

    name = "requires_python_release_file"
    section = "requires_python"

    def __init__(self, targets: tuple[Version, ...]) -> None:
        self.targets = targets

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        options = Options(cls.name, cls.section, section, ("targets",))
        targets = []
        for text in options.strings("targets"):
            try:
                targets.append(Version(text))
            except ValueError as exc:
                raise options.error("targets", f"not a Python version: {text!r}") from exc
        if not targets:
            raise options.error("targets", "missing: list the Pythons to keep, e.g. ['3.12']")
        return cls(tuple(targets))

    def allow(self, file: DistFile, release: Release) -> bool:
        if not file.requires_python:
            return True
        try:
            spec = SpecifierSet(file.requires_python)
        except InvalidSpecifier:
            return True
        return any(spec.contains(t, prereleases=True) for t in self.targets)

    def describe(self) -> str:
        return f"{self.name}: keep files for Python {', '.join(map(str, self.targets))}"


class ExcludeYanked(ReleaseFileFilter):
    """Drop yanked files (PEP 592). Clients skip them unless pinned, so a mirror for fresh
    installs rarely needs them; a mirror that must reproduce old locks does."""

    name = "exclude_yanked"
    section = "exclude_yanked"

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        Options(cls.name, cls.section, section, ())
        return cls()

    def allow(self, file: DistFile, release: Release) -> bool:
        return file.yanked is None


class Cooldown(ReleaseFileFilter):
    """Hold back files uploaded less than ``[cooldown] days`` ago: a new upload is mirrored
    by the first run after it has aged that long (time for a malicious release to be caught
    and removed). Files without an upload time are not held back."""

    name = "cooldown"
    section = "cooldown"

    def __init__(self, days: int, now: Callable[[], datetime]) -> None:
        self.age = timedelta(days=days)
        self.now = now

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        return cls.from_context(PluginContext(tables={cls.section: section}))

    @classmethod
    def from_context(cls, context: PluginContext) -> Self:
        options = Options(cls.name, cls.section, context.table(cls.section), ("days",))
        if "days" not in options.table:
            raise options.error("days", "missing: how many days a new file is held back")
        return cls(options.integer("days", 0, low=1), context.now)

    def allow(self, file: DistFile, release: Release) -> bool:
        uploaded = parse_upload_time(file.upload_time)
        return uploaded is None or uploaded <= self.now() - self.age

    def changes_at(self, file: DistFile) -> datetime | None:
        uploaded = parse_upload_time(file.upload_time)
        if uploaded is None or uploaded + self.age <= self.now():
            return None
        return uploaded + self.age

    def describe(self) -> str:
        return f"{self.name}: hold back files younger than {self.age.days} days"
