"""The two mirrors under test: how to install bandersnatch, configure either, and call them."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.upstream import ROOT

BANDERSNATCH_VERSION = "8.2.0"
PYTHON_312 = "/root/.pyenv/versions/3.12.1/bin/python3.12"
CLONE = ROOT / ".venv" / "bin" / "bandersnatch-clone"


@dataclass(frozen=True, slots=True)
class MirrorSettings:
    """One mirror run's knobs, written in each tool's own config dialect."""

    directory: Path
    upstream: str
    release_files: bool = True
    json: bool = False
    #: bandersnatch's ``workers``; ours keeps its own defaults unless given.
    workers: int = 3
    download_workers: int | None = None
    metadata_workers: int | None = None


def ensure_bandersnatch(cache: Path, python: str = PYTHON_312) -> Path:
    """``<cache>/bandersnatch-8.2.0/bin/bandersnatch``, built on first use (about 10 s)."""
    venv = cache / f"bandersnatch-{BANDERSNATCH_VERSION}"
    exe = venv / "bin" / "bandersnatch"
    if not exe.exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", f"bandersnatch=={BANDERSNATCH_VERSION}"],
            check=True,
            capture_output=True,
        )
    return exe


def write_clone_config(path: Path, s: MirrorSettings) -> Path:
    lines = [
        "[mirror]",
        f'directory = "{s.directory}"',
        f'upstream = "{s.upstream}"',
        f"release_files = {str(s.release_files).lower()}",
        f"json = {str(s.json).lower()}",
        "timeout = 120.0",
    ]
    if s.download_workers is not None:
        lines.append(f"download_workers = {s.download_workers}")
    if s.metadata_workers is not None:
        lines.append(f"metadata_workers = {s.metadata_workers}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_bandersnatch_config(path: Path, s: MirrorSettings) -> Path:
    path.write_text(
        "\n".join(
            [
                "[mirror]",
                f"directory = {s.directory}",
                f"master = {s.upstream}",
                "allow-non-https = true",
                f"json = {str(s.json).lower()}",
                f"release-files = {str(s.release_files).lower()}",
                "hash-index = false",
                f"workers = {s.workers}",
                "timeout = 120",
                "global-timeout = 36000",
                "stop-on-error = false",
                "verifiers = 3",
                "",
            ]
        )
    )
    return path


def clone_mirror(config: Path) -> list[str]:
    return [str(CLONE), "-c", str(config), "mirror"]


def clone_verify(config: Path) -> list[str] | None:
    """The verify command, or None while ``bandersnatch-clone verify`` does not exist yet."""
    probe = subprocess.run([str(CLONE), "verify", "--help"], capture_output=True)
    return [str(CLONE), "-c", str(config), "verify"] if probe.returncode == 0 else None


def bandersnatch_mirror(exe: Path, config: Path) -> list[str]:
    return [str(exe), "-c", str(config), "mirror"]


def bandersnatch_verify(exe: Path, config: Path) -> list[str]:
    # No --json-update: check the files against the JSON already on disk, as ours does.
    return [str(exe), "-c", str(config), "verify"]
