"""The removal guard: a listing that suddenly lacks many projects (cut short by a proxy, an
upstream losing projects for an hour) must not empty the mirror. Such removals wait for an
operator, the run says so and exits 4; everything else in the run still happens."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bandersnatch_clone.config import config_from_mapping
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


def _gone(directory: Path) -> list[str]:
    return [n for n in GONE if not (directory / "web/simple" / n / "index.html").exists()]


async def test_a_listing_missing_many_projects_removes_none_until_allowed(tmp_path: Path) -> None:
    index = FakeIndex.generate(40, files_per_project=1)
    directory = tmp_path / "mirror"
    with FakeUpstream(index) as upstream:
        config = make_config(directory, upstream)
        await mirror(config)
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


async def test_removal_guard_1_turns_it_off(tmp_path: Path) -> None:
    index = FakeIndex.generate(40, files_per_project=1)
    directory = tmp_path / "mirror"
    with FakeUpstream(index) as upstream:
        config = make_config(directory, upstream, removal_guard=1.0)
        await mirror(config)
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
