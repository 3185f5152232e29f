"""The fake upstream's in-memory index: projects, releases, files, serials and the changelog.

Serials follow PyPI: every changelog (journal) row gets the next serial, and a project's
``_last-serial`` is the serial of its newest row. A mutation that writes one row (``add_file``,
``remove_file``, ``remove_release``, ``remove_project``, ``yank``, ``unyank``, ``set_status``)
bumps the serial by exactly one; ``add_release`` writes "new release" plus one row per file, and
``add_project`` writes "create" plus those of each release. Every method is thread-safe (one
`threading.RLock`), because tests mutate the index while the server thread reads it.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from tests.distbuilder import build_sdist, build_wheel, sdist_filename, wheel_filename

#: The fake clock: row ``s`` happens ``s`` minutes after this (naive UTC, as PyPI stores it).
BASE_TIME = datetime(2024, 1, 2, 3, 4, 5, 123456)
#: PyPI: "changelog_since_serial ... limit(50000)".
CHANGELOG_LIMIT = 50_000
STATUSES = ("active", "archived", "quarantined", "deprecated")

# PEP 508 name rule. Names that pass it need no HTML or JSON escaping, which the listing relies on.
_VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)

#: One changelog row: [name, version, timestamp, action, serial] (XML-RPC changelog_since_serial).
ChangelogRow = tuple[str, str | None, int, str, int]


def clock(serial: int) -> datetime:
    return BASE_TIME + timedelta(minutes=serial)


class FileKind(StrEnum):
    WHEEL = "wheel"
    SDIST = "sdist"


@dataclass(frozen=True, slots=True)
class Digests:
    size: int
    sha256: str
    md5: str
    blake2b_256: str
    #: sha256 of the ``.metadata`` file; None when no core metadata is offered.
    metadata_sha256: str | None


class BlobCache:
    """A byte-bounded LRU for file bodies that are cheaper to rebuild than to keep."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._used = 0
        self._items: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: int) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: int, data: bytes) -> None:
        with self._lock:
            if key in self._items or len(data) > self.budget:
                return
            self._items[key] = data
            self._used += len(data)
            while self._used > self.budget:
                _, old = self._items.popitem(last=False)
                self._used -= len(old)


_file_keys = itertools.count()


@dataclass(frozen=True, slots=True)
class Recipe:
    """What a file is built from. Building is deterministic, so the bytes need not be kept."""

    name: str
    version: str
    kind: FileKind
    tag: str = "py3-none-any"
    requires_dist: tuple[str, ...] = ()
    requires_python: str | None = None
    summary: str = ""
    extra_size: int = 0

    @property
    def filename(self) -> str:
        if self.kind is FileKind.WHEEL:
            return wheel_filename(self.name, self.version, self.tag)
        return sdist_filename(self.name, self.version)

    def build(self) -> tuple[bytes, bytes | None]:
        """(file bytes, METADATA bytes for a wheel else None)."""
        deps, python = self.requires_dist, self.requires_python
        if self.kind is FileKind.WHEEL:
            _, data, metadata = build_wheel(
                self.name, self.version, requires_dist=deps, requires_python=python,
                summary=self.summary, tag=self.tag, extra_size=self.extra_size,
            )  # fmt: skip
            return data, metadata
        _, data = build_sdist(
            self.name, self.version, requires_dist=deps, requires_python=python,
            summary=self.summary, extra_size=self.extra_size,
        )  # fmt: skip
        return data, None


