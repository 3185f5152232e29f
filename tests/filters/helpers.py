"""Project pages built in the test: a filename list becomes a `ProjectDetail`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

from packaging.utils import NormalizedName, canonicalize_name

from bandersnatch_clone.config import Config, config_from_mapping
from bandersnatch_clone.filters.base import Release, parse_version
from bandersnatch_clone.model import DistFile, ProjectDetail


def dist(
    filename: str,
    *,
    size: int = 1000,
    uploaded: str | None = "2024-01-01T00:00:00Z",
    requires_python: str | None = None,
    yanked: str | None = None,
) -> DistFile:
    """A file as the upstream describes it; the digest is the filename's, so each differs."""
    return DistFile(
        filename=filename,
        url=f"https://files.example/packages/{filename}",
        hashes={"sha256": hashlib.sha256(filename.encode()).hexdigest()},
        requires_python=requires_python,
        yanked=yanked,
        size=size,
        upload_time=uploaded,
    )


def project(
    name: str, files: Iterable[str | DistFile], versions: Iterable[str] | None = None
) -> ProjectDetail:
    """A project page; ``versions`` defaults to the sdists' and wheels' versions in order."""
    built = tuple(f if isinstance(f, DistFile) else dist(f) for f in files)
    if versions is None:
        found: dict[str, None] = {}
        for f in built:
            stem = f.filename.removesuffix(".tar.gz").removesuffix(".whl")
            found.setdefault(stem.split("-")[1], None)
        versions = found
    return ProjectDetail(
        name=canonicalize_name(name), serial=1, files=built, versions=tuple(versions)
    )


def release(
    version: str,
    project_name: str = "demo",
    files: Iterable[DistFile] = (),
    info: Mapping[str, object] | None = None,
) -> Release:
    return Release(
        NormalizedName(project_name), version, tuple(files), parse_version(version), info
    )


def filenames(detail: ProjectDetail | None) -> list[str] | None:
    return None if detail is None else [f.filename for f in detail.files]


def shape(detail: ProjectDetail | None) -> tuple[list[str], tuple[str, ...]] | None:
    """What a filtered page comes to: (filenames, versions), or None when dropped."""
    return None if detail is None else ([f.filename for f in detail.files], detail.versions)


def config(
    tables: Mapping[str, object], enabled: Iterable[str], folder: Path | None = None
) -> Config:
    """A validated `Config` with ``[plugins] enabled`` and the given plugin tables."""
    base = folder or Path("/nonexistent")
    data = {
        "mirror": {"directory": str(base / "mirror")},
        "plugins": {"enabled": list(enabled)},
        **tables,
    }
    return config_from_mapping(data, base / "mirror.toml")


def frozen(table: Mapping[str, object]) -> Mapping[str, object]:
    """A table as `Config` hands it to plugins: read-only, arrays as tuples."""
    return MappingProxyType({k: tuple(v) if isinstance(v, list) else v for k, v in table.items()})
