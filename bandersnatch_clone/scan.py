"""Reading the tree for `verify`: each project's page, the files it links to checked against it,
and the listings the orphan sweep walks.

Two scanners, one interface (`Scanner`). `LocalScanner` is the fast path for a tree on a local
file system: a chunk of projects is read, stat'ed and its first files hashed in one thread job,
files are read in 1 MiB blocks into a per-thread buffer (hashlib releases the GIL on blocks that
big), so hashing runs on every core. `StoreScanner` goes through any `Storage` (an object
store): one HEAD per file for ``--quick`` (the size, and the sha256 recorded at upload), a
streamed GET per file otherwise, at most ``workers`` requests at once, one chunk per stream in
memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote

from bandersnatch_clone import layout
from bandersnatch_clone.errors import MissingFile, UnsafePath
from bandersnatch_clone.storage import FileStat, Storage

T = TypeVar("T")

MiB = 1 << 20
# Hash jobs: small files go in batches, so a tree of small files is not all executor overhead.
_BATCH_BYTES, _BATCH_FILES = 8 * MiB, 64
#: Directory entries (or linked pages) a local scanner hands over per thread job.
_LISTING_BATCH = 1000
#: Chunks at least this big are hashed off the event loop (a thread hop costs less).
_HASH_OFF_LOOP = 64 * 1024


class Kind(StrEnum):
    """What is wrong; ``Problem.path`` is the file (or page folder) it is wrong with."""

    MISSING = "missing"  # a file a page links to does not exist
    CORRUPT = "corrupt"  # its sha256 (or size) differs from the page's
    DANGLING = "dangling"  # a page links to missing files (pip would get a 404)
    BAD_PAGE = "bad-page"  # a ledger project's page (or one of its forms) is missing or bad
    UNLISTED = "unlisted"  # pages or JSON copies of a project the ledger does not know
    ORPHAN = "orphan"  # a file under web/packages that no page links to
    TEMP = "temp"  # a temp file left by an interrupted write


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing found wrong, and what this run did about it."""

    kind: Kind
    #: Tree path relative to the mirror directory.
    path: str
    project: str | None
    detail: str
    #: "" = left as found; "repaired", "resynced", "deleted", "would ...", "repair failed: ...".
    action: str = ""

    @property
    def fixed(self) -> bool:
        return self.action in ("repaired", "resynced", "deleted", "removed by re-sync")


@dataclass(frozen=True, slots=True)
class Linked:
    """A file a page links to, with what the page says about it."""

    path: str  # "web/packages/..."
    filename: str  # the distribution's filename (also for its ``.metadata``)
    sha256: str | None
    size: int | None
    metadata: bool = False


@dataclass(slots=True)
class Check:
    """One project's verification."""

    name: str
    problems: list[Problem] = field(default_factory=list)
    links: list[Linked] = field(default_factory=list)
    bad: list[Linked] = field(default_factory=list)
    files: int = 0
    hashed: int = 0

    def add(self, kind: Kind, path: str, detail: str, link: Linked | None = None) -> None:
        self.problems.append(Problem(kind, path, self.name, detail))
        if link is not None:
            self.bad.append(link)


def _local(href: str) -> str | None:
    """`layout.link_to_path` on strings (pathlib costs more than the rest of a small file's
    check): ``../../packages/a/b`` -> ``web/packages/a/b``; None for links off this tree."""
    href = href.split("#", 1)[0]
    if not href.startswith("../../packages/"):
        return None
    try:
        parts = [layout.check_segment(unquote(p)) for p in href[15:].split("/")]
    except UnsafePath:
        return None
    return f"{layout.PACKAGES}/{'/'.join(parts)}"


def parse_page(body: bytes, root_uri: str | None) -> tuple[object, list[Linked]]:
    """(``name``, local links) of a PEP 691 project page; ValueError when it does not parse."""
    doc: Any = json.loads(body)  # Any: checked field by field below
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list):
        raise ValueError("no files list")
    prefix = f"{root_uri.rstrip('/')}/" if root_uri else None
    links: list[Linked] = []
    for f in files:
        if not (isinstance(f, dict) and isinstance(f.get("url"), str)):
            raise ValueError("a file without a url")
        href: str = f["url"]
        if prefix and href.startswith(prefix):
            href = "../../" + href[len(prefix) :]
        path = _local(href)
        if path is None:  # a link off this tree (an index-only mirror): not ours to check
            continue
        name, hashes, size = f.get("filename"), f.get("hashes"), f.get("size")
        if not isinstance(name, str) or not isinstance(hashes, dict):
            raise ValueError(f"{href}: no filename or hashes")
        size = size if isinstance(size, int) and not isinstance(size, bool) else None
        links.append(Linked(path, name, hashes.get("sha256"), size))
        # PEP 714: core-metadata is false, true (no hashes) or a dict of hashes.
        if core := f.get("core-metadata"):
            sha = core.get("sha256") if isinstance(core, dict) else None
            links.append(Linked(f"{path}.metadata", name, sha, None, True))  # PEP 658
    return doc.get("name"), links