@dataclass(eq=False, slots=True)
class FakeFile:
    """One distribution file; its bytes are built from the recipe when first needed."""

    recipe: Recipe
    upload_time: datetime
    #: PEP 658: offer ``<file>.metadata`` (PyPI does for wheels only).
    core_metadata: bool
    #: PEP 740: offer a provenance URL.
    provenance: bool = False
    #: None: keep the bytes for ever (small test files); else rebuild through this LRU.
    cache: BlobCache | None = field(default=None, repr=False)
    filename: str = field(init=False)
    _key: int = field(default_factory=lambda: next(_file_keys), repr=False)
    _content: bytes | None = field(default=None, repr=False)
    _metadata: bytes | None = field(default=None, repr=False)
    _digests: Digests | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.filename = self.recipe.filename
        self.core_metadata = self.core_metadata and self.kind is FileKind.WHEEL

    @property
    def kind(self) -> FileKind:
        return self.recipe.kind

    @property
    def version(self) -> str:
        return self.recipe.version

    @property
    def python_version(self) -> str:
        """Legacy JSON ``python_version``: the wheel's python tag, or "source" for an sdist."""
        return self.recipe.tag.split("-")[0] if self.kind is FileKind.WHEEL else "source"

    def content(self) -> bytes:
        if self._content is not None:
            return self._content
        if self.cache is not None and (hit := self.cache.get(self._key)) is not None:
            return hit
        data, metadata = self.recipe.build()
        if self.cache is None:
            self._content = data
        else:
            self.cache.put(self._key, data)
        self._metadata = metadata
        if self._digests is None:
            self._digests = _digest(data, metadata if self.core_metadata else None)
        return data

    def metadata(self) -> bytes | None:
        """The ``.metadata`` bytes (PEP 658), or None when this file offers none."""
        if not self.core_metadata:
            return None
        if self._metadata is None:
            self.content()
        return self._metadata

    def digests(self) -> Digests:
        if self._digests is None:
            self.content()
        assert self._digests is not None
        return self._digests

    @property
    def digested(self) -> bool:
        return self._digests is not None

    @property
    def path(self) -> str:
        """PyPI's scheme: ``/packages/<b2[:2]>/<b2[2:4]>/<b2[4:]>/<filename>`` (blake2b-256)."""
        b2 = self.digests().blake2b_256
        return f"/packages/{b2[:2]}/{b2[2:4]}/{b2[4:]}/{self.filename}"


def _digest(data: bytes, metadata: bytes | None) -> Digests:
    return Digests(
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        md5=hashlib.md5(data).hexdigest(),
        blake2b_256=hashlib.blake2b(data, digest_size=32).hexdigest(),
        metadata_sha256=hashlib.sha256(metadata).hexdigest() if metadata is not None else None,
    )


@dataclass(eq=False, slots=True)
class FakeRelease:
    version: str
    requires_python: str | None = None
    requires_dist: tuple[str, ...] = ()
    summary: str = ""
    yanked: bool = False
    yanked_reason: str = ""
    files: dict[str, FakeFile] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GenSpec:
    """How a generated project's files look; shared by every generated project of an index."""

    files_per_project: int
    file_size: int
    cache: BlobCache


@dataclass(eq=False, slots=True)
class FakeProject:
    #: Display name, as uploaded (``Zope.Interface_Thing``).
    name: str
    normalized: NormalizedName
    serial: int
    status: str | None = "active"
    status_reason: str | None = None
    gen: GenSpec | None = None
    _releases: dict[str, FakeRelease] | None = None

    @property
    def releases(self) -> dict[str, FakeRelease]:
        if self._releases is None:
            self._releases = _generated_releases(self) if self.gen else {}
        return self._releases

    def files(self) -> Iterator[tuple[FakeRelease, FakeFile]]:
        for release in self.releases.values():
            for f in release.files.values():
                yield release, f


def _generated_releases(project: FakeProject) -> dict[str, FakeRelease]:
    # File k is version 1.(k//2): a wheel for even k, an sdist for odd k.
    assert project.gen is not None
    releases: dict[str, FakeRelease] = {}
    for k in range(project.gen.files_per_project):
        version = f"1.{k // 2}"
        release = releases.setdefault(version, FakeRelease(version, summary="generated"))
        kind = FileKind.WHEEL if k % 2 == 0 else FileKind.SDIST
        recipe = _recipe(project.name, release, kind, extra_size=project.gen.file_size)
        f = FakeFile(recipe, clock(project.serial), True, cache=project.gen.cache)
        release.files[f.filename] = f
    return releases


def _recipe(
    name: str, release: FakeRelease, kind: FileKind, tag: str = "py3-none-any", extra_size: int = 0
) -> Recipe:
    return Recipe(
        name,
        release.version,
        kind,
        tag,
        release.requires_dist,
        release.requires_python,
        release.summary,
        extra_size,
    )


def next_version(versions: Iterable[str]) -> str:
    """A version above all of ``versions``: bump the last part of the highest base release."""
    parsed = [Version(v) for v in versions]
    if not parsed:
        return "1.0"
    release = list(max(parsed).release)
    release[-1] += 1
    return ".".join(map(str, release))


