"""Typed records for what the upstream tells us: projects, their files, the listing.

Upstream JSON is parsed once, in `upstream.py`, into these frozen dataclasses; nothing past that
edge handles raw dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from packaging.utils import NormalizedName

#: Hash name -> lowercase hex digest, e.g. {"sha256": "ab12..."} (PEP 691 ``hashes``).
Hashes = Mapping[str, str]


class ProjectStatus(StrEnum):
    """PEP 792 project status markers."""

    ACTIVE = "active"
    ARCHIVED = "archived"
    # PEP 792: "The index MUST NOT offer any distributions of the project for download."
    QUARANTINED = "quarantined"
    DEPRECATED = "deprecated"


@dataclass(frozen=True, slots=True)
class DistFile:
    """One distribution file of a project, as PEP 691 describes it."""

    #: PEP 691: "filename: The filename that is being represented."
    filename: str
    #: Absolute URL the file is fetched from (upstream), or the link a page carries (local).
    url: str
    #: PEP 691: "hashes: A dictionary mapping a hash name to a hex encoded digest of the file."
    hashes: Hashes = field(default_factory=dict)
    #: PEP 691 ``requires-python``; None when the upstream gives none.
    requires_python: str | None = None
    #: PEP 592/691: None when not yanked, "" when yanked without a reason, else the reason.
    yanked: str | None = None
    #: PEP 700 ``size`` in bytes.
    size: int | None = None
    #: PEP 700 ``upload-time``, ISO 8601 as the upstream wrote it.
    upload_time: str | None = None
    #: PEP 714 ``core-metadata``: None when not offered, else the hashes of ``<url>.metadata``
    #: (an empty mapping when offered without hashes).
    core_metadata: Hashes | None = None
    #: PEP 740 ``provenance`` URL, when the upstream has one.
    provenance: str | None = None

    @property
    def sha256(self) -> str | None:
        return self.hashes.get("sha256")


@dataclass(frozen=True, slots=True)
class ProjectDetail:
    """A project page: PEP 691 ``/simple/<name>/`` in typed form."""

    #: PEP 503 normalised name.
    name: NormalizedName
    #: ``meta._last-serial`` / ``X-PyPI-Last-Serial`` of the response this was built from.
    serial: int
    files: tuple[DistFile, ...] = ()
    #: PEP 700 ``versions``: every version the project has, files or not.
    versions: tuple[str, ...] = ()
    #: PEP 792 ``project-status``; None when the upstream does not say.
    status: ProjectStatus | None = None
    status_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ListedProject:
    """One row of the upstream's project listing."""

    #: The name as the upstream lists it (not necessarily normalised).
    name: str
    #: ``_last-serial`` of the project.
    serial: int
