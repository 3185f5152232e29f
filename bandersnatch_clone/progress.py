"""Operator-facing reporting of a sync run: a live TTY line, log lines under cron, a summary."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TextIO

from humanfriendly import format_size, format_timespan

#: ``\r`` then ANSI "erase to end of line": the live line is redrawn in place.
_CLEAR_LINE = "\r\x1b[K"


@dataclass(frozen=True, slots=True)
class Summary:
    """What a run did, for the operator (text) and for scripts (``--json``)."""

    projects_synced: int
    #: Project name -> why it failed; these are retried by the next run.
    projects_failed: Mapping[str, str]
    projects_deleted: int
    files_downloaded: int
    bytes_downloaded: int
    #: Seconds from `Progress.start` to the summary.
    elapsed: float
    #: The mirror's serial before the run (None for a new mirror) and after it (None if not
    #: recorded, e.g. a run that failed before committing).
    serial_before: int | None
    serial_after: int | None
    exit_code: int
    #: Removals the guard held back (``removal_guard``); none of them happened.
    removals_held: int = 0

    def render_text(self) -> str:
        """A few lines for a human: what was synced, how fast, what failed."""
        rate = self.bytes_downloaded / self.elapsed if self.elapsed > 0 else 0.0
        lines = [
            f"synced {self.projects_synced:,} projects: {self.files_downloaded:,} files, "
            f"{format_size(self.bytes_downloaded)} in {format_timespan(self.elapsed)} "
            f"({format_size(round(rate))}/s)",
            f"deleted {self.projects_deleted:,} projects",
            f"serial {_serial(self.serial_before)} -> {_serial(self.serial_after)}",
        ]
        if self.removals_held:
            lines.append(
                f"held back {self.removals_held:,} removals (more than removal_guard allows); "
                "if the upstream really dropped them: mirror --allow-removals"
            )
        if self.projects_failed:
            lines.append(f"{len(self.projects_failed):,} projects failed (retried next run):")
            lines += [f"  {name}: {why}" for name, why in sorted(self.projects_failed.items())]
        lines.append(f"exit code {self.exit_code}")
        return "\n".join(lines)

    def to_json(self) -> str:
        """Every figure as one JSON object (keys are the field names)."""
        return json.dumps(
            {
                "projects_synced": self.projects_synced,
                "projects_failed": dict(sorted(self.projects_failed.items())),
                "projects_deleted": self.projects_deleted,
                "files_downloaded": self.files_downloaded,
                "bytes_downloaded": self.bytes_downloaded,
                "elapsed": self.elapsed,
                "serial_before": self.serial_before,
                "serial_after": self.serial_after,
                "removals_held": self.removals_held,
                "exit_code": self.exit_code,
            },
            indent=2,
        )


def _serial(serial: int | None) -> str:
    return "none" if serial is None else str(serial)


@dataclass(slots=True)
class _Counters:
    total: int = 0
    done: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    #: Files and bytes of the projects that finished (`Progress.project_done`).
    files: int = 0
    bytes: int = 0
    #: Bytes as they arrive (`Progress.file_done`): the transfer rate.
    transferred: int = 0


class Progress:
    """Counts what a sync run does and shows it: a live line on a TTY, periodic log lines otherwise.

    The engine calls `start`, then `project_done` / `project_failed` / `file_done` /
    `add_total` as work finishes, and `close` at the end; `tick` may be called from a periodic
    task so the display stays fresh while one long download runs. Failures are always logged
    as WARNING lines.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
        log_interval: float = 30.0,
        redraw_interval: float = 0.2,
    ) -> None:
        """``stream`` takes the live line (default stderr); ``live`` defaults to its isatty().

        Without a live line, figures go to ``logger`` at INFO every ``log_interval`` seconds.
        """
        self._stream = sys.stderr if stream is None else stream
        self._live = self._stream.isatty() if live is None else live
        self._clock = clock
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._interval = redraw_interval if self._live else log_interval
        self._counts = _Counters()
        self._started = clock()
        self._last_shown: float | None = None
        self._line_drawn = False

    # --- events from the engine -----------------------------------------------------------

    def start(self, total_projects: int) -> None:
        """The run begins with ``total_projects`` to sync; the clock for rate and ETA starts."""
        self._counts = _Counters(total=total_projects)
        self._started = self._clock()
        self._last_shown = None
        self._show(force=self._live)

    def add_total(self, n: int) -> None:
        """``n`` more projects joined the run (e.g. a changelog page arrived late)."""
        self._counts.total += n
        self._show()

    def project_done(self, name: str, files: int, bytes_: int) -> None:
        """Project ``name`` is synced; ``files`` and ``bytes_`` are what it downloaded."""
        self._counts.done += 1
        self._counts.files += files
        self._counts.bytes += bytes_
        self._log.debug("synced %s: %d files, %s", name, files, format_size(bytes_))
        self._show()

    def project_failed(self, name: str, reason: str) -> None:
        """Project ``name`` failed (it is retried next run): logged at once as a WARNING."""
        self._counts.failed[name] = reason
        self._clear()
        self._log.warning("project %s failed: %s", name, reason)
        self._show(force=self._live)

    def file_done(self, bytes_: int) -> None:
        """``bytes_`` more bytes arrived (per file or per chunk): feeds the transfer rate."""
        self._counts.transferred += bytes_
        self._show()

    def tick(self) -> None:
        """Redraw or log if it is due; for a periodic task during long downloads."""
        self._show()

    def close(self) -> None:
        """Leave the final live line on the terminal (cron mode: nothing more to write)."""
        if self._live:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()
            self._line_drawn = False

    # --- figures --------------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        """Seconds since `start`."""
        return max(0.0, self._clock() - self._started)

    @property
    def rate(self) -> float:
        """Bytes per second since `start`, from `file_done`."""
        elapsed = self.elapsed
        return self._counts.transferred / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until every project is finished at the pace so far; None before any is."""
        finished = self._counts.done + len(self._counts.failed)
        remaining, elapsed = max(0, self._counts.total - finished), self.elapsed
        if remaining == 0:
            return 0.0
        if finished == 0 or elapsed <= 0:
            return None
        return remaining * elapsed / finished

    def status_line(self) -> str:
        """``projects 120/700 (2 failed)  files 3,411  1.2 GB  24.5 MB/s  ETA 3 minutes``."""
        c = self._counts
        failed = f" ({len(c.failed):,} failed)" if c.failed else ""
        eta = self.eta
        eta_text = "unknown" if eta is None else format_timespan(round(eta), max_units=2)
        return (
            f"projects {c.done + len(c.failed):,}/{c.total:,}{failed}  files {c.files:,}  "
            f"{format_size(c.transferred)}  {format_size(round(self.rate))}/s  ETA {eta_text}"
        )

    def summary(
        self,
        *,
        serial_before: int | None,
        serial_after: int | None,
        deleted: int = 0,
        exit_code: int | None = None,
        removals_held: int = 0,
    ) -> Summary:
        """The run's `Summary`; ``exit_code`` defaults to 0, or 1 if any project failed."""
        c = self._counts
        return Summary(
            projects_synced=c.done,
            projects_failed=MappingProxyType(dict(c.failed)),
            projects_deleted=deleted,
            files_downloaded=c.files,
            bytes_downloaded=c.bytes,
            elapsed=self.elapsed,
            serial_before=serial_before,
            serial_after=serial_after,
            exit_code=(1 if c.failed else 0) if exit_code is None else exit_code,
            removals_held=removals_held,
        )

    # --- output ---------------------------------------------------------------------------

    def _show(self, *, force: bool = False) -> None:
        """Redraw (TTY) or log (cron) if ``force`` or the interval has passed since last time."""
        now = self._clock()
        if not force:
            last = self._started if self._last_shown is None else self._last_shown
            if now - last < self._interval:
                return
        self._last_shown = now
        if self._live:
            self._draw()
        else:
            self._log.info("%s", self.status_line())

    def _draw(self) -> None:
        self._stream.write(_CLEAR_LINE + self.status_line())
        self._stream.flush()
        self._line_drawn = True

    def _clear(self) -> None:
        """Wipe the live line so a log line does not land in the middle of it."""
        if self._live and self._line_drawn:
            self._stream.write(_CLEAR_LINE)
            self._stream.flush()
            self._line_drawn = False
