"""Results: one `Row` per measured case, saved as JSON, printed as text and as a Markdown table."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.measure import Measurement


@dataclass(slots=True)
class Row:
    """One case: our run and bandersnatch's on the same upstream (either may be missing)."""

    scenario: str
    case: str
    ours: Measurement | None = None
    theirs: Measurement | None = None
    #: Work done, for throughput (``unit`` per second of wall time).
    work: float = 0.0
    unit: str = ""
    #: Work bandersnatch finished when it was stopped at its time limit (else None: all of it).
    theirs_work: float | None = None
    #: Why a column has no figure ("not implemented yet", "bandersnatch not installed").
    ours_note: str = ""
    theirs_note: str = ""
    target: str = ""
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    def rate(self, m: Measurement | None, work: float | None = None) -> float | None:
        done = self.work if work is None else work
        return done / m.wall if m is not None and done and m.wall > 0 else None

    @property
    def theirs_wall(self) -> float | None:
        """bandersnatch's wall time; for a capped run, extrapolated to all the work."""
        if self.theirs is None:
            return None
        if self.theirs_work is None:
            return self.theirs.wall
        rate = self.rate(self.theirs, self.theirs_work)
        return self.work / rate if rate else None

    @property
    def speedup(self) -> float | None:
        """bandersnatch's wall time over ours (above 1: we are faster)."""
        theirs = self.theirs_wall
        if self.ours is None or theirs is None or self.ours.wall <= 0:
            return None
        return theirs / self.ours.wall


def save(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(r) for r in rows], indent=1))


def load(path: Path) -> list[Row]:
    rows = []
    for raw in json.loads(path.read_text()):
        for key in ("ours", "theirs"):
            if raw[key] is not None:
                raw[key] = Measurement(**raw[key])
        rows.append(Row(**raw))
    return rows


def _rate_text(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    return f"{value:,.1f} {unit}/s" if value < 100 else f"{value:,.0f} {unit}/s"


def _cells(m: Measurement | None, note: str) -> list[str]:
    if m is None:
        return [note or "-", "", ""]
    flag = " (capped)" if m.capped else ""
    flag += "" if m.returncode == 0 else f" (exit {m.returncode})"
    return [f"{m.wall:,.2f} s{flag}", f"{m.cpu:,.2f} s", f"{m.max_rss_mib:,.0f} MiB"]


def text(row: Row) -> str:
    lines = [f"({row.scenario}) {row.case}"]
    for label, m, note, work in (
        ("ours        ", row.ours, row.ours_note, None),
        ("bandersnatch", row.theirs, row.theirs_note, row.theirs_work),
    ):
        rate = _rate_text(row.rate(m, work), row.unit) if m else ""
        lines.append(f"  {label} {m.brief() if m else note or '-'}  {rate}")
    if row.theirs_work is not None and row.theirs_wall is not None:
        lines.append(
            f"  bandersnatch EXTRAPOLATED to all {row.work:,.0f} {row.unit}: "
            f"{row.theirs_wall:,.0f} s"
        )
    if row.speedup is not None:
        lines.append(f"  ratio (bandersnatch wall / ours): {row.speedup:.2f}x")
    if row.note:
        lines.append(f"  note: {row.note}")
    return "\n".join(lines)


HEADER = (
    "| | case | ours wall | ours CPU | ours peak RSS | ours rate "
    "| bandersnatch wall | bandersnatch CPU | bandersnatch peak RSS | bandersnatch rate "
    "| speed-up | target | note |"
)


def markdown(rows: list[Row]) -> str:
    out = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    for r in rows:
        theirs = _cells(r.theirs, r.theirs_note)
        if r.theirs_work is not None and r.theirs_wall is not None:
            theirs[0] += (
                f"; {r.theirs_work:,.0f} of {r.work:,.0f} {r.unit} done: "
                f"**extrapolated {r.theirs_wall:,.0f} s**"
            )
        speedup = f"{r.speedup:.2f}x" if r.speedup is not None else ""
        if speedup and r.theirs_work is not None:
            speedup += " (extrapolated)"
        cells = [
            f"({r.scenario})",
            r.case,
            *_cells(r.ours, r.ours_note),
            _rate_text(r.rate(r.ours), r.unit),
            *theirs,
            _rate_text(r.rate(r.theirs, r.theirs_work), r.unit),
            speedup,
            r.target,
            r.note,
        ]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out)


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"


def machine(workdir: Path, pythons: dict[str, str]) -> str:
    """nproc, CPU, RAM, the disk under ``workdir``, kernel and the Pythons, as Markdown."""
    cpu = "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as info:
        ram_kib = int(info.readline().split()[1])
    disk = _first_line(["findmnt", "-no", "SOURCE,FSTYPE", "-T", str(workdir)])
    free = shutil.disk_usage(workdir).free / 1e9
    lines = [
        f"- CPUs: {os.cpu_count()} x {cpu}",
        f"- RAM: {ram_kib / 1024 / 1024:.1f} GiB",
        f"- disk: {disk} ({free:,.0f} GB free) under `{workdir}`",
        f"- kernel: {platform.release()}",
    ]
    lines += [f"- {label}: {_first_line([exe, '-VV'])}" for label, exe in pythons.items()]
    return "\n".join(lines)
