"""The one entry point: ``python -m benchmarks.run [--quick] [--only a,b,c,d,e]``.

Builds bandersnatch 8.2.0 into its own Python 3.12 virtualenv under ``benchmarks/.cache/``,
starts the fake upstream in a process of its own, runs bandersnatch-clone and bandersnatch
against it in turn and prints wall time, CPU time and peak RSS of each with the ratio. Results
are saved under ``<workdir>/results/``; ``--report`` prints them all as one Markdown table.
"""

from __future__ import annotations

import argparse
import compileall
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import report, scenarios, tools
from benchmarks.upstream import ROOT

CACHE = ROOT / "benchmarks" / ".cache"
GROUPS: dict[str, tuple[str, Callable[[scenarios.Context], list[report.Row]]]] = {
    # (a), (d) and (e) share one upstream and one pair of mirrors.
    "e": ("big", scenarios.big_files),
    "a": ("big", scenarios.big_files),
    "d": ("big", scenarios.big_files),
    "b": ("slow", scenarios.slow_link),
    "c": ("scale", scenarios.pypi_scale),
}
ORDER = ("big", "slow", "scale")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test (< 3 min)")
    p.add_argument("--only", default="abcde", help="scenario letters (default: abcde)")
    p.add_argument("--big-mb", type=int, help="(a)/(d)/(e) total MiB (default 2000; quick 24)")
    p.add_argument("--file-mb", type=int, help="(a)/(d)/(e) MiB per wheel (default 10; quick 2)")
    p.add_argument(
        "--rounds", type=int, help="interleaved rounds, median taken (default 5; quick 1)"
    )
    p.add_argument("--slow-projects", type=int, help="(b) projects (default 2000; quick 40)")
    p.add_argument("--latency", type=float, default=0.05, help="(b) seconds per request")
    p.add_argument("--scale-projects", type=int, help="(c) projects (default 700000; quick 3000)")
    p.add_argument("--cap", type=float, help="(c) bandersnatch time limit, s (600; quick 15)")
    p.add_argument("--no-bandersnatch", action="store_true", help="ours only")
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="do not split CPUs between the upstream and the client under test",
    )
    p.add_argument("--workdir", type=Path, help="scratch space (default benchmarks/.cache/run)")
    p.add_argument("--report", action="store_true", help="print saved results as Markdown")
    return p.parse_args(argv)


def cpu_split(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """The upstream gets the first half of the CPUs, the measured client the rest."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    q = args.quick
    workdir = (args.workdir or CACHE / ("run-quick" if q else "run")).resolve()
    results = workdir / "results"
    workdir.mkdir(parents=True, exist_ok=True)
    pythons = {"bandersnatch-clone's Python": str(ROOT / ".venv" / "bin" / "python")}
    if args.report:
        saved = [results / f"{g}.json" for g in ORDER]
        print(report.markdown([r for path in saved if path.exists() for r in report.load(path)]))
        return 0

    exe = None
    if not args.no_bandersnatch:
        started = time.perf_counter()
        exe = tools.ensure_bandersnatch(CACHE)
        print(
            f"bandersnatch {tools.BANDERSNATCH_VERSION}: {exe} "
            f"({time.perf_counter() - started:.1f} s)"
        )
        pythons["bandersnatch's Python"] = str(exe.parent / "python")
    # pip byte-compiles a package it installs; an editable install is compiled on first import,
    # unless PYTHONDONTWRITEBYTECODE is set (as on some CI machines): then every run compiles
    # ~40 modules again (0.03-0.05 s each time). Compile once, as an install would.
    compileall.compile_dir(ROOT / "bandersnatch_clone", quiet=1)
    compileall.compile_dir(ROOT / "benchmarks", maxlevels=0, quiet=1)  # not .cache/ below it
    upstream_cpus, client_cpus = cpu_split(not args.no_pin)
    ctx = scenarios.Context(
        workdir=workdir,
        cache=CACHE,
        bandersnatch=exe,
        upstream_cpus=upstream_cpus,
        client_cpus=client_cpus,
        big_mb=args.big_mb or (24 if q else 2000),
        file_mb=args.file_mb or (2 if q else 10),
        slow_projects=args.slow_projects or (40 if q else 2000),
        slow_latency=args.latency,
        scale_projects=args.scale_projects or (3000 if q else 700_000),
        scale_cap=args.cap or (15 if q else 600),
        ours_cap=120 if q else 3600,
        rounds=args.rounds or (1 if q else 5),
    )
    print(report.machine(workdir, pythons))
    print(f"CPUs: upstream {upstream_cpus or 'any'}, client under test {client_cpus or 'any'}")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    tree = f"{commit or '?'}{' with uncommitted changes' if dirty else ''}"
    print(f"bandersnatch-clone at {tree}; logs: {ctx.log}", flush=True)
    groups = {GROUPS[letter][0] for letter in args.only if letter in GROUPS}
    rows: list[report.Row] = []
    if (workdir / scenarios.TRASH).exists():
        # Left by an interrupted run: deleted now, then ext4 gets time to stop skipping the
        # freed inodes (see `Context.discard`) before anything is measured.
        ctx.empty_trash()
        time.sleep(0 if q else 65)
    try:
        for group in ORDER:
            if group in groups:
                run = next(fn for g, fn in GROUPS.values() if g == group)
                got = run(ctx)
                report.save(got, results / f"{group}.json")
                rows += got
    finally:
        ctx.empty_trash()
    print()
    print(report.markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
