"""Tests for run reporting: the live TTY line, cron log lines, figures and the summary."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bandersnatch_clone.progress import Progress, Summary

LOGGER = "bandersnatch_clone.progress"
CLEAR = "\r\x1b[K"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(live: bool) -> tuple[Progress, io.StringIO, FakeClock]:
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress(stream, live=live, clock=clock, log_interval=30.0, redraw_interval=0.2)
    return progress, stream, clock


def info_lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_tty_start_draws_the_line_in_place() -> None:
    progress, stream, _ = make(live=True)
    progress.start(700)
    assert stream.getvalue() == CLEAR + "projects 0/700  files 0  0 bytes  0 bytes/s  ETA unknown"


def test_tty_redraws_at_most_five_times_a_second() -> None:
    progress, stream, clock = make(live=True)
    progress.start(100)
    for _ in range(100):  # an event every 10 ms for one second
        clock.now += 0.01
        progress.file_done(1000)
    assert stream.getvalue().count("\r") - 1 <= 5


def test_tty_redraw_waits_for_the_interval() -> None:
    progress, stream, clock = make(live=True)
    progress.start(100)
    drawn = []
    for t in (0.1, 0.19, 0.21, 0.3, 0.4, 0.45, 0.7):
        clock.now = 1000.0 + t
        before = stream.getvalue()
        progress.file_done(1)
        drawn.append(stream.getvalue() != before)
    assert drawn == [False, False, True, False, False, True, True]


def test_tty_redraw_shows_the_latest_figures() -> None:
    progress, stream, clock = make(live=True)
    progress.start(3)
    clock.now += 1.0
    progress.project_done("idna", files=2, bytes_=2_000_000)
    assert (
        stream.getvalue().rsplit("\r", 1)[1]
        == "\x1b[Kprojects 1/3  files 2  0 bytes  0 bytes/s  ETA 2 seconds"
    )


def test_tty_close_leaves_the_final_line() -> None:
    progress, stream, _ = make(live=True)
    progress.start(1)
    progress.project_done("idna", files=1, bytes_=10)
    progress.close()
    assert stream.getvalue().endswith(
        CLEAR + "projects 1/1  files 1  0 bytes  0 bytes/s  ETA 0 seconds\n"
    )


def test_cron_mode_logs_at_the_interval_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    progress, _, clock = make(live=False)
    progress.start(10)
    seen = []
    for t in (10, 20, 31, 40, 55, 61, 62, 95):
        clock.now = 1000.0 + t
        progress.project_done(f"p{t}", files=1, bytes_=1)
        seen.append(len(info_lines(caplog)))
    assert seen == [0, 0, 1, 1, 1, 2, 2, 3]


def test_cron_mode_never_writes_to_the_stream(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    progress, stream, clock = make(live=False)
    progress.start(2)
    clock.now += 60
    progress.project_done("a", files=1, bytes_=1)
    progress.project_failed("b", "404")
    progress.close()
    assert (stream.getvalue(), len(info_lines(caplog))) == ("", 1)


def test_cron_log_line_carries_the_figures(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    progress, _, clock = make(live=False)
    progress.start(700)
    clock.now += 30
    progress.file_done(30_000_000)
    assert info_lines(caplog) == ["projects 0/700  files 0  30 MB  1 MB/s  ETA unknown"]


def test_rate_and_eta_for_a_known_clock() -> None:
    progress, _, clock = make(live=False)
    progress.start(100)
    clock.now += 4
    progress.add_total(20)
    for i in range(18):
        progress.project_done(f"p{i}", files=2, bytes_=3)
    progress.project_failed("bad-one", "timeout")
    progress.project_failed("bad-two", "404")
    progress.file_done(24_000_000)
    clock.now += 6
    progress.file_done(25_000_000)
    # 20 of 120 finished in 10 s -> 100 left at 2/s = 50 s; 49 MB in 10 s = 4.9 MB/s.
    assert (progress.rate, progress.eta, progress.status_line()) == (
        4_900_000.0,
        50.0,
        "projects 20/120 (2 failed)  files 36  49 MB  4.9 MB/s  ETA 50 seconds",
    )


def test_eta_rounds_to_whole_seconds_in_two_units() -> None:
    progress, _, clock = make(live=False)
    progress.start(1001)
    clock.now += 0.5
    progress.project_done("a", files=0, bytes_=0)
    assert progress.status_line().endswith("ETA 8 minutes and 20 seconds")


def test_tty_failure_clears_the_line_logs_a_warning_and_redraws(
    caplog: pytest.LogCaptureFixture,
) -> None:
    progress, stream, clock = make(live=True)
    progress.start(5)
    clock.now += 0.01  # inside the throttle window: the failure still redraws at once
    progress.project_failed("broken", "sha256 mismatch")
    assert (info_lines(caplog, logging.WARNING), stream.getvalue()) == (
        ["project broken failed: sha256 mismatch"],
        CLEAR
        + "projects 0/5  files 0  0 bytes  0 bytes/s  ETA unknown"
        + CLEAR  # wiped before the warning
        + CLEAR
        + "projects 1/5 (1 failed)  files 0  0 bytes  0 bytes/s  ETA 0 seconds",
    )


def test_cron_failure_is_a_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    progress, _, _ = make(live=False)
    progress.start(5)
    progress.project_failed("broken", "404 Not Found")
    assert info_lines(caplog, logging.WARNING) == ["project broken failed: 404 Not Found"]


def test_summary_takes_the_counters() -> None:
    progress, _, clock = make(live=False)
    progress.start(3)
    progress.project_done("a", files=2, bytes_=1500)
    progress.project_done("b", files=1, bytes_=500)
    progress.project_failed("c", "timeout")
    clock.now += 12.5
    assert progress.summary(serial_before=10, serial_after=20, deleted=4) == Summary(
        projects_synced=2,
        projects_failed={"c": "timeout"},
        projects_deleted=4,
        files_downloaded=3,
        bytes_downloaded=2000,
        elapsed=12.5,
        serial_before=10,
        serial_after=20,
        exit_code=1,
    )


@pytest.mark.parametrize(
    ("failed", "given", "expected"),
    [(False, None, 0), (True, None, 1), (False, 3, 3), (True, 2, 2)],
)
def test_summary_exit_code(failed: bool, given: int | None, expected: int) -> None:
    progress, _, _ = make(live=False)
    progress.start(1)
    if failed:
        progress.project_failed("x", "boom")
    summary = progress.summary(serial_before=None, serial_after=None, exit_code=given)
    assert summary.exit_code == expected


SUMMARY = Summary(
    projects_synced=1234,
    projects_failed={"zope": "timeout", "attrs": "sha256 mismatch"},
    projects_deleted=7,
    files_downloaded=5678,
    bytes_downloaded=3_000_000_000,
    elapsed=200.0,
    serial_before=1000,
    serial_after=2000,
    exit_code=1,
)


def test_summary_text_carries_every_figure() -> None:
    assert SUMMARY.render_text() == "\n".join(
        [
            "synced 1,234 projects: 5,678 files, 3 GB in 3 minutes and 20 seconds (15 MB/s)",
            "deleted 7 projects",
            "serial 1000 -> 2000",
            "2 projects failed (retried next run):",
            "  attrs: sha256 mismatch",
            "  zope: timeout",
            "exit code 1",
        ]
    )


def test_summary_text_for_a_new_mirror_without_failures() -> None:
    summary = Summary(0, {}, 0, 0, 0, 0.0, None, 5, 0)
    assert summary.render_text() == "\n".join(
        [
            "synced 0 projects: 0 files, 0 bytes in 0 seconds (0 bytes/s)",
            "deleted 0 projects",
            "serial none -> 5",
            "exit code 0",
        ]
    )


def test_summary_json_carries_every_figure() -> None:
    assert json.loads(SUMMARY.to_json()) == {
        "projects_synced": 1234,
        "projects_failed": {"attrs": "sha256 mismatch", "zope": "timeout"},
        "projects_deleted": 7,
        "files_downloaded": 5678,
        "bytes_downloaded": 3_000_000_000,
        "elapsed": 200.0,
        "serial_before": 1000,
        "serial_after": 2000,
        "removals_held": 0,
        "exit_code": 1,
    }


def test_summary_text_says_what_to_do_about_held_removals() -> None:
    summary = Summary(3, {}, 0, 0, 0, 1.0, 10, 12, 4, removals_held=250)
    assert summary.render_text().splitlines()[3:] == [
        "held back 250 removals (more than removal_guard allows); "
        "if the upstream really dropped them: mirror --allow-removals",
        "exit code 4",
    ]
