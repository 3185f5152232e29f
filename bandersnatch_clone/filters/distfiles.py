"""What a distribution file's name says: its version, its kind, its wheel tags.

Wheels and sdists are read with `packaging.utils`; the older kinds (eggs, Windows installers,
RPMs, sdists with odd versions) with a tolerant parse that prefers the versions the upstream
lists for the project (PEP 700 ``versions``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from packaging.tags import Tag
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from bandersnatch_clone.filters.base import Release, parse_version
from bandersnatch_clone.model import DistFile

# PyPI's ``packagetype`` by file extension (PEP 527 lists the kinds PyPI still accepts).
_KINDS: tuple[tuple[str, str], ...] = (
    (".whl", "bdist_wheel"),
    (".tar.gz", "sdist"),
    (".zip", "sdist"),
    (".tar.bz2", "sdist"),
    (".tar.xz", "sdist"),
    (".tgz", "sdist"),
    (".tar.z", "sdist"),
    (".tar", "sdist"),
    (".egg", "bdist_egg"),
    (".exe", "bdist_wininst"),
    (".msi", "bdist_msi"),
    (".rpm", "bdist_rpm"),
    (".dmg", "bdist_dmg"),
)
# A platform suffix some old builds glue to the version: foo-1.0.win32.exe, foo-1.0.linux-x86_64.
_PLATFORM_SUFFIX = re.compile(r"\.(win32|win-amd64|linux-[a-z0-9_]+|macosx-[a-z0-9_.-]+)$")


def version_key(version: str) -> str:
    """The key two spellings of one version share (``1.0`` and ``1.0.0`` stay distinct, as on
    PyPI, but ``1.0RC1`` and ``1.0rc1`` meet); a legacy version is its own key."""
    parsed = parse_version(version)
    return str(parsed) if parsed is not None else version


def packagetype(filename: str) -> str:
    """PyPI's ``packagetype`` for a filename (``sdist``, ``bdist_wheel``, ...), or ``unknown``."""
    lower = filename.lower()
    for suffix, kind in _KINDS:
        if lower.endswith(suffix):
            return kind
    return "unknown"


def _stem(filename: str) -> str:
    lower = filename.lower()
    for suffix, _ in _KINDS:
        if lower.endswith(suffix):
            return filename[: -len(suffix)]
    return filename.rsplit(".", 1)[0]


def wheel_tags(filename: str) -> frozenset[Tag] | None:
    """A wheel's tags (PEP 425, compressed sets expanded), or None when not a valid wheel."""
    if not filename.endswith(".whl"):
        return None
    try:
        return parse_wheel_filename(filename)[3]
    except InvalidWheelFilename:
        return None


def file_version(filename: str, project: NormalizedName, known: Mapping[str, str]) -> str | None:
    """The version a file belongs to, as a `version_key`, or None when the name does not say.

    ``known`` maps `version_key` to the upstream's spelling for every version the project
    lists; the tolerant parse only ever answers with one of those.
    """
    try:
        if filename.endswith(".whl"):
            return version_key(str(parse_wheel_filename(filename)[1]))
        name, version = parse_sdist_filename(filename)
        if name == project:
            return version_key(str(version))
    except (InvalidWheelFilename, InvalidSdistFilename):
        pass
    return _tolerant_version(_stem(filename), project, known)


def _tolerant_version(stem: str, project: NormalizedName, known: Mapping[str, str]) -> str | None:
    # Split "<name>-<version>[-<more>]" at each dash; the name part must normalise to the
    # project, and the version part (or the version with a platform suffix taken off, or a
    # prefix of the rest up to a dash) must be a version the project lists.
    parts = stem.split("-")
    for cut in range(1, len(parts)):
        if canonicalize_name("-".join(parts[:cut])) != project:
            continue
        rest = parts[cut:]
        for end in range(len(rest), 0, -1):
            candidate = "-".join(rest[:end])
            for text in (candidate, _PLATFORM_SUFFIX.sub("", candidate)):
                key = version_key(text)
                if key in known:
                    return key
        if not known:
            # Nothing to compare with (an api-version 1.0 page): the first part that parses.
            first = _PLATFORM_SUFFIX.sub("", rest[0])
            return version_key(first) if parse_version(first) is not None else None
    return None


def group_releases(
    project: NormalizedName,
    versions: Iterable[str],
    files: Iterable[DistFile],
    info: Mapping[str, object] | None,
) -> tuple[list[Release], list[DistFile]]:
    """The project's releases (listed versions first, in order, then versions only the files
    name) and the files whose version cannot be told from their name."""
    spelling: dict[str, str] = {}
    for version in versions:
        spelling.setdefault(version_key(version), version)
    by_key: dict[str, list[DistFile]] = {key: [] for key in spelling}
    unplaced: list[DistFile] = []
    for file in files:
        key = file_version(file.filename, project, spelling)
        if key is None:
            unplaced.append(file)
            continue
        if key not in by_key:
            spelling[key] = key
            by_key[key] = []
        by_key[key].append(file)
    releases = [
        Release(project, spelling[key], tuple(grouped), parse_version(spelling[key]), info)
        for key, grouped in by_key.items()
    ]
    return releases, unplaced


def release_file_view(file: DistFile, release: Release) -> Mapping[str, object]:
    """One file as PyPI's JSON API describes it (``releases[v][i]``), for metadata matching.

    Field names are the JSON API's, so bandersnatch paths such as
    ``release_file.packagetype`` keep working.
    """
    kind = packagetype(file.filename)
    tags = wheel_tags(file.filename)
    if kind == "sdist":
        python_version = "source"
    elif tags:
        python_version = ".".join(sorted({t.interpreter for t in tags}))
    else:
        python_version = ""
    return MappingProxyType(
        {
            "filename": file.filename,
            "url": file.url,
            "digests": dict(file.hashes),
            "size": file.size,
            "requires_python": file.requires_python,
            "yanked": file.yanked is not None,
            "yanked_reason": file.yanked or None,
            "upload_time": file.upload_time[:19] if file.upload_time else None,
            "upload_time_iso_8601": file.upload_time,
            "packagetype": kind,
            "python_version": python_version,
            "version": release.version,
        }
    )