def _page_links(body: bytes | None, root_uri: str | None) -> list[str] | None:
    if body is None:
        return None
    try:
        return [link.path for link in parse_page(body, root_uri)[1]]
    except ValueError:
        return None


def default_workers() -> int:
    """Two hashing threads per core: on a warm cache one per core is enough, on a cold disk the
    extra reads in flight pay (docs/verify.md has the figures)."""
    return min(32, 2 * (os.cpu_count() or 1))


_buffers = threading.local()


def sha256_file(path: Path | str) -> tuple[str, int]:
    """(sha256, size) of a file read in 1 MiB blocks into a per-thread buffer; hashlib releases
    the GIL on buffers this big, so threads hash in parallel."""
    buf: bytearray | None = getattr(_buffers, "buf", None)
    if buf is None:
        buf = _buffers.buf = bytearray(MiB)
    view, digest, size = memoryview(buf), hashlib.sha256(), 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
            size += n
    return digest.hexdigest(), size


def walk_files(root: Path, top: str) -> Iterator[str]:
    """Tree paths of the files below ``root/top``, lazily: one open directory per level."""
    try:
        stack = [(top, os.scandir(root / top))]
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        while stack:
            rel, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                entries.close()
                stack.pop()
            elif entry.is_dir(follow_symlinks=False):
                try:
                    stack.append((f"{rel}/{entry.name}", os.scandir(entry.path)))
                except FileNotFoundError:
                    continue
            else:
                yield f"{rel}/{entry.name}"
    finally:
        for _, entries in stack:
            entries.close()


def _entries(folder: Path) -> Iterator[tuple[str, bool]]:
    """(name, is a folder) of each entry of `folder`; nothing when it does not exist."""
    try:
        entries = os.scandir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    with entries:
        for entry in entries:
            yield entry.name, entry.is_dir()


def _take(items: Iterator[T], n: int) -> list[T]:
    return [item for _, item in zip(range(n), items, strict=False)]


class Scanner(Protocol):
    """How `verify` reads a tree; paths are tree paths (``web/...``) as strings."""

    async def check(self, names: list[str]) -> list[Check]:
        """Each project's JSON page, its HTML forms, and every file it links to: present, of
        the page's size and (unless quick) of the page's sha256."""

    async def links(self, pages: list[str]) -> list[list[str] | None]:
        """The tree paths each JSON page links to; None for a page missing or unreadable."""

    async def exists(self, path: str) -> bool: ...

    def entries(self, top: str) -> AsyncIterator[tuple[str, bool]]:
        """(name, is a folder) of what is directly below the folder `top` (a name may come
        more than once)."""

    def files(self, top: str) -> AsyncIterator[str]:
        """Every file below the folder `top`, in no particular order."""

    async def close(self) -> None: ...


