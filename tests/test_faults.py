"""A faulty upstream (5xx, 429, resets, short bodies, wrong bytes, stale serials) never breaks the
tree: a run completes or exits 1 naming the projects that failed, and once the faults stop one
more run leaves the same tree as a sync that never met a fault."""

from __future__ import annotations

import asyncio
import io
import re
from collections import Counter
from email.utils import formatdate
from pathlib import Path

import pytest

from bandersnatch_clone.errors import UpstreamError
from bandersnatch_clone.mirror import Outcome, run
from bandersnatch_clone.progress import Progress
from bandersnatch_clone.retry import RetryPolicy
from bandersnatch_clone.state import read_status
from tests.conftest import MakeUpstream
from tests.fake_upstream import Chaos, FakeIndex, FakeUpstream
from tests.mirror_helpers import FAST_RETRY, expected_files, make_config, mirror
from tests.treecheck import check_tree, sha256_of, tree_snapshot

#: Every fault kind at once: about one request in four goes wrong.
RATES = {
    "error": 0.06,
    "too_many": 0.03,
    "reset": 0.05,
    "truncate": 0.05,
    "wrong_bytes": 0.02,
    "stale": 0.05,
}
RETRY_AFTER = 7.0


class SleepRecorder:
    """The `RetryPolicy.sleep` seam: records each delay and yields instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def fast_policy(sleep: SleepRecorder, attempts: int = 3) -> RetryPolicy:
    return RetryPolicy(
        attempts=attempts, base_delay=0.001, max_delay=0.005, jitter=False, sleep=sleep
    )


def bigger_index(projects: int = 60) -> FakeIndex:
    """`FakeIndex.small()` plus ``projects`` generated ones (a wheel with .metadata and an sdist
    each), so that faults land on a few hundred requests."""
    index = FakeIndex.generate(projects, files_per_project=2)
    index.add_small_projects()
    return index


Known = dict[str, tuple[str, str | None]]


def upstream_files(index: FakeIndex, known: Known | None = None) -> Known:
    """filename -> (sha256, sha256 of its .metadata) of every file `index` offers, added to
    ``known`` (files removed upstream stay legitimate while an old page still links them)."""
    out: Known = dict(known or {})
    for project in index.listed():
        for _, f in project.files():
            out[f.filename] = (f.digests().sha256, f.digests().metadata_sha256)
    return out


def stray_files(directory: Path, known: Known) -> list[str]:
    """Files under web/packages that are not byte for byte an upstream file or its metadata."""
    bad = []
    packages = directory / "web" / "packages"
    for path in packages.rglob("*") if packages.is_dir() else ():
        if not path.is_file():
            continue
        is_metadata = path.name.endswith(".metadata")
        digests = known.get(path.name.removesuffix(".metadata"))
        if digests is None:
            bad.append(f"{path}: not an upstream file")
        elif sha256_of(path) != digests[1 if is_metadata else 0]:
            bad.append(f"{path}: wrong bytes")
    return bad


async def chaos_run(
    directory: Path, upstream: FakeUpstream, policy: RetryPolicy
) -> tuple[Outcome | None, str]:
    """One run under faults: (outcome, summary text), or (None, error) when the run as a whole
    stopped (the listing itself failed every attempt)."""
    progress = Progress(io.StringIO(), live=False)
    try:
        outcome = await run(make_config(directory, upstream), reporter=progress, retry=policy)
    except UpstreamError as e:
        return None, str(e)
    summary = progress.summary(
        serial_before=outcome.serial_before,
        serial_after=outcome.serial_after,
        exit_code=outcome.exit_code,
    )
    return outcome, summary.render_text()


def _mutate(index: FakeIndex) -> None:
    """Every kind of upstream change, so the healed run also has to clean up."""
    index.add_release("beta", "3.0")
    index.remove_file("alpha", "alpha-1.0.tar.gz")
    index.remove_project("epsilon")
    index.yank("alpha", "1.0", "broken")
    index.add_project("Brand_New", ["0.1"])
    index.touch(["proj-000007", "proj-000031"])


@pytest.mark.parametrize(
    "seed",
    # 3 and 8 make a .metadata fetch fail every attempt: the project must fail (and heal
    # next run), not lose its core-metadata for good.
    [1, 2, 3, 4, 5, 8],
)
async def test_random_faults_keep_the_tree_consistent_and_heal(
    make_upstream: MakeUpstream, tmp_path: Path, seed: int
) -> None:
    upstream = make_upstream(bigger_index())
    directory = tmp_path / "mirror"
    sleep = SleepRecorder()
    policy = fast_policy(sleep)
    upstream.chaos(Chaos(seed, **RATES, retry_after=str(int(RETRY_AFTER))))
    listed = {p.normalized for p in upstream.index.listed()}
    known = upstream_files(upstream.index)
    problems: list[str] = []
    failures: list[set[str]] = []
    for step in ("first sync", "after upstream changes"):
        if step != "first sync":
            _mutate(upstream.index)
            listed = {p.normalized for p in upstream.index.listed()}
            known = upstream_files(upstream.index, known)
        outcome, text = await chaos_run(directory, upstream, policy)
        problems += [f"{step}: {p}" for p in check_tree(directory)]
        problems += [f"{step}: {p}" for p in stray_files(directory, known)]
        if outcome is None:
            # Only the listing may stop a whole run: every other failure is a project's.
            if not text.endswith(f"({upstream.simple_url})"):
                problems.append(f"{step}: run stopped: {text}")
            continue
        failed = set(outcome.result.failed)
        failures.append(failed)
        unnamed = [name for name in failed if f"  {name}: " not in text]
        if failed - listed or unnamed or outcome.exit_code != (1 if failed else 0):
            problems.append(f"{step}: exit {outcome.exit_code}, failed {failed}, text {text}")
        if failed and read_status(directory) == upstream.index.serial:
            problems.append(f"{step}: serial committed although {failed} failed")
    upstream.chaos(None)
    healed = await mirror(make_config(directory, upstream))
    reference = tmp_path / "reference"
    await mirror(make_config(reference, upstream))
    injected = Counter(kind for kind, _ in upstream.injected)
    assert problems == []
    assert any(failures), "the faults never made a project fail: raise the rates"
    assert set(injected) == set(RATES), injected
    # Every 429 answered with a retry waited exactly its Retry-After; all others backed off.
    assert RETRY_AFTER in sleep.delays
    assert {d for d in sleep.delays if d != RETRY_AFTER} <= {0.001, 0.002, 0.004, 0.005}
    assert (healed.exit_code, check_tree(directory)) == (0, [])
    assert tree_snapshot(directory) == tree_snapshot(reference)


@pytest.mark.parametrize(
    ("header", "delays"),
    [
        ("7", [7.0, 7.0]),
        # An HTTP-date 30 s after the policy's clock.
        (formatdate(1_700_000_030, usegmt=True), [30.0, 30.0]),
        # Capped, so a hostile upstream cannot park the mirror for a day.
        ("86400", [300.0, 300.0]),
        # Unreadable: ordinary exponential backoff.
        ("soon", [0.001, 0.002]),
    ],
)
async def test_429_waits_for_retry_after(
    upstream: FakeUpstream, tmp_path: Path, header: str, delays: list[float]
) -> None:
    sleep = SleepRecorder()
    policy = RetryPolicy(
        attempts=3,
        base_delay=0.001,
        max_delay=0.005,
        jitter=False,
        sleep=sleep,
        clock=lambda: 1_700_000_000.0,
    )
    upstream.fail("/simple/alpha/", 429, times=2, headers={"Retry-After": header})
    outcome = await run(make_config(tmp_path / "mirror", upstream), retry=policy)
    statuses = [r.status for r in upstream.requests if r.path == "/simple/alpha/"]
    assert (outcome.exit_code, statuses, sleep.delays) == (0, [429, 429, 200], delays)


def _first_wheel(index: FakeIndex) -> str:
    return index.file("alpha", "alpha-1.0-py3-none-any.whl").path


@pytest.mark.parametrize(
    ("fault", "target"),
    [
        ("reset", "page"),
        ("reset", "file"),
        ("truncate", "page"),
        ("truncate", "file"),
        ("truncate", "listing"),
        ("503", "file"),
        ("503", "listing"),
    ],
)
async def test_one_transient_fault_is_retried_within_the_run(
    upstream: FakeUpstream, tmp_path: Path, fault: str, target: str
) -> None:
    path = {
        "page": "/simple/alpha/",
        "file": _first_wheel(upstream.index),
        "listing": "/simple/",
    }[target]
    if fault == "503":
        upstream.fail(re.compile(f"^{re.escape(path)}$"), 503)
    else:
        upstream.drop(re.compile(f"^{re.escape(path)}$"), fault)
    directory = tmp_path / "mirror"
    outcome = await mirror(make_config(directory, upstream))
    on_disk = {p.name: sha256_of(p) for p in (directory / "web/packages").rglob("*.whl")}
    wanted = {k: v for k, v in expected_files(upstream.index).items() if k.endswith(".whl")}
    assert (outcome.exit_code, upstream.count(path) >= 2) == (0, True)
    assert (on_disk, check_tree(directory)) == (wanted, [])


async def test_wrong_bytes_fail_the_project_then_the_next_run_heals(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    config = make_config(directory, upstream)
    upstream.corrupt(_first_wheel(upstream.index))
    first = await mirror(config)
    alpha_linked = (directory / "web/simple/alpha").exists()
    consistent = check_tree(directory)
    second = await mirror(config)
    reference = tmp_path / "reference"
    await mirror(make_config(reference, upstream))
    assert (first.exit_code, sorted(first.result.failed), alpha_linked) == (1, ["alpha"], False)
    assert (consistent, read_status(directory) == 0) == ([], False)
    assert (second.exit_code, tree_snapshot(directory)) == (0, tree_snapshot(reference))


async def test_stale_pages_are_refetched_past_the_cache(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    # A CDN that stays stale even for cache-busting queries: the project fails this run.
    upstream.stale("alpha", times=FAST_RETRY.attempts, bust=False)
    first = await mirror(make_config(directory, upstream))
    page_queries = [r.query != "" for r in upstream.requests if r.path == "/simple/alpha/"]
    # One that serves fresh to a cache-busting query: fine at the second attempt.
    upstream.stale("beta", times=5, bust=True)
    second = await mirror(make_config(directory, upstream))
    assert (first.exit_code, sorted(first.result.failed)) == (1, ["alpha"])
    assert page_queries == [False, True, True]
    assert (second.exit_code, check_tree(directory)) == (0, [])


async def test_metadata_that_failed_transiently_is_fetched_by_the_next_run(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    config = make_config(directory, upstream)
    metadata = _first_wheel(upstream.index) + ".metadata"
    upstream.fail(re.compile(f"^{re.escape(metadata)}$"), 503, times=FAST_RETRY.attempts)
    # Offered but not served this time: the project fails (its page is not written without
    # core-metadata for good), and the next run fetches it again.
    first = await mirror(config)
    second = await mirror(config)
    reference = tmp_path / "reference"
    await mirror(make_config(reference, upstream))
    assert (first.exit_code, sorted(first.result.failed), second.exit_code) == (1, ["alpha"], 0)
    assert tree_snapshot(directory) == tree_snapshot(reference)
