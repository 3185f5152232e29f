"""kill -9 again and again: at every kill the tree is consistent, each rerun resumes, and the tree
the last run leaves equals an uninterrupted sync."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin

import pytest

from bandersnatch_clone import serve
from bandersnatch_clone.layout import linked_paths
from bandersnatch_clone.state import Journal, read_status
from bandersnatch_clone.storage.filesystem import FilesystemStorage
from tests.fake_upstream import FakeIndex, FakeUpstream
from tests.mirror_helpers import make_config, mirror, root_projects, write_config
from tests.test_faults import Known, stray_files, upstream_files
from tests.treecheck import check_tree, parse_anchors, tree_snapshot

CLI = [sys.executable, "-m", "bandersnatch_clone.cli"]
KILLS = 20
SEED = 20_240_605
METADATA_WORKERS, DOWNLOAD_WORKERS = 2, 3
#: Projects one run has in flight at most: what a kill may cost the next run.
IN_FLIGHT = METADATA_WORKERS + DOWNLOAD_WORKERS
POLL = 0.002


@dataclass(frozen=True, slots=True)
class Moment:
    """When to kill a run: ``n`` ms after it started (often before its first request, while it
    folds the last journal), after ``n`` more upstream requests, ``n`` ms after its first
    request, or once ``n`` more files sit under web/packages."""

    kind: str
    n: int


#: Moment kind -> the range its ``n`` is drawn from.
MOMENT_RANGES = {"started": (100, 450), "requests": (1, 40), "ms": (0, 150), "files": (1, 12)}


def moments(rng: random.Random) -> list[Moment]:
    kinds = [rng.choice(sorted(MOMENT_RANGES)) for _ in range(KILLS)]
    return [Moment(kind, rng.randint(*MOMENT_RANGES[kind])) for kind in kinds]


def _trigger(moment: Moment, upstream: FakeUpstream, directory: Path) -> Callable[[], bool]:
    """A predicate that turns true at `moment`, measured from when it is made."""
    started = time.monotonic()
    requests_before = upstream.total
    files_before = _count_files(directory)
    first_request: list[float] = []

    def due() -> bool:
        if moment.kind == "started":
            return time.monotonic() - started >= moment.n / 1000
        if moment.kind == "requests":
            return upstream.total - requests_before >= moment.n
        if moment.kind == "files":
            return _count_files(directory) - files_before >= moment.n
        if not first_request and upstream.total > requests_before:
            first_request.append(time.monotonic())
        return bool(first_request) and time.monotonic() - first_request[0] >= moment.n / 1000

    return due


def _count_files(directory: Path) -> int:
    """Distribution files under web/packages, counted while a run may be pruning folders
    (`os.walk` skips a folder that vanishes under it; `Path.rglob` raises)."""
    walk = os.walk(directory / "web" / "packages")
    return sum(1 for _, _, names in walk for name in names if not name.endswith(".metadata"))


def _root_serial(directory: Path) -> int | None:
    root = directory / "web/simple/index.v1_json"
    if not root.exists():
        return None
    serial: int = json.loads(root.read_bytes())["meta"]["_last-serial"]
    return serial


#: `check_tree` compares a project's HTML and JSON pages. They are three files written one after
#: the other, so a kill between two writes leaves them listing different (complete, linked)
#: sets until the next run rewrites the project: not a hazard for a reader, so tolerated here.
TORN_PAGES = " and index.v1_json list different files"


def _pages_without_json(directory: Path) -> list[str]:
    """Links in HTML pages of project folders that have no JSON page (yet, or any more): those
    `check_tree` does not look at."""
    problems = []
    for html in (directory / "web/simple").glob("*/index*html"):
        if (html.parent / "index.v1_json").exists():
            continue
        for anchor in parse_anchors(html.read_bytes()):
            href = (anchor.get("href") or "").split("#", 1)[0]
            target = html.parent.joinpath(href).resolve()
            if not target.is_file():
                problems.append(f"{html}: {href} -> missing file")
    return problems


def _problems_after_kill(directory: Path, known: Known) -> list[str]:
    problems = [p for p in check_tree(directory) if not p.endswith(TORN_PAGES)]
    problems += stray_files(directory, known) + _pages_without_json(directory)
    status, root = read_status(directory), _root_serial(directory)
    # The root index is written before status: status never runs ahead of it.
    if status and (root is None or root < status):
        problems.append(f"status {status} ahead of the root index ({root})")
    return problems


#: Projects `_change_upstream` gives a new release: the earliest in listing order, so mostly
#: ones the interrupted runs have already mirrored.
TOUCHED = 20


def _change_upstream(index: FakeIndex) -> None:
    """Midway through the kills: new releases, a new project, a yank, removed files, a removed
    release and removed projects, so that later kills also land in updates of mirrored
    projects, in the cleanup of the files they no longer link and in deletions."""
    generated = [p.name for p in index.listed() if p.normalized.startswith("proj-")]
    index.touch(generated[:TOUCHED])
    index.add_project("Late_Comer", ["1.0", "1.1"])
    index.yank("gamma", "1.0", "superseded")
    index.remove_file("alpha", "alpha-1.0.tar.gz")
    index.remove_release("beta", "1.0")
    index.remove_project("delta")
    index.remove_project(generated[-1])


def test_twenty_kills_then_resume_equals_an_uninterrupted_sync(tmp_path: Path) -> None:
    index = FakeIndex.generate(150, files_per_project=2)
    index.add_small_projects()
    known = upstream_files(index)
    directory = tmp_path / "mirror"
    log = tmp_path / "runs.log"
    problems: list[str] = []
    kills = finished_early = 0
    changed_at = KILLS // 2
    with FakeUpstream(index, latency=0.01) as upstream:
        config = write_config(
            tmp_path / "m.toml",
            directory,
            upstream,
            metadata_workers=METADATA_WORKERS,
            download_workers=DOWNLOAD_WORKERS,
        )
        plan = moments(random.Random(SEED))
        deadline = time.monotonic() + 90
        while plan and time.monotonic() < deadline:
            moment = plan[0]
            due = _trigger(moment, upstream, directory)
            with log.open("a") as err:
                proc = subprocess.Popen(
                    [*CLI, "-c", str(config), "mirror"], stdout=subprocess.DEVNULL, stderr=err
                )
            try:
                while proc.poll() is None and not due() and time.monotonic() < deadline:
                    time.sleep(POLL)
                proc.send_signal(signal.SIGKILL)
            finally:
                proc.wait()
            if proc.returncode == -signal.SIGKILL:
                kills += 1
                plan.pop(0)
                found = _problems_after_kill(directory, known)
                problems += [f"kill {kills} ({moment}): {p}" for p in found]
            else:
                # The run finished before its moment came: new work, and the kill is tried on
                # the next run.
                finished_early += 1
                if proc.returncode != 0:
                    problems.append(f"a run exited {proc.returncode}: see {log}")
                generated = [p.name for p in index.listed() if p.normalized.startswith("proj-")]
                index.touch(generated[-TOUCHED:])
                known = upstream_files(index, known)
            if kills == changed_at:
                _change_upstream(index)
                known = upstream_files(index, known)
                changed_at = -1
        page_requests = sum(
            1 for r in upstream.requests if r.path.startswith("/simple/") and r.path != "/simple/"
        )
        upstream.latency = 0.0
        last = subprocess.run(
            [*CLI, "-c", str(config), "mirror"], capture_output=True, text=True, timeout=60
        )
        reference = tmp_path / "reference"
        reference_run = asyncio.run(mirror(make_config(reference, upstream))).exit_code
    # Each kill loses at most the projects in flight; everything journalled is never redone.
    assert (kills, problems) == (KILLS, [])
    touched = TOUCHED * (1 + finished_early)
    assert page_requests <= len(index.listed()) + touched + (KILLS + 1) * IN_FLIGHT
    assert (last.returncode, reference_run) == (0, 0), last.stderr
    assert tree_snapshot(directory) == tree_snapshot(reference)
    assert (check_tree(directory), Journal(directory).load()) == ([], None)
    assert not any((directory / ".tmp").glob("*"))


def _sync(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "-c", str(config), "mirror"], capture_output=True, text=True, timeout=60
    )


def test_crash_after_a_page_update_before_its_cleanup(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    config = write_config(tmp_path / "m.toml", directory, upstream)
    assert _sync(config).returncode == 0
    upstream.index.remove_file("alpha", "alpha-1.0.tar.gz")
    reference = tmp_path / "reference"
    assert asyncio.run(mirror(make_config(reference, upstream))).exit_code == 0
    # The state a kill -9 leaves right after the new alpha pages were written: the file they
    # no longer link is still there, journalled as obsolete before the pages were replaced;
    # alpha is not journalled as done.
    old_links = linked_paths((directory / "web/simple/alpha/index.v1_json").read_bytes(), None)
    for page in (reference / "web/simple/alpha").iterdir():
        shutil.copyfile(page, directory / "web/simple/alpha" / page.name)
    new_links = linked_paths((directory / "web/simple/alpha/index.v1_json").read_bytes(), None)
    journal = Journal(directory)
    journal.begin(upstream.index.serial, 1)
    for path in set(old_links) - set(new_links):
        journal.obsolete("alpha", path)
    journal.close()
    rerun = _sync(config)
    assert (rerun.returncode, check_tree(directory)) == (0, [])
    assert tree_snapshot(directory) == tree_snapshot(reference)


def test_crash_midway_through_deleting_a_project(upstream: FakeUpstream, tmp_path: Path) -> None:
    directory = tmp_path / "mirror"
    config = write_config(tmp_path / "m.toml", directory, upstream)
    assert _sync(config).returncode == 0
    upstream.index.remove_project("epsilon")
    reference = tmp_path / "reference"
    assert asyncio.run(mirror(make_config(reference, upstream))).exit_code == 0
    # The engine journals a removed project's files and its removal, writes the root index,
    # then removes pages and files: the state a kill after the first page went leaves.
    links = linked_paths((directory / "web/simple/epsilon/index.v1_json").read_bytes(), None)
    journal = Journal(directory)
    journal.begin(upstream.index.serial, 0)
    for path in links:
        journal.obsolete("epsilon", path)
    journal.deleted("epsilon")
    journal.close()
    (directory / "web/simple/epsilon/index.v1_json").unlink()
    rerun = _sync(config)
    assert (rerun.returncode, check_tree(directory)) == (0, [])
    assert tree_snapshot(directory) == tree_snapshot(reference)


# -- a reader while a sync runs -------------------------------------------------------------

JSON_PAGE = "application/vnd.pypi.simple.v1+json"
HTML_PAGE = "text/html"


class MirrorServer:
    """`bandersnatch_clone.serve` on a free loopback port, in its own thread and event loop."""

    def __init__(self, web_root: Path) -> None:
        self.web_root = web_root
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> MirrorServer:
        self._thread = threading.Thread(target=self._serve, name="mirror-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or not self.port:
            raise RuntimeError("the mirror server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    def _serve(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            runner = loop.run_until_complete(serve.start(self.web_root, "127.0.0.1", 0))
            self.port = runner.addresses[0][1]
        finally:
            self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()


def _get(url: str, accept: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, b""


Link = tuple[str, str, str | None]  # absolute URL, sha256, sha256 of its .metadata


def _links(page_url: str, body: bytes, accept: str) -> list[Link]:
    """Every file a page links to, as a client reads it (relative links resolved)."""
    links: list[Link] = []
    if accept == JSON_PAGE:
        for f in json.loads(body)["files"]:
            core = f.get("core-metadata")
            meta = core.get("sha256") if isinstance(core, dict) else None
            links.append((urljoin(page_url, f["url"]), f["hashes"]["sha256"], meta))
        return links
    for anchor in parse_anchors(body):
        href, _, fragment = (anchor.get("href") or "").partition("#sha256=")
        core = anchor.get("data-core-metadata") or ""
        meta = core.removeprefix("sha256=") if core.startswith("sha256=") else None
        links.append((urljoin(page_url, href), fragment, meta))
    return links


class Reader(threading.Thread):
    """Walks every project page (JSON and HTML in turn) and fetches every file each links to,
    checking its sha256, until stopped.

    A file that answers 404 is a problem only if the page, read again, still links it: a page
    read just before the sync rewrote it may name a file the sync has since cleaned up.
    """

    def __init__(self, base: str, names: list[str], seed: int) -> None:
        super().__init__(name="reader", daemon=True)
        self.base = base
        self.names = names
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.problems: list[str] = []
        self.passes = self.pages = self.files = 0
        self._passed = threading.Condition()

    def run(self) -> None:
        while not self.stop.is_set():
            names = list(self.names)
            self.rng.shuffle(names)
            for i, name in enumerate(names):
                self._read_project(name, JSON_PAGE if i % 2 else HTML_PAGE)
            with self._passed:
                self.passes += 1
                self._passed.notify_all()

    def wait_passes(self, more: int, timeout: float) -> bool:
        """Block until `more` further whole passes are done."""
        with self._passed:
            target = self.passes + more
            return self._passed.wait_for(lambda: self.passes >= target, timeout)

    def _read_project(self, name: str, accept: str) -> None:
        page_url = f"{self.base}/simple/{name}/"
        status, body = _get(page_url, accept)
        if status == 404:
            return
        if status != 200:
            self.problems.append(f"{page_url}: HTTP {status}")
            return
        self.pages += 1
        for url, sha256, meta in _links(page_url, body, accept):
            self._check(page_url, accept, url, sha256)
            if meta is not None:
                self._check(page_url, accept, url + ".metadata", meta)

    def _check(self, page_url: str, accept: str, url: str, sha256: str) -> None:
        status, data = _get(url)
        if status == 200:
            self.files += 1
            if hashlib.sha256(data).hexdigest() != sha256:
                self.problems.append(f"{url}: sha256 mismatch")
            return
        again, body = _get(page_url, accept)
        still = again == 200 and any(
            link[0] == url or link[0] + ".metadata" == url
            for link in _links(page_url, body, accept)
        )
        if status != 404 or still:
            self.problems.append(f"{url}: HTTP {status}, linked from {page_url} ({accept})")


async def test_a_reader_never_sees_a_missing_file_or_a_wrong_hash(tmp_path: Path) -> None:
    index = FakeIndex.generate(80, files_per_project=2)
    index.add_small_projects()
    directory = tmp_path / "mirror"
    (directory / "web").mkdir(parents=True)
    names = [p.normalized for p in index.listed()] + ["brand-new", "never-there"]
    with FakeUpstream(index, latency=0.02) as upstream, MirrorServer(directory / "web") as site:
        config = make_config(directory, upstream)
        reader = Reader(site.url, names, seed=7)
        reader.start()
        try:
            first = await mirror(config)
            seen_first = (reader.passes, reader.files)
            generated = [p.name for p in index.listed() if p.normalized.startswith("proj-")]
            index.touch(generated[:20])
            index.remove_file("alpha", "alpha-1.0.tar.gz")
            index.remove_release("beta", "1.0")
            index.yank("gamma", "1.0", "superseded")
            index.remove_project("delta")
            index.remove_project(generated[-1])
            index.add_project("Brand_New", ["1.0"])
            second = await mirror(config)
            files_before_last_pass = reader.files
            # A whole pass more over the finished tree.
            finished = await asyncio.to_thread(reader.wait_passes, 2, 30)
        finally:
            reader.stop.set()
            await asyncio.to_thread(reader.join, 30)
    assert (first.exit_code, second.exit_code, finished) == (0, 0, True)
    assert reader.problems == []
    # The reader really ran alongside both syncs.
    assert seen_first[1] > 0
    assert files_before_last_pass > seen_first[1]
    assert check_tree(directory) == []


async def test_the_root_index_never_links_to_a_deleted_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = FakeIndex.generate(30, files_per_project=1)
    index.add_small_projects()
    directory = tmp_path / "mirror"
    page = PurePosixPath("web/simple/alpha/index.v1_json")
    # At the very moment alpha's page goes, what does the root index say? A spy on the storage
    # answers that exactly, with no polling race.
    root_when_page_deleted: list[dict[str, int]] = []
    real_delete, real_delete_many = FilesystemStorage.delete, FilesystemStorage.delete_many

    async def spying_delete(self: FilesystemStorage, path: PurePosixPath) -> bool:
        if path == page:
            root_when_page_deleted.append(root_projects(directory))
        return await real_delete(self, path)

    async def spying_delete_many(self: FilesystemStorage, paths: Iterable[PurePosixPath]) -> None:
        paths = list(paths)
        if page in paths:
            root_when_page_deleted.append(root_projects(directory))
        await real_delete_many(self, paths)

    with FakeUpstream(index) as upstream:
        config = make_config(directory, upstream)
        await mirror(config)
        # Everything changed, and alpha (first in line) answers 404 while the listing, lagging
        # behind, still names it: the run deletes alpha, then goes on with the others.
        index.touch([p.name for p in index.listed()])
        upstream.fail("/simple/alpha/", 404, times=100)
        monkeypatch.setattr(FilesystemStorage, "delete", spying_delete)
        monkeypatch.setattr(FilesystemStorage, "delete_many", spying_delete_many)
        outcome = await mirror(config)
    assert outcome.exit_code == 0
    assert len(root_when_page_deleted) == 1
    assert "alpha" not in root_when_page_deleted[0]
    assert "beta" in root_when_page_deleted[0]
    assert not (directory / page).exists()