class LocalScanner:
    """A tree in a local directory, read on a pool of threads (see the module docstring)."""

    def __init__(self, root: Path, root_uri: str | None, *, quick: bool, workers: int) -> None:
        self.root, self.root_str, self.root_uri, self.quick = root, str(root), root_uri, quick
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="verify")

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def _inspect(self, name: str) -> tuple[Check, list[list[Linked]]]:
        """Read the page, stat what it links to; the files to hash, in batches. Blocking."""
        check, root = Check(name), self.root_str
        page_dir = f"{layout.SIMPLE}/{layout.check_segment(name)}"
        page = f"{page_dir}/{layout.V1_JSON_PAGE}"
        try:
            with open(f"{root}/{page}", "rb") as f:
                name_in_page, check.links = parse_page(f.read(), self.root_uri)
            if name_in_page != name:
                raise ValueError(f"the page is for {name_in_page!r}")
        except (FileNotFoundError, NotADirectoryError):
            check.add(Kind.BAD_PAGE, page, "page missing")
            return check, []
        except ValueError as e:
            check.add(Kind.BAD_PAGE, page, f"page does not parse: {e}")
            return check, []
        for form in (layout.HTML_PAGE, layout.V1_HTML_PAGE):
            if not os.path.isfile(f"{root}/{page_dir}/{form}"):
                check.add(Kind.BAD_PAGE, f"{page_dir}/{form}", "page missing")
        batches: list[list[Linked]] = [[]]
        size = missing = 0
        for link in check.links:
            check.files += 1
            try:
                st: os.stat_result | None = os.stat(f"{root}/{link.path}")
            except OSError:
                st = None
            if st is None or not stat.S_ISREG(st.st_mode):
                missing += 1
                check.add(Kind.MISSING, link.path, "linked from the page, not on disk", link)
            elif link.size is not None and st.st_size != link.size:
                detail = f"size {st.st_size}, the page says {link.size}"
                check.add(Kind.CORRUPT, link.path, detail, link)
            elif not self.quick and link.sha256 is not None:
                if size >= _BATCH_BYTES or len(batches[-1]) >= _BATCH_FILES:
                    batches.append([])
                    size = 0
                batches[-1].append(link)
                size += st.st_size
        if missing:
            check.add(Kind.DANGLING, page_dir, f"links {missing} missing files")
        return check, [b for b in batches if b]

    def _hash(self, batch: list[Linked]) -> tuple[list[tuple[Kind, Linked, str]], int]:
        """(problems, bytes read) of a batch of files. Blocking."""
        problems: list[tuple[Kind, Linked, str]] = []
        total = 0
        for link in batch:
            try:
                digest, n = sha256_file(f"{self.root_str}/{link.path}")
            except OSError:
                problems.append((Kind.MISSING, link, "vanished while being read"))
                continue
            total += n
            if digest != (link.sha256 or "").lower():
                problems.append(
                    (Kind.CORRUPT, link, f"sha256 {digest}, the page says {link.sha256}")
                )
        return problems, total

    @staticmethod
    def _merge(check: Check, hashed: tuple[list[tuple[Kind, Linked, str]], int]) -> None:
        for kind, link, detail in hashed[0]:
            check.add(kind, link.path, detail, link)
        check.hashed += hashed[1]

    def _inspect_chunk(self, names: list[str]) -> list[tuple[Check, list[list[Linked]]]]:
        """`_inspect` a few projects and hash each one's first batch in the same job: one
        executor round trip for several typical projects. Blocking."""
        out = []
        for name in names:
            check, batches = self._inspect(name)
            if batches:
                self._merge(check, self._hash(batches[0]))
            out.append((check, batches[1:]))
        return out

    async def check(self, names: list[str]) -> list[Check]:
        inspected = await self._run(self._inspect_chunk, names)
        jobs = [(check, self._run(self._hash, b)) for check, rest in inspected for b in rest]
        hashed_all = await asyncio.gather(*(job for _, job in jobs))
        for (check, _), hashed in zip(jobs, hashed_all, strict=True):
            self._merge(check, hashed)
        return [check for check, _ in inspected]

    def _read_links(self, pages: list[str]) -> list[list[str] | None]:
        out = []
        for page in pages:
            try:
                with open(f"{self.root_str}/{page}", "rb") as f:
                    body: bytes | None = f.read()
            except OSError:
                body = None
            out.append(_page_links(body, self.root_uri))
        return out

    async def links(self, pages: list[str]) -> list[list[str] | None]:
        return await self._run(self._read_links, pages)

    async def exists(self, path: str) -> bool:
        return await self._run(os.path.isfile, f"{self.root_str}/{path}")

    async def _drain(self, items: Iterator[T]) -> AsyncIterator[T]:
        """A blocking iterator advanced a batch at a time on the pool."""
        while batch := await self._run(_take, items, _LISTING_BATCH):
            for item in batch:
                yield item

    def entries(self, top: str) -> AsyncIterator[tuple[str, bool]]:
        return self._drain(_entries(self.root / top))

    def files(self, top: str) -> AsyncIterator[str]:
        return self._drain(walk_files(self.root, top))

    async def close(self) -> None:
        await asyncio.to_thread(self.pool.shutdown, True, cancel_futures=True)


