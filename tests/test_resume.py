"""kill -9 in the middle of a sync: the tree stays consistent and the rerun resumes exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bandersnatch_clone.state import Journal
from tests.fake_upstream import FakeUpstream
from tests.mirror_helpers import write_config
from tests.treecheck import check_tree, package_files, sha256_of, tree_snapshot

CLI = [sys.executable, "-m", "bandersnatch_clone.cli"]


def _sync(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "-c", str(config), "mirror"], capture_output=True, text=True, timeout=120
    )


def _placed_files_are_whole(directory: Path, expected: dict[str, str]) -> list[str]:
    """Every file under web/packages is a complete upstream file: nothing partial is visible."""
    bad = []
    for p in (directory / "web" / "packages").rglob("*"):
        if (
            p.is_file()
            and not p.name.endswith(".metadata")
            and sha256_of(p) != expected.get(p.name)
        ):
            bad.append(p.name)
    return bad


def test_kill_9_mid_run_then_resume_equals_uninterrupted(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    expected = {
        f.filename: f.digests().sha256 for p in upstream.index.listed() for _, f in p.files()
    }
    reference = tmp_path / "reference"
    assert _sync(write_config(tmp_path / "ref.toml", reference, upstream)).returncode == 0

    directory = tmp_path / "mirror"
    config = write_config(
        tmp_path / "m.toml", directory, upstream, metadata_workers=1, download_workers=2
    )
    upstream.latency = 0.05
    proc = subprocess.Popen(
        [*CLI, "-c", str(config), "mirror"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    problems: list[str] = []
    deadline = time.monotonic() + 60
    try:
        # Watch the tree like a reader would while the sync runs; kill it once 12 files and
        # 3 projects are done, with more files of other projects in flight.
        while time.monotonic() < deadline and proc.poll() is None:
            if (directory / "web").exists():
                problems += check_tree(directory) + _placed_files_are_whole(directory, expected)
                journal_now = Journal(directory).load()
                done_now = len(journal_now.done) if journal_now else 0
                if len(package_files(directory)) >= 12 and done_now >= 3:
                    break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    killed_while_running = proc.returncode == -signal.SIGKILL
    problems += check_tree(directory) + _placed_files_are_whole(directory, expected)
    journal = Journal(directory).load()
    done_before_kill = set(journal.done) if journal else set()

    upstream.latency = 0.0
    upstream.reset_log()
    rerun = _sync(config)
    refetched = {
        r.path.split("/")[2]
        for r in upstream.requests
        if r.path.startswith("/simple/") and r.path != "/simple/"
    }
    assert (killed_while_running, problems) == (True, [])
    assert done_before_kill, "the kill came before any project finished: nothing to resume"
    assert rerun.returncode == 0, rerun.stderr
    assert refetched.isdisjoint(done_before_kill)
    assert tree_snapshot(directory) == tree_snapshot(reference)
    assert check_tree(directory) == []
    assert not (directory / "todo").exists()
    assert not (directory / ".tmp").exists() or not any((directory / ".tmp").iterdir())


def test_leftover_temp_files_are_removed_by_the_next_run(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    (directory / ".tmp").mkdir(parents=True)
    (directory / ".tmp" / "part-crashed").write_bytes(b"half a wheel")
    result = _sync(write_config(tmp_path / "m.toml", directory, upstream))
    assert (result.returncode, os.path.exists(directory / ".tmp" / "part-crashed")) == (0, False)