class FakeIndex:
    """Everything the fake upstream serves. Safe to read and mutate from any thread."""

    def __init__(self, *, blob_cache_bytes: int = 256 << 20) -> None:
        self.lock = threading.RLock()
        self.blob_cache = BlobCache(blob_cache_bytes)
        self._projects: dict[NormalizedName, FakeProject] = {}
        # Generated projects own serials 1..len(_generated): one synthetic row each.
        self._generated: list[str] = []
        self._rows: list[ChangelogRow] = []
        self._serial = 0
        self._rendered: dict[str, tuple[bytes, int]] = {}
        # The listed projects in order; survives serial bumps, dropped when the set changes.
        self._listed: list[FakeProject] | None = None

    # -- reading ---------------------------------------------------------------------------

    @property
    def serial(self) -> int:
        with self.lock:
            return self._serial

    def get(self, name: str) -> FakeProject | None:
        with self.lock:
            return self._projects.get(canonicalize_name(name))

    def project(self, name: str) -> FakeProject:
        project = self.get(name)
        if project is None:
            raise KeyError(f"no project {name!r}")
        return project

    def file(self, name: str, filename: str) -> FakeFile:
        with self.lock:
            for _, f in self.project(name).files():
                if f.filename == filename:
                    return f
        raise KeyError(f"project {name!r} has no file {filename!r}")

    def listed(self) -> list[FakeProject]:
        """The projects in the listing, by normalised name (PyPI hides quarantined ones)."""
        with self.lock:
            return list(self._listed_cached())

    def _listed_cached(self) -> list[FakeProject]:
        if self._listed is None:
            projects = self._projects
            self._listed = [
                p for k in sorted(projects) if (p := projects[k]).status != "quarantined"
            ]
        return self._listed

    def __len__(self) -> int:
        with self.lock:
            return len(self._projects)

    def find_file(self, filename: str) -> tuple[FakeProject, FakeRelease, FakeFile] | None:
        """The live file called ``filename`` (filenames are unique across PyPI)."""
        try:
            if filename.endswith(".whl"):
                name = parse_wheel_filename(filename)[0]
            else:
                name = parse_sdist_filename(filename)[0]
        except (InvalidWheelFilename, InvalidSdistFilename):
            return None
        with self.lock:
            project = self._projects.get(name)
            if project is None:
                return None
            for release, f in project.files():
                if f.filename == filename:
                    return project, release, f
        return None

    def changelog_since(self, serial: int, limit: int = CHANGELOG_LIMIT) -> list[ChangelogRow]:
        """Rows with a serial above ``serial``, oldest first, at most ``limit`` of them."""
        with self.lock:
            start, stop = max(serial, 0), min(max(serial, 0) + limit, self._serial)
            n_gen = len(self._generated)
            rows: list[ChangelogRow] = [
                (self._generated[i], "1.0", _timestamp(i + 1), "new release", i + 1)
                for i in range(start, min(stop, n_gen))
            ]
            rows += self._rows[max(start - n_gen, 0) : max(stop - n_gen, 0)]
            return rows

    def rendered(
        self, key: str, render: Callable[[list[FakeProject], int], bytes]
    ) -> tuple[bytes, int]:
        """(``render(listed projects, serial)``, serial), cached until the next mutation."""
        with self.lock:
            cached = self._rendered.get(key)
            if cached is None:
                body = render(self._listed_cached(), self._serial)
                cached = self._rendered[key] = (body, self._serial)
            return cached

    # -- mutations -------------------------------------------------------------------------

    def _row(self, project: FakeProject, version: str | None, action: str) -> int:
        self._serial += 1
        self._rows.append((project.name, version, _timestamp(self._serial), action, self._serial))
        project.serial = self._serial
        self._rendered.clear()
        return self._serial

    def add_project(
        self,
        name: str,
        versions: Sequence[str] = ("1.0",),
        *,
        requires_dist: Sequence[str] = (),
        requires_python: str | None = None,
        summary: str = "",
        wheel: bool = True,
        sdist: bool = True,
        tags: Sequence[str] = ("py3-none-any",),
        status: str | None = None,
        status_reason: str | None = None,
    ) -> FakeProject:
        """A new project with one release per version (a wheel per tag and an sdist each)."""
        if not _VALID_NAME.match(name):
            raise ValueError(f"invalid project name {name!r}")
        with self.lock:
            normalized = canonicalize_name(name)
            if normalized in self._projects:
                raise ValueError(f"project {name!r} exists")
            project = self._projects[normalized] = FakeProject(name, normalized, 0)
            self._listed = None
            self._row(project, None, "create")
            for version in versions:
                self.add_release(
                    name,
                    version,
                    requires_dist=requires_dist,
                    requires_python=requires_python,
                    summary=summary,
                    wheel=wheel,
                    sdist=sdist,
                    tags=tags,
                )
            if status is not None:
                self.set_status(name, status, status_reason)
            return project

    def add_release(
        self,
        name: str,
        version: str,
        *,
        requires_dist: Sequence[str] = (),
        requires_python: str | None = None,
        summary: str = "",
        wheel: bool = True,
        sdist: bool = True,
        tags: Sequence[str] = ("py3-none-any",),
        extra_size: int = 0,
    ) -> FakeRelease:
        """A new release with a wheel per tag (if ``wheel``) and an sdist (if ``sdist``)."""
        with self.lock:
            project = self.project(name)
            if version in project.releases:
                raise ValueError(f"{name} {version} exists")
            release = project.releases[version] = FakeRelease(
                version, requires_python, tuple(requires_dist), summary
            )
            self._row(project, version, "new release")
            for tag in tags if wheel else ():
                self.add_file(name, version, FileKind.WHEEL, tag=tag, extra_size=extra_size)
            if sdist:
                self.add_file(name, version, FileKind.SDIST, extra_size=extra_size)
            return release

    def add_file(
        self,
        name: str,
        version: str,
        kind: FileKind | str = FileKind.WHEEL,
        *,
        tag: str = "py3-none-any",
        extra_size: int = 0,
        core_metadata: bool = True,
        provenance: bool = False,
        upload_time: datetime | None = None,
    ) -> FakeFile:
        """Upload one file; creates the release (as PyPI does) when it does not exist yet.

        ``core_metadata=False`` models a wheel whose METADATA PyPI never extracted.
        """
        with self.lock:
            project = self.project(name)
            release = project.releases.get(version)
            if release is None:
                release = self.add_release(name, version, wheel=False, sdist=False)
            f = FakeFile(
                _recipe(project.name, release, FileKind(kind), tag, extra_size),
                upload_time or clock(self._serial + 1),
                core_metadata,
                provenance,
                # Big files of generated projects are rebuilt on demand instead of kept.
                cache=project.gen.cache if project.gen and extra_size else None,
            )
            if any(f.filename == other.filename for _, other in project.files()):
                raise ValueError(f"file {f.filename} exists")
            if f.cache is None:
                f.content()  # small test files: build now, so errors show at the call site
            release.files[f.filename] = f
            self._row(project, version, f"add {f.python_version} file {f.filename}")
            return f

    def remove_file(self, name: str, filename: str) -> int:
        with self.lock:
            project = self.project(name)
            for release, f in list(project.files()):
                if f.filename == filename:
                    del release.files[filename]
                    return self._row(project, release.version, f"remove file {filename}")
            raise KeyError(f"project {name!r} has no file {filename!r}")

    def remove_release(self, name: str, version: str) -> int:
        with self.lock:
            project = self.project(name)
            del project.releases[version]
            return self._row(project, version, "remove release")

    def remove_project(self, name: str) -> int:
        with self.lock:
            project = self.project(name)
            del self._projects[project.normalized]
            self._listed = None
            return self._row(project, None, "remove project")

    def yank(self, name: str, version: str, reason: str = "") -> int:
        """PEP 592: yank a release; an empty reason renders as ``"yanked": true``."""
        with self.lock:
            project = self.project(name)
            release = project.releases[version]
            release.yanked, release.yanked_reason = True, reason
            return self._row(project, version, "yank release")

    def unyank(self, name: str, version: str) -> int:
        with self.lock:
            project = self.project(name)
            release = project.releases[version]
            release.yanked, release.yanked_reason = False, ""
            return self._row(project, version, "unyank release")

    def set_status(self, name: str, status: str | None, reason: str | None = None) -> int:
        """PEP 792 status; None drops ``project-status`` from the pages altogether."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown project status {status!r}")
        with self.lock:
            project = self.project(name)
            project.status, project.status_reason = status, reason
            self._listed = None
            return self._row(project, None, f"set status {status}")

    def touch(self, names: Iterable[str]) -> int:
        """Give each project a new release with one wheel (benchmarks' "N changed projects")."""
        with self.lock:
            for name in names:
                project = self.project(name)
                size = project.gen.file_size if project.gen else 0
                version = next_version(project.releases)
                self.add_release(name, version, sdist=False, extra_size=size)
            return self._serial

    # -- ready-made indexes ----------------------------------------------------------------

    @classmethod
    def generate(
        cls,
        n_projects: int,
        *,
        files_per_project: int = 2,
        file_size: int = 0,
        seed: int = 0,
        blob_cache_bytes: int = 256 << 20,
    ) -> FakeIndex:
        """``n_projects`` cheap projects for benchmarks: nothing is built until requested.

        Project ``i`` is ``proj-<i>`` (every tenth listed as ``Proj_<i>``, to need normalising);
        serials are a seeded shuffle, so listing order and serial order differ as on PyPI. Its
        files are versions ``1.0``, ``1.1``...: a wheel then an sdist, each padded to about
        ``file_size`` bytes and rebuilt deterministically on request (bodies go through a
        ``blob_cache_bytes`` LRU, digests are kept).
        """
        index = cls(blob_cache_bytes=blob_cache_bytes)
        spec = GenSpec(files_per_project, file_size, index.blob_cache)
        rng = random.Random(seed)
        order = list(range(n_projects))
        rng.shuffle(order)
        width = max(6, len(str(n_projects)))
        by_name: list[FakeProject] = [None] * n_projects  # type: ignore[list-item]
        for serial, i in enumerate(order, start=1):
            normalized = NormalizedName(f"proj-{i:0{width}d}")
            name = f"Proj_{i:0{width}d}" if i % 10 == 3 else normalized
            project = FakeProject(name, normalized, serial, gen=spec)
            index._projects[normalized] = by_name[i] = project
            index._generated.append(name)
        index._serial = n_projects
        index._listed = by_name  # zero-padded names: index order is name order
        return index

    @classmethod
    def small(cls) -> FakeIndex:
        """About a dozen realistic projects; see `add_small_projects`."""
        return cls().add_small_projects()

    def add_small_projects(self) -> FakeIndex:
        """Dependencies, pre-releases, yanks, escaping, normalising, sdist-only, PEP 792..."""
        self.add_project(
            "alpha",
            ["1.0", "2.0"],
            requires_dist=["beta>=1.0"],
            requires_python=">=3.8",
            summary="The first project",
        )
        self.add_project("beta", ["1.0", "1.1", "2.0b1"], summary="Needed by alpha")
        self.add_project("gamma", ["1.0", "1.1"], summary="Has a yanked release")
        self.yank("gamma", "1.1", "broken build")
        self.add_project("zeta", ["1.0", "1.1"], summary="Yanked without a reason")
        self.yank("zeta", "1.1")
        self.add_project("delta", ["0.1"], requires_python=">=3.8,<4", summary="Escape <me> & co")
        self.add_project("Zope.Interface_Thing", ["5.0"], requires_dist=["alpha"])
        self.add_project("epsilon", ["1.0"], wheel=False, summary="Source only")
        self.add_project("eta", ["1.0"], tags=["py3-none-any", "cp311-cp311-manylinux_2_17_x86_64"])
        # A wheel without PEP 658 metadata but with a PEP 740 provenance, uploaded on a whole
        # second: PyPI then writes "upload-time" without a fraction (isoformat() + "Z").
        self.add_project("theta", ["1.0"], wheel=False)
        self.add_file(
            "theta",
            "1.0",
            FileKind.WHEEL,
            core_metadata=False,
            provenance=True,
            upload_time=datetime(2024, 2, 3, 4, 5, 6),
        )
        self.add_project(
            "iota",
            ["1.0"],
            requires_dist=['kappa[fast]>=1.0; python_version >= "3.8"'],
            status="deprecated",
            status_reason="Use alpha instead",
        )
        # A release whose files were all deleted: in "releases" of the JSON API, not in
        # "versions" of the simple API (PyPI derives those from the files).
        self.add_project("kappa", ["1.0", "2.0"])
        for f in list(self.project("kappa").releases["2.0"].files):
            self.remove_file("kappa", f)
        self.add_project("omicron", ["0.9"], status="archived", status_reason="Unmaintained")
        return self


def _timestamp(serial: int) -> int:
    return int((clock(serial) - datetime(1970, 1, 1)).total_seconds())