class StoreScanner:
    """A tree in any `Storage` (an object store), at most `workers` requests at once."""

    def __init__(
        self, storage: Storage, root_uri: str | None, *, quick: bool, workers: int
    ) -> None:
        self.storage, self.root_uri, self.quick = storage, root_uri, quick
        self._slots = asyncio.Semaphore(workers)

    async def check(self, names: list[str]) -> list[Check]:
        return list(await asyncio.gather(*(self._project(name) for name in names)))

    async def _project(self, name: str) -> Check:
        check = Check(name)
        page_dir = f"{layout.SIMPLE}/{layout.check_segment(name)}"
        page = f"{page_dir}/{layout.V1_JSON_PAGE}"
        async with self._slots:
            body = await self.storage.read_bytes(PurePosixPath(page))
        if body is None:
            check.add(Kind.BAD_PAGE, page, "page missing")
            return check
        try:
            name_in_page, check.links = parse_page(body, self.root_uri)
            if name_in_page != name:
                raise ValueError(f"the page is for {name_in_page!r}")
        except ValueError as e:
            check.add(Kind.BAD_PAGE, page, f"page does not parse: {e}")
            return check
        forms = [f"{page_dir}/{form}" for form in (layout.HTML_PAGE, layout.V1_HTML_PAGE)]
        present = await asyncio.gather(*(self.exists(form) for form in forms))
        for form, there in zip(forms, present, strict=True):
            if not there:
                check.add(Kind.BAD_PAGE, form, "page missing")
        found = await asyncio.gather(*(self._file(link) for link in check.links))
        missing = 0
        for link, (kind, detail, hashed) in zip(check.links, found, strict=True):
            check.files += 1
            check.hashed += hashed
            if kind is Kind.MISSING:
                missing += 1
            if kind is not None:
                check.add(kind, link.path, detail, link)
        if missing:
            check.add(Kind.DANGLING, page_dir, f"links {missing} missing files")
        return check

    async def _file(self, link: Linked) -> tuple[Kind | None, str, int]:
        """(what is wrong or None, why, bytes hashed) of one linked file."""
        path = PurePosixPath(link.path)
        async with self._slots:
            if self.quick or link.sha256 is None:
                return self._compare(link, await self.storage.stat(path))
            digest, size = hashlib.sha256(), 0
            chunks = self.storage.read_chunks(path)
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if len(chunk) >= _HASH_OFF_LOOP:
                        await asyncio.to_thread(digest.update, chunk)
                    else:
                        digest.update(chunk)
            except MissingFile:
                return Kind.MISSING, "linked from the page, not in the store", 0
            finally:
                await chunks.aclose()
        if link.size is not None and size != link.size:
            return Kind.CORRUPT, f"size {size}, the page says {link.size}", size
        if digest.hexdigest() != link.sha256.lower():
            return Kind.CORRUPT, f"sha256 {digest.hexdigest()}, the page says {link.sha256}", size
        return None, "", size

    @staticmethod
    def _compare(link: Linked, found: FileStat | None) -> tuple[Kind | None, str, int]:
        """--quick: the size, and the sha256 recorded at upload where there is one (a file
        overwritten by another tool without it is checked by its size alone)."""
        if found is None:
            return Kind.MISSING, "linked from the page, not in the store", 0
        if link.size is not None and found.size != link.size:
            return Kind.CORRUPT, f"size {found.size}, the page says {link.size}", 0
        recorded, expected = found.sha256, (link.sha256 or "").lower()
        if recorded is not None and expected and recorded != expected:
            return Kind.CORRUPT, f"recorded sha256 {recorded}, the page says {expected}", 0
        return None, "", 0

    async def links(self, pages: list[str]) -> list[list[str] | None]:
        async def one(page: str) -> list[str] | None:
            async with self._slots:
                body = await self.storage.read_bytes(PurePosixPath(page))
            return _page_links(body, self.root_uri)

        return list(await asyncio.gather(*(one(page) for page in pages)))

    async def exists(self, path: str) -> bool:
        async with self._slots:
            return await self.storage.size(PurePosixPath(path)) is not None

    async def entries(self, top: str) -> AsyncIterator[tuple[str, bool]]:
        # An object store lists keys in order, so one folder's keys come together: each name
        # once (another backend may repeat a name; the sweep copes).
        last: tuple[str, bool] | None = None
        start = len(top) + 1
        async for path, _ in self.storage.iterate(PurePosixPath(top)):
            name, slash, _ = path.as_posix()[start:].partition("/")
            entry = (name, bool(slash))
            if entry != last:
                yield entry
                last = entry

    async def files(self, top: str) -> AsyncIterator[str]:
        async for path, _ in self.storage.iterate(PurePosixPath(top)):
            yield path.as_posix()

    async def close(self) -> None:
        pass
