"""Run one child process and measure it: wall time, CPU time (user + sys) and peak RSS."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Measurement:
    """What one child cost, from `os.wait4` (its own rusage, children it waited for included)."""

    wall: float
    user: float
    sys: float
    #: ru_maxrss: KiB on Linux.
    max_rss_kib: int
    returncode: int
    #: Stopped at the time limit (the figures cover only the part that ran).
    capped: bool = False

    @property
    def cpu(self) -> float:
        return self.user + self.sys

    @property
    def max_rss_mib(self) -> float:
        return self.max_rss_kib / 1024

    def brief(self) -> str:
        cap = " CAPPED" if self.capped else ""
        rc = "" if self.returncode == 0 else f" rc={self.returncode}"
        return (
            f"wall {self.wall:8.2f}s  cpu {self.cpu:8.2f}s  peak {self.max_rss_mib:7.1f} MiB"
            f"{rc}{cap}"
        )


def run_measured(
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    cpus: set[int] | None = None,
    time_limit: float | None = None,
) -> Measurement:
    """Run ``argv`` with stdout and stderr to ``log``; SIGINT then SIGKILL at ``time_limit``."""
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=dict(env or os.environ), cwd=cwd
        )
        if cpus:
            os.sched_setaffinity(proc.pid, cpus)
        timers: list[threading.Timer] = []
        if time_limit is not None:
            # A polite stop first (both tools journal their progress), then a hard one.
            timers = [
                threading.Timer(time_limit, proc.send_signal, (signal.SIGINT,)),
                threading.Timer(time_limit + 30, proc.kill),
            ]
            for timer in timers:
                timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
        capped = time_limit is not None and wall >= time_limit
        for timer in timers:
            timer.cancel()
    return Measurement(
        wall=wall,
        user=usage.ru_utime,
        sys=usage.ru_stime,
        max_rss_kib=usage.ru_maxrss,
        returncode=proc.returncode,
        capped=capped,
    )
