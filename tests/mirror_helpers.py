"""Shared helpers for tests that run the real engine against the fake upstream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bandersnatch_clone.config import Config, config_from_mapping
from bandersnatch_clone.mirror import Outcome, run
from bandersnatch_clone.retry import RetryPolicy
from tests.fake_upstream import FakeIndex, FakeUpstream

#: Retries without real waiting, so failure tests run in milliseconds.
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.005, jitter=False)


def make_config(directory: Path, upstream: FakeUpstream, **mirror: Any) -> Config:
    data = {
        "mirror": {
            "directory": str(directory),
            "upstream": upstream.url,
            "metadata_workers": 4,
            "download_workers": 4,
            **mirror,
        }
    }
    return config_from_mapping(data, directory.parent / "test-config.toml")


def write_config(path: Path, directory: Path, upstream: FakeUpstream, **mirror: Any) -> Path:
    lines = ["[mirror]", f'directory = "{directory}"', f'upstream = "{upstream.url}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in mirror.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def mirror(
    config: Config, names: list[str] | None = None, *, allow_removals: bool = False
) -> Outcome:
    return await run(config, names=names, retry=FAST_RETRY, allow_removals=allow_removals)


def expected_files(index: FakeIndex) -> dict[str, str]:
    """filename -> sha256 of every file the upstream lists (quarantined projects offer none)."""
    out: dict[str, str] = {}
    for project in index.listed():
        if project.status == "quarantined":
            continue
        for _, f in project.files():
            out[f.filename] = f.digests().sha256
    return out


def root_projects(directory: Path) -> dict[str, int]:
    doc = json.loads((directory / "web/simple/index.v1_json").read_bytes())
    return {p["name"]: p["_last-serial"] for p in doc["projects"]}


def project_page(directory: Path, name: str) -> dict[str, Any]:
    page: dict[str, Any] = json.loads(
        (directory / "web/simple" / name / "index.v1_json").read_bytes()
    )
    return page
