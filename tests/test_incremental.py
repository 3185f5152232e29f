"""Runs after the first look only at the listing rows whose serial moved, and still miss nothing:
new projects come, removed ones go, and the tree equals a fresh sync of the same upstream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bandersnatch_clone.plan import plan_from_listing
from bandersnatch_clone.state import read_listing_state
from tests.fake_upstream import FakeIndex, FakeUpstream
from tests.mirror_helpers import make_config, mirror
from tests.treecheck import tree_snapshot


@pytest.fixture
def whole_diffs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many listing rows each diff of the whole listing went through."""
    calls: list[int] = []

    def counting(ledger: Any, listing: Any, *args: Any, **kwargs: Any) -> Any:
        rows = list(listing)
        calls.append(len(rows))
        return plan_from_listing(ledger, rows, *args, **kwargs)

    monkeypatch.setattr("bandersnatch_clone.mirror.plan_from_listing", counting)
    return calls


async def _same_as_fresh(upstream: FakeUpstream, tmp_path: Path, directory: Path) -> bool:
    fresh = tmp_path / "fresh"
    await mirror(make_config(fresh, upstream))
    return tree_snapshot(fresh) == tree_snapshot(directory)


async def test_changed_and_new_projects_without_a_whole_diff(
    tmp_path: Path, whole_diffs: list[int]
) -> None:
    index = FakeIndex.generate(40, files_per_project=1)
    directory = tmp_path / "mirror"
    with FakeUpstream(index) as upstream:
        config = make_config(directory, upstream)
        await mirror(config)
        index.touch(["proj-000003", "proj-000017"])
        index.add_project("Brand_New", ["1.0"])
        upstream.reset_log()
        outcome = await mirror(config)
        pages = sorted(
            r.path
            for r in upstream.requests
            if r.path.startswith("/simple/") and r.path != "/simple/"
        )
        diffs = list(whole_diffs)
        same = await _same_as_fresh(upstream, tmp_path, directory)
    assert (outcome.exit_code, pages, diffs, same) == (
        0,
        ["/simple/brand-new/", "/simple/proj-000003/", "/simple/proj-000017/"],
        [40],  # the first run only
        True,
    )


@pytest.mark.parametrize("also_added", [False, True])
async def test_a_removal_is_never_missed(
    tmp_path: Path, whole_diffs: list[int], also_added: bool
) -> None:
    # With one project added as another goes, the listing keeps its length: the counts must still
    # show that something may have gone.
    index = FakeIndex.generate(30, files_per_project=1)
    directory = tmp_path / "mirror"
    with FakeUpstream(index) as upstream:
        config = make_config(directory, upstream)
        await mirror(config)
        index.remove_project("proj-000011")
        if also_added:
            index.add_project("newcomer", ["1.0"])
        outcome = await mirror(config)
        diffs = len(whole_diffs)
        same = await _same_as_fresh(upstream, tmp_path, directory)
    assert (outcome.result.deleted, diffs, same) == (["proj-000011"], 2, True)


async def test_the_whole_listing_is_diffed_at_least_daily(
    tmp_path: Path, whole_diffs: list[int]
) -> None:
    index = FakeIndex.generate(20, files_per_project=1)
    directory = tmp_path / "mirror"
    with FakeUpstream(index) as upstream:
        config = make_config(directory, upstream)
        await mirror(config)
        # Counts that lie (as a listing with a duplicate row would make them): a removal now
        # hides from the incremental path; only the daily whole diff finds it.
        state_file = directory / "listing.state"
        state = json.loads(state_file.read_text())
        state_file.write_text(json.dumps(state | {"rows": state["rows"] - 1}))
        index.remove_project("proj-000005")
        index.touch(["proj-000001"])
        hidden = await mirror(config)
        state = json.loads(state_file.read_text())
        state_file.write_text(json.dumps(state | {"checked": state["checked"] - 2 * 86400}))
        index.touch(["proj-000002"])
        found = await mirror(config)
        recorded = read_listing_state(directory)
    assert (hidden.result.deleted, found.result.deleted, len(whole_diffs)) == (
        [],
        ["proj-000005"],
        2,
    )
    assert (recorded.rows if recorded else None) == len(index)


async def test_a_failed_run_makes_the_next_one_diff_everything(
    tmp_path: Path, whole_diffs: list[int]
) -> None:
    index = FakeIndex.generate(20, files_per_project=1)
    directory = tmp_path / "mirror"
    with FakeUpstream(index) as upstream:
        config = make_config(directory, upstream)
        await mirror(config)
        index.touch(["proj-000001", "proj-000002"])
        upstream.fail("/simple/proj-000002/", 500, times=100)
        failed = await mirror(config)
        after_failure = read_listing_state(directory)
        upstream.clear_faults()
        healed = await mirror(config)
    assert (failed.exit_code, after_failure, healed.exit_code, len(whole_diffs)) == (
        1,
        None,
        0,
        2,
    )
