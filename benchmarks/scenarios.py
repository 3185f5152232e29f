"""The scenarios of issue 4: each starts a fake upstream, runs both mirrors against it in turn
and returns one `Row` per case.

(e) the ceiling, (a) a first sync of big files and (d) verify share one upstream and one pair of
mirrors; (b) a slow link and (c) PyPI scale have an upstream each.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks import tools
from benchmarks.measure import Measurement, run_measured
from benchmarks.report import Row, text
from benchmarks.upstream import ROOT, UpstreamProcess, make_certificate

MB = 1_000_000


@dataclass(frozen=True, slots=True)
class Context:
    workdir: Path
    cache: Path
    #: None: bandersnatch is left out (its column says why).
    bandersnatch: Path | None
    upstream_cpus: set[int] | None
    client_cpus: set[int] | None
    big_mb: int
    file_mb: int
    slow_projects: int
    slow_latency: float
    scale_projects: int
    #: Seconds bandersnatch may spend on the fresh (c) sync before it is stopped.
    scale_cap: float
    #: Interleaved rounds of (e) and (a), each figure the median.
    rounds: int
    #: Seconds our fresh (c) sync may take before it is stopped (a safety net, not a target).
    ours_cap: float

    @property
    def log(self) -> Path:
        return self.workdir / "benchmark.log"

    def fresh(self, name: str, *, evict: bool = False) -> Path:
        path = self.workdir / name
        self.discard(path, evict=evict)
        path.mkdir(parents=True)
        return path

    def discard(self, path: Path, *, evict: bool = False) -> None:
        """Move a finished tree aside; `empty_trash` deletes it once nothing is measured.

        ``evict`` (for trees of big files) also drops the tree's pages from the page cache.
        Kept, the page cache of (e)/(a)'s discarded trees (2 GB a run) fills the RAM by the
        fifth run, and from then on every run pays for reclaiming it: the same (e) run
        took 4.1 s while memory was free and 10.5 s after, nearly all of it system time.

        Deleting tens of thousands of files just before a measured run slows that run's file
        creation several times over: on a file system without a journal, ext4 passes over
        inodes freed in the last minute (five while their inode table block is still dirty)
        when it allocates new ones (``recently_deleted`` in its inode allocator: a third of the
        CPU in a kernel profile of (b)), so whichever tool ran second paid for the first one.
        """
        if path.exists():
            if evict:
                _evict(path)
            trash = self.workdir / TRASH
            trash.mkdir(exist_ok=True)
            path.rename(trash / f"{path.name}-{uuid.uuid4().hex[:12]}")

    def empty_trash(self) -> None:
        shutil.rmtree(self.workdir / TRASH, ignore_errors=True)

    def run(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cap: float | None = None,
        all_cpus: bool = False,
    ) -> Measurement:
        """Measure one child; ``all_cpus`` for work that leaves the upstream idle (verify)."""
        os.sync()  # the previous run's dirty pages are not this run's cost
        cpus = None if all_cpus else self.client_cpus
        m = run_measured(argv, log=self.log, env=env, cwd=ROOT, cpus=cpus, time_limit=cap)
        print(f"    {Path(argv[0]).name} {argv[-1]}: {m.brief()}", flush=True)
        return m


#: Trees of finished runs, deleted after the last measurement (see `Context.discard`).
TRASH = ".trash"


def _evict(tree: Path) -> None:
    """Drop a tree's file pages from the page cache (no privileges needed, unlike
    ``drop_caches``, and nothing else is evicted: the interpreters' modules stay cached)."""
    os.sync()  # only clean pages can be dropped
    for root, _, names in os.walk(tree):
        for name in names:
            fd = os.open(os.path.join(root, name), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


NO_BANDERSNATCH = "bandersnatch not installed (--no-bandersnatch)"


def _theirs(ctx: Context, run: Callable[[Path], Measurement]) -> tuple[Measurement | None, str]:
    return (None, NO_BANDERSNATCH) if ctx.bandersnatch is None else (run(ctx.bandersnatch), "")


def _median(runs: list[Measurement], *, by_cpu: bool = False) -> Measurement:
    """The median run, by wall time (or by CPU time, where the target is local work)."""
    return sorted(runs, key=lambda m: m.cpu if by_cpu else m.wall)[len(runs) // 2]


def _spread(runs: dict[str, list[Measurement]], *, by_cpu: bool = False) -> str:
    """How the rounds varied: each side's figures, in the order they ran."""
    what = "CPU" if by_cpu else "walls"
    return f"{what}: " + ", ".join(
        f"{key} {'/'.join(f'{m.cpu if by_cpu else m.wall:.2f}' for m in ms)} s"
        for key, ms in runs.items()
        if ms
    )


def _rounds(
    ctx: Context, ours: Callable[[], Measurement], theirs: Callable[[Path], Measurement]
) -> tuple[dict[str, list[Measurement]], str]:
    """`ctx.rounds` interleaved runs of ours and bandersnatch's: (runs by side, why theirs is
    missing)."""
    runs: dict[str, list[Measurement]] = {"ours": [], "bandersnatch": []}
    why = ""
    for _ in range(ctx.rounds):
        runs["ours"].append(ours())
        m, why = _theirs(ctx, theirs)
        if m is not None:
            runs["bandersnatch"].append(m)
    return runs, why


def _medians(
    runs: dict[str, list[Measurement]], *, by_cpu: bool = False
) -> tuple[Measurement | None, Measurement | None]:
    ours, theirs = runs["ours"], runs["bandersnatch"]
    return (
        _median(ours, by_cpu=by_cpu) if ours else None,
        _median(theirs, by_cpu=by_cpu) if theirs else None,
    )


def _count(directory: Path, suffix: str) -> int:
    return sum(1 for p in (directory / "web" / "packages").rglob(f"*{suffix}"))


def _report(rows: list[Row]) -> list[Row]:
    for row in rows:
        print(text(row), flush=True)
    return rows


# -- (e), (a), (d): big files on loopback ------------------------------------------------------


def big_files(ctx: Context) -> list[Row]:
    n_files = max(1, ctx.big_mb // ctx.file_mb)
    tls = make_certificate(ctx.cache / "tls")
    print(f"(e/a/d) {n_files} wheels of {ctx.file_mb} MiB", flush=True)
    with UpstreamProcess(
        projects=n_files,
        files_per_project=1,
        file_size=ctx.file_mb << 20,
        blob_cache_mb=n_files * (ctx.file_mb + 1) + 64,  # every body stays built after warm-up
        tls=tls,
        cpus=ctx.upstream_cpus,
        log=ctx.log,
    ) as up:
        files = up.files()  # also builds and caches every file on the server: a warm upstream
        total = sum(f.size for f in files) / MB
        case = f"{len(files)} wheels, {total:,.0f} MB"
        listing = ctx.workdir / "files.json"
        listing.write_text(json.dumps([{"url": f.url, "sha256": f.sha256} for f in files]))

        ours_dir = ctx.workdir / "big-ours"
        ours_cfg = tools.write_clone_config(
            ctx.workdir / "big-ours.toml", tools.MirrorSettings(ours_dir, up.url, json=True)
        )
        theirs_dir = ctx.workdir / "big-bandersnatch"
        theirs_cfg = ctx.workdir / "big-bandersnatch.conf"

        def ceiling() -> Measurement:
            limit = ctx.fresh("limit")  # the last round discarded (and evicted) it
            m = ctx.run([sys.executable, "-m", "benchmarks.limit", str(listing), str(limit)])
            ctx.discard(limit, evict=True)
            return m

        def ours() -> Measurement:
            ctx.fresh("big-ours", evict=True)
            return ctx.run(tools.clone_mirror(ours_cfg))

        def bandersnatch(workers: int) -> Callable[[Path], Measurement]:
            def run(exe: Path) -> Measurement:
                ctx.fresh("big-bandersnatch", evict=True)
                settings = tools.MirrorSettings(theirs_dir, up.url, json=True, workers=workers)
                tools.write_bandersnatch_config(theirs_cfg, settings)
                return ctx.run(tools.bandersnatch_mirror(exe, theirs_cfg))

            return run

        # Loopback, page cache and a shared VM are noisy: interleaved rounds, median of each.
        runs: dict[str, list[Measurement]] = {}
        why = ""
        for _ in range(ctx.rounds):
            runs.setdefault("e", []).append(ceiling())
            runs.setdefault("ours", []).append(ours())
            for workers in (3, 10):
                m, why = _theirs(ctx, bandersnatch(workers))
                if m is not None:
                    runs.setdefault(f"w{workers}", []).append(m)
        e, ours_m = _median(runs["e"]), _median(runs["ours"])
        # Each round's (e) against the ours that ran right after it: the machine's drift
        # between rounds cancels out of the ratio.
        pairs = sorted(a.wall / b.wall for a, b in zip(runs["e"], runs["ours"], strict=True))
        share = pairs[len(pairs) // 2]
        spread = f"median of {ctx.rounds} interleaved rounds; {_spread(runs)}"
        rows = [
            Row("e", f"plain download + sha256, 16 at once: {case}", ours=e, work=total,
                unit="MB", theirs_note="n/a", note=f"the ceiling for (a); {spread}")
        ]  # fmt: skip
        wheels = (_count(ours_dir, ".whl"), _count(theirs_dir, ".whl") if why == "" else "-")
        for workers in (3, 10):
            theirs = _median(runs[f"w{workers}"]) if f"w{workers}" in runs else None
            rows.append(
                Row("a", f"first sync, {case}; bandersnatch workers={workers}", ours_m, theirs,
                    work=total, unit="MB", theirs_note=why,
                    target="no slower than bandersnatch; >= 90% of (e)",
                    note=f"ours = {share:.0%} of (e) (median of the rounds' own ratios: "
                    f"{'/'.join(f'{p:.0%}' for p in pairs)}); wheels in the last mirrors: "
                    f"ours {wheels[0]}, bandersnatch (workers=10) {wheels[1]} of {len(files)}")
            )  # fmt: skip

        # (d) verify the whole mirror from (a), each tool its own, in interleaved rounds.
        verify = tools.clone_verify(ours_cfg)
        assert verify is not None, "bandersnatch-clone verify is missing"
        env = dict(os.environ, SSL_CERT_FILE=str(tls[0]))

        def bandersnatch_verify(exe: Path) -> Measurement:
            settings = tools.MirrorSettings(theirs_dir, up.https_url, json=True, workers=10)
            tools.write_bandersnatch_config(theirs_cfg, settings)
            return ctx.run(tools.bandersnatch_verify(exe, theirs_cfg), env=env, all_cpus=True)

        # Verify reads the disk only: it gets every CPU (the upstream sits idle meanwhile).
        verify_runs, why = _rounds(ctx, lambda: ctx.run(verify, all_cpus=True), bandersnatch_verify)
        ours_v, theirs_v = _medians(verify_runs)
        rows.append(
            Row(
                "d",
                f"verify the mirror of (a): {case}",
                ours_v,
                theirs_v,
                work=total,
                unit="MB",
                theirs_note=why,
                target=">= 2x bandersnatch verify, memory flat",
                note="all CPUs; files in the page cache (just written); bandersnatch: "
                "https upstream on the TLS port, no --json-update; "
                f"median of {ctx.rounds} interleaved rounds; {_spread(verify_runs)}",
            )
        )
    for name in ("big-ours", "big-bandersnatch"):
        ctx.discard(ctx.workdir / name)
    return _report(rows)


# -- (b): a slow link ---------------------------------------------------------------------------


def slow_link(ctx: Context) -> list[Row]:
    n = ctx.slow_projects
    latency_ms = ctx.slow_latency * 1000
    print(f"(b) {n} small projects, {latency_ms:.0f} ms per request", flush=True)
    with UpstreamProcess(
        projects=n, latency=ctx.slow_latency, cpus=ctx.upstream_cpus, log=ctx.log
    ) as up:
        up.files(threads=64)  # build every file once, so neither tool pays for it
        ours_dir = ctx.fresh("slow-ours")
        cfg = tools.write_clone_config(
            ctx.workdir / "slow-ours.toml", tools.MirrorSettings(ours_dir, up.url)
        )
        ours = ctx.run(tools.clone_mirror(cfg))
        ctx.discard(ours_dir)
        rows = []
        for workers, target in ((3, ">= 10x bandersnatch"), (10, ">= 3x bandersnatch")):

            def bandersnatch(exe: Path, workers: int = workers) -> Measurement:
                directory = ctx.fresh("slow-bandersnatch")
                conf = tools.write_bandersnatch_config(
                    ctx.workdir / "slow-bandersnatch.conf",
                    tools.MirrorSettings(directory, up.url, workers=workers),
                )
                m = ctx.run(tools.bandersnatch_mirror(exe, conf))
                ctx.discard(directory)
                return m

            theirs, why = _theirs(ctx, bandersnatch)
            rows.append(
                Row(
                    "b",
                    f"{n:,} small projects (2 files each), +{latency_ms:.0f} ms a request; "
                    f"ours: default workers, bandersnatch workers={workers}",
                    ours,
                    theirs,
                    work=n,
                    unit="projects",
                    theirs_note=why,
                    target=target,
                )
            )
    return _report(rows)


# -- (c): PyPI scale, index only ----------------------------------------------------------------


def _bandersnatch_done(directory: Path) -> int:
    simple = directory / "web" / "simple"
    return sum(1 for e in os.scandir(simple) if e.is_dir()) if simple.is_dir() else 0


def _mark_complete(directory: Path, serial: int) -> None:
    """Make a capped bandersnatch mirror look complete at ``serial`` (so its next runs are
    "nothing changed" and "100 changed" runs rather than a resumed first sync)."""
    (directory / "todo").unlink(missing_ok=True)
    (directory / "status").write_text(str(serial))


def pypi_scale(ctx: Context) -> list[Row]:
    n = ctx.scale_projects
    print(f"(c) {n:,} projects, index only", flush=True)
    with UpstreamProcess(projects=n, cpus=ctx.upstream_cpus, log=ctx.log) as up:
        ours_dir = ctx.fresh("scale-ours")
        ours_cfg = tools.write_clone_config(
            ctx.workdir / "scale-ours.toml",
            tools.MirrorSettings(ours_dir, up.url, release_files=False),
        )
        theirs_dir = ctx.fresh("scale-bandersnatch")
        theirs_cfg = tools.write_bandersnatch_config(
            ctx.workdir / "scale-bandersnatch.conf",
            tools.MirrorSettings(theirs_dir, up.url, release_files=False),
        )
        done: dict[str, int] = {}

        def fresh_theirs(exe: Path) -> Measurement:
            m = ctx.run(tools.bandersnatch_mirror(exe, theirs_cfg), cap=ctx.scale_cap)
            done["theirs"] = _bandersnatch_done(theirs_dir)
            if (theirs_dir / "todo").exists():
                _mark_complete(theirs_dir, up.state()["serial"])
            return m

        ours = ctx.run(tools.clone_mirror(ours_cfg), cap=ctx.ours_cap)
        theirs, why = _theirs(ctx, fresh_theirs)
        partial = done.get("theirs", n) < n
        partial_note = (
            f"bandersnatch ran on its partial mirror ({done.get('theirs', 0):,} of {n:,} "
            "projects), marked complete by hand (status file written, todo removed)"
            if partial
            else ""
        )
        rows = [
            Row(
                "c",
                f"fresh index-only sync of {n:,} projects",
                ours,
                theirs,
                work=n,
                unit="projects",
                theirs_work=done["theirs"] if partial else None,
                theirs_note=why,
                target="ours < 20 min",
                note="bandersnatch stopped at its time limit; its time is EXTRAPOLATED from "
                "its projects/s"
                if partial
                else "",
            )
        ]
        # The targets are local work: each case is `ctx.rounds` interleaved runs, median by CPU.
        again = ctx.rounds

        def ours_run() -> Measurement:
            return ctx.run(tools.clone_mirror(ours_cfg))

        def theirs_run(exe: Path) -> Measurement:
            return ctx.run(tools.bandersnatch_mirror(exe, theirs_cfg))

        quiet, why = _rounds(ctx, ours_run, theirs_run)
        rows.append(
            Row(
                "c",
                f"nothing changed, {n:,} projects",
                *_medians(quiet, by_cpu=True),
                theirs_note=why,
                target="ours < 0.5 s local work (CPU), < 150 MB peak",
                note=(
                    "CPU and wall include interpreter start-up. "
                    f"Median of {again} interleaved rounds by CPU; {_spread(quiet, by_cpu=True)}. "
                    + partial_note
                ).strip(),
            )
        )

        touches = iter(range(again))

        def touched() -> Measurement:
            # Each of our rounds starts with 100 other projects changed (bandersnatch then
            # syncs the same 100 in its turn).
            up.touch(100, offset=next(touches))
            time.sleep(0.1)
            return ours_run()

        changed, why = _rounds(ctx, touched, theirs_run)
        rows.append(
            Row(
                "c",
                f"100 changed projects of {n:,} (root index rewritten)",
                *_medians(changed, by_cpu=True),
                theirs_note=why,
                target="ours < 1 s local work (CPU)",
                note=(
                    "CPU includes interpreter start-up. "
                    f"Median of {again} interleaved rounds by CPU; "
                    f"{_spread(changed, by_cpu=True)}. " + partial_note
                ).strip(),
            )
        )
    for name in ("scale-ours", "scale-bandersnatch"):
        ctx.discard(ctx.workdir / name)
    return _report(rows)
