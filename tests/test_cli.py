"""The command line as cron and operators use it: exit codes, messages, summaries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bandersnatch_clone.cli import main
from bandersnatch_clone.config import load_config
from bandersnatch_clone.state import MirrorLock
from tests.fake_upstream import FakeUpstream
from tests.mirror_helpers import write_config

CLI = [sys.executable, "-m", "bandersnatch_clone.cli"]


def test_second_run_while_locked_exits_3(upstream: FakeUpstream, tmp_path: Path) -> None:
    directory = tmp_path / "mirror"
    directory.mkdir()
    config = write_config(tmp_path / "m.toml", directory, upstream)
    with MirrorLock(directory):
        result = subprocess.run(
            [*CLI, "-c", str(config), "mirror"], capture_output=True, text=True, timeout=60
        )
    assert (result.returncode, "lock" in result.stderr, upstream.total) == (3, True, 0)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('[mirror]\ndirectory = "m"\nworkers = 3\n', "mirror.workers"),
        ('[mirror]\ndirectory = "m"\ndownload_workers = "many"\n', "mirror.download_workers"),
        ('[mirror]\ndirectory = "m"\nupstream = "ftp://x"\n', "mirror.upstream"),
        ('[mirror]\nupstream = "https://pypi.org"\n', "mirror.directory"),
        ('[mirror]\ndirectory = "m"\njson = "yes"\n', "mirror.json"),
    ],
)
def test_bad_config_exits_2_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, key: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(body)
    code = main(["-c", str(config), "mirror"])
    err = capsys.readouterr().err
    assert (code, str(config) in err, key in err) == (2, True, True)


def test_missing_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["-c", str(tmp_path / "nope.toml"), "status"])
    assert (code, "nope.toml" in capsys.readouterr().err) == (2, True)


def test_mirror_json_summary_and_status(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = write_config(tmp_path / "m.toml", tmp_path / "mirror", upstream)
    result = subprocess.run(
        [*CLI, "-c", str(config), "--json", "mirror"], capture_output=True, text=True, timeout=60
    )
    summary = json.loads(result.stdout)
    status = subprocess.run(
        [*CLI, "status", "-c", str(config), "--json"], capture_output=True, text=True, timeout=60
    )
    info = json.loads(status.stdout)
    expected_files = sum(1 for p in upstream.index.listed() for _ in p.files())
    assert (
        result.returncode,
        summary["exit_code"],
        summary["projects_synced"],
        summary["files_downloaded"],
        summary["serial_after"],
    ) == (0, 0, 12, expected_files, upstream.index.serial)
    assert (info["serial"], info["projects"], info["files"], info["interrupted_run"]) == (
        upstream.index.serial,
        12,
        expected_files,
        None,
    )


def test_failed_run_exits_1_and_names_the_project(upstream: FakeUpstream, tmp_path: Path) -> None:
    import re

    config = write_config(tmp_path / "m.toml", tmp_path / "mirror", upstream, retries=0)
    upstream.fail(re.compile(r"^/simple/beta/"), status=503, times=1000)
    result = subprocess.run(
        [*CLI, "-c", str(config), "--json", "mirror"], capture_output=True, text=True, timeout=60
    )
    summary = json.loads(result.stdout)
    assert (result.returncode, list(summary["projects_failed"]), "beta" in result.stderr) == (
        1,
        ["beta"],
        True,
    )


def test_cron_output_has_no_carriage_returns(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = write_config(tmp_path / "m.toml", tmp_path / "mirror", upstream)
    result = subprocess.run(
        [*CLI, "-c", str(config), "mirror"], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, "\r" in result.stderr, "synced 12 projects" in result.stderr) == (
        0,
        False,
        True,
    )


def test_init_writes_a_config_that_loads(tmp_path: Path) -> None:
    path = tmp_path / "new.toml"
    code = main(["init", str(path), "--directory", "/srv/pypi", "--upstream", "http://x.test"])
    config = load_config(path)
    assert (code, str(config.mirror.directory), config.mirror.upstream) == (
        0,
        "/srv/pypi",
        "http://x.test",
    )


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "keep.toml"
    path.write_text("# mine\n")
    assert (main(["init", str(path)]), path.read_text()) == (2, "# mine\n")


def test_help_teaches_exit_codes() -> None:
    result = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=60)
    assert all(s in result.stdout for s in ("mirror", "sync", "status", "exit codes", "3  another"))
