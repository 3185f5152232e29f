"""The removal guard: a listing that suddenly lacks many projects (cut short by a proxy, an
upstream losing projects for an hour), or an upstream that answers 404 for many pages, must not
empty the mirror. Such removals wait for an operator, the run says so and exits 4; everything
else in the run still happens."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from packaging.utils import canonicalize_name

from bandersnatch_clone.config import Config, config_from_mapping
from bandersnatch_clone.plan import SyncPlan, guard_removals
from bandersnatch_clone.state import read_status
from tests.fake_upstream import FakeIndex, FakeUpstream
from tests.mirror_helpers import make_config, mirror, root_projects, write_config

CLI = [sys.executable, "-m", "bandersnatch_clone.cli"]
GONE = [f"proj-{i:06d}" for i in range(12)]


def _plan(removals: int) -> SyncPlan:
    return SyncPlan(9, (), tuple(f"p{i}" for i in range(removals)))


@pytest.mark.parametrize(
    ("removals", "mirrored", "share", "held"),
    [
        (10, 20, 0.05, 0),  # a few never trip it, however small the mirror
        (11, 20, 0.05, 11),
        (50, 1000, 0.05, 0),  # 5% of the mirror
        (51, 1000, 0.05, 51),
        (700_000, 700_000, 1.0, 0),  # 1: no guard
    ],
)
def test_the_guard_holds_only_removals_beyond_its_share(
    removals: int, mirrored: int, share: float, held: int
) -> None:
    plan = guard_removals(_plan(removals), mirrored, share)
    assert (plan.held, len(plan.delete)) == (held, 0 if held else removals)


class _Setup(NamedTuple):
    fake: FakeIndex
    upstream: FakeUpstream
    config: Config
    directory: Path


@asynccontextmanager
async def _mirrored(tmp_path: Path, **settings: Any) -> AsyncIterator[_Setup]:
    """A mirror of 40 one-file projects, synced once, with its upstream still running."""
    index = FakeIndex.generate(40, files_per_project=1)
    directory = tmp_path / "mirror"
    with FakeUpstream(index) as upstream:
        config = make_config(directory, upstream, **settings)
        await mirror(config)
        yield _Setup(index, upstream, config, directory)


def _gone(directory: Path) -> list[str]:
    return [n for n in GONE if not (directory / "web/simple" / n / "index.html").exists()]


async def test_a_listing_missing_many_projects_removes_none_until_allowed(tmp_path: Path) -> None:
    async with _mirrored(tmp_path) as (index, _, config, directory):
        for name in GONE:
            index.remove_project(name)
        index.touch(["proj-000030"])
        held = await mirror(config)
        after_held = (_gone(directory), len(root_projects(directory)))
        touched = root_projects(directory)["proj-000030"]
        # Nothing moved upstream: the next run still sees the held removals and says so.
        again = await mirror(config)
        allowed = await mirror(config, allow_removals=True)
        gone_after = _gone(directory)
        quiet = await mirror(config)
    assert (held.exit_code, held.removals_held, held.result.deleted, after_held) == (
        4,
        12,
        [],
        ([], 40),
    )
    # The rest of the run happened: the touched project is updated, the serial advanced.
    assert (touched, held.serial_after) == (index.serial, index.serial)
    assert (again.exit_code, again.removals_held) == (4, 12)
    assert (allowed.exit_code, sorted(allowed.result.deleted), gone_after) == (0, GONE, GONE)
    assert (quiet.exit_code, quiet.planned, read_status(directory)) == (0, 0, index.serial)


#: The pages of the projects in GONE (proj-000000 to proj-000011).
GONE_PAGES = re.compile(r"^/simple/proj-0000(0[0-9]|1[01])/")


async def test_an_upstream_answering_404_for_many_projects_removes_none_until_allowed(
    tmp_path: Path,
) -> None:
    # A proxy or an upstream that answers 404 for every page it is asked for would otherwise
    # empty the mirror at the pace its projects change.
    async with _mirrored(tmp_path) as (index, upstream, config, directory):
        before = root_projects(directory)
        index.touch([*GONE, "proj-000030"])
        upstream.fail(GONE_PAGES, status=404, times=2 * len(GONE))  # this run and the next
        held = await mirror(config)
        after_held = (_gone(directory), root_projects(directory))
        again = await mirror(config)  # asks for them again: still 404, still held
        recovered = await mirror(config)  # the upstream answers again
        after_recovery = {str(canonicalize_name(k)): v for k, v in root_projects(directory).items()}
    assert (held.exit_code, held.removals_held, held.result.deleted) == (4, len(GONE), [])
    # Kept as they were (pages and root index rows); the rest of the run happened.
    assert after_held == ([], before | {"proj-000030": index.project("proj-000030").serial})
    assert (again.exit_code, again.removals_held, again.result.deleted) == (4, len(GONE), [])
    assert (recovered.exit_code, sorted(recovered.result.synced), recovered.result.deleted) == (
        0,
        GONE,
        [],
    )
    assert all(after_recovery[name] == index.project(name).serial for name in GONE)


async def test_404s_beyond_the_guard_are_removed_when_allowed(tmp_path: Path) -> None:
    async with _mirrored(tmp_path) as (index, upstream, config, directory):
        index.touch(GONE)
        upstream.fail(GONE_PAGES, status=404, times=len(GONE))
        allowed = await mirror(config, allow_removals=True)
        gone = _gone(directory)
    assert (allowed.exit_code, sorted(allowed.result.deleted), gone) == (0, GONE, GONE)


async def test_a_few_404s_are_removed_at_once(tmp_path: Path) -> None:
    # Projects deleted upstream between the listing and their page are everyday events.
    few = GONE[:3]
    async with _mirrored(tmp_path) as (index, upstream, config, directory):
        index.touch(few)
        upstream.fail(re.compile(r"^/simple/proj-00000[0-2]/"), status=404, times=len(few))
        outcome = await mirror(config)
        gone = _gone(directory)
    assert (outcome.exit_code, sorted(outcome.result.deleted), gone) == (0, few, few)


async def test_removal_guard_1_turns_it_off(tmp_path: Path) -> None:
    async with _mirrored(tmp_path, removal_guard=1.0) as (index, _, config, _):
        for name in GONE:
            index.remove_project(name)
        outcome = await mirror(config)
    assert (outcome.exit_code, sorted(outcome.result.deleted)) == (0, GONE)


async def test_removals_the_filters_ask_for_are_not_held(tmp_path: Path) -> None:
    # Narrowing the filters is the operator's own doing: those removals go at once.
    index = FakeIndex.generate(40, files_per_project=1)
    directory = tmp_path / "mirror"
    with FakeUpstream(index) as upstream:
        await mirror(make_config(directory, upstream))
        mirror_table = {"directory": str(directory), "upstream": upstream.url}
        narrowed = {
            "mirror": mirror_table,
            "plugins": {"enabled": ["blocklist_project"]},
            "blocklist": {"packages": GONE},
        }
        outcome = await mirror(config_from_mapping(narrowed, tmp_path / "narrowed.toml"))
    assert (outcome.exit_code, sorted(outcome.result.deleted), _gone(directory)) == (0, GONE, GONE)


def test_exit_4_and_a_summary_that_says_what_to_do(tmp_path: Path) -> None:
    index = FakeIndex.generate(40, files_per_project=1)
    directory = tmp_path / "mirror"
    with FakeUpstream(index) as upstream:
        config = write_config(tmp_path / "m.toml", directory, upstream)
        first = subprocess.run([*CLI, "-c", str(config), "mirror"], capture_output=True, timeout=60)
        for name in GONE:
            index.remove_project(name)
        held = subprocess.run(
            [*CLI, "-c", str(config), "--json", "mirror"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        status = subprocess.run(
            [*CLI, "-c", str(config), "status"], capture_output=True, text=True, timeout=60
        )
        allowed = subprocess.run(
            [*CLI, "-c", str(config), "mirror", "--allow-removals"], capture_output=True, timeout=60
        )
    summary = json.loads(held.stdout)
    assert "held:       12 removals" in status.stdout
    assert (first.returncode, held.returncode, summary["removals_held"], allowed.returncode) == (
        0,
        4,
        12,
        0,
    )
    assert "--allow-removals" in held.stderr
    assert _gone(directory) == GONE
