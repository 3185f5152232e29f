"""The example plugin distribution in plugins/: pip-installed, found, used, uninstalled."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bandersnatch_clone.errors import PluginError
from bandersnatch_clone.filters import discover, load_filters
from tests.filters.helpers import config, dist, filenames, project

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
DISTRIBUTION = "bandersnatch-clone-filter-example"
GROUP = "bandersnatch_clone.release_file_filters.v1"


def _pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        check=True,
        capture_output=True,
        timeout=300,
    )
    importlib.invalidate_caches()


def _enabled_error() -> str:
    try:
        load_filters(config({"max_file_size": {"max_size": "1M"}}, ["max_file_size"]))
    except PluginError as exc:
        return exc.problem.split(";")[0]
    return "loaded"


@pytest.mark.slow
def test_example_plugin_installs_works_and_uninstalls(tmp_path: Path) -> None:
    # Built from a copy, so the source tree gets no build/ or .egg-info/ litter.
    source = shutil.copytree(PLUGINS, tmp_path / "plugins", ignore=shutil.ignore_patterns("build"))
    seen: dict[str, object] = {}
    _pip("install", "-q", "--no-deps", str(source))
    try:
        seen["group"] = [e.group for e in discover().get("max_file_size", ())]
        filters = load_filters(config({"max_file_size": {"max_size": "1M"}}, ["max_file_size"]))
        detail = project(
            "demo",
            [
                dist("demo-1.0.tar.gz", size=10**5),
                dist("demo-1.0-cp311-cp311-win32.whl", size=10**7),
            ],
        )
        seen["kept"] = filenames(filters.filter_project(detail, None))
        # Its own test suite, run the way its README says.
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        suite = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        # 0, or what it printed (so a failure shows in the assertion's diff).
        seen["own tests"] = suite.returncode and suite.stdout[-3000:] + suite.stderr[-3000:]
    finally:
        _pip("uninstall", "-q", "-y", DISTRIBUTION)
    seen["after uninstall"] = _enabled_error()
    assert seen == {
        "group": [GROUP],
        "kept": ["demo-1.0.tar.gz"],
        "own tests": 0,
        "after uninstall": "unknown plugin",
    }
