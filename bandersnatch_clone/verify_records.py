"""What a verify run keeps: the summary it reports, the progress file an interrupted pass
resumes from, and the set of linked paths the orphan sweep looks files up in."""

from __future__ import annotations

import bisect
import dataclasses
import json
import os
import time
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from humanfriendly import format_size, format_timespan

from bandersnatch_clone.scan import Problem

PROGRESS_FILE = "verify.progress"
_MAGIC = "bandersnatch-clone-verify 1"


@dataclass(frozen=True, slots=True)
class VerifySummary:
    """What a verify run found and did, for the operator (text) and for scripts (``--json``)."""

    projects_checked: int
    #: Projects verified by the interrupted pass this run resumed, not checked again.
    projects_skipped: int
    files_checked: int
    bytes_hashed: int
    elapsed: float
    quick: bool
    dry_run: bool
    #: False when the run stopped early (``limit``): the next run resumes; no orphan sweep ran.
    complete: bool
    #: Problems found, by kind (all of them), and how many of those were fixed.
    found: Mapping[str, int]
    fixed: int
    #: The first `MAX_LISTED` problems.
    problems: tuple[Problem, ...]
    exit_code: int

    def render_text(self) -> str:
        rate = self.bytes_hashed / self.elapsed if self.elapsed > 0 else 0.0
        how = "sizes only (--quick)" if self.quick else f"{format_size(round(rate))}/s"
        lines = [
            f"verified {self.projects_checked:,} projects, {self.files_checked:,} files, "
            f"{format_size(self.bytes_hashed)} hashed in {format_timespan(self.elapsed)} ({how})"
        ]
        if self.projects_skipped:
            lines.append(f"resumed: {self.projects_skipped:,} projects were verified before")
        total = sum(self.found.values())
        if total:
            counts = ", ".join(f"{n:,} {kind}" for kind, n in sorted(self.found.items()))
            lines.append(f"problems: {counts}; {self.fixed:,} fixed")
            for p in self.problems:
                action = f" -> {p.action}" if p.action else ""
                lines.append(f"  {p.kind:<8} {p.path}: {p.detail}{action}")
            if total > len(self.problems):
                lines.append(f"  ... and {total - len(self.problems):,} more (see the log)")
        else:
            lines.append("no problems found")
        if not self.complete:
            lines.append("incomplete: the next verify resumes where this one stopped")
        lines.append(f"exit code {self.exit_code}")
        return "\n".join(lines)

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["found"] = dict(self.found)
        data["problems"] = [dataclasses.asdict(p) for p in self.problems]
        return json.dumps(data, indent=2)


class LinkSet:
    """Linked tree paths as 64-bit hashes in 256 sorted arrays: 8 bytes a file, where a set of
    str costs about 200. A collision (odds ~n²/2⁶⁵) can hide an orphan, never make one."""

    def __init__(self) -> None:
        self._buckets = [array("Q") for _ in range(256)]

    @staticmethod
    def _key(path: str) -> int:
        return hash(path) & 0xFFFF_FFFF_FFFF_FFFF

    def add(self, path: str) -> None:
        key = self._key(path)
        self._buckets[key >> 56].append(key)

    def freeze(self) -> None:
        self._buckets = [array("Q", sorted(b)) for b in self._buckets]

    def __contains__(self, path: str) -> bool:
        key = self._key(path)
        bucket = self._buckets[key >> 56]
        i = bisect.bisect_left(bucket, key)
        return i < len(bucket) and bucket[i] == key


class ProgressFile:
    """``verify.progress``: the header, then ``d <name>`` (clean) or ``p <name>`` (problems left)
    per finished project in ledger order; appended about once a second, so O(projects) overall."""

    def __init__(self, directory: Path, mode: str) -> None:
        self.path, self._mode = directory / PROGRESS_FILE, mode
        self._buffer: list[str] = []
        self._flushed = time.monotonic()
        self._whole = 0  # bytes of whole lines in the file `load` read

    def load(self) -> tuple[str | None, set[str]]:
        """(last finished project, projects finished with problems left); (None, {}) to start."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None, set()
        self._whole = data.rfind(b"\n") + 1
        lines = data[: self._whole].decode("utf-8", "replace").split("\n")
        if lines[0] != f"{_MAGIC} {self._mode}":
            return None, set()
        last: str | None = None
        dirty: set[str] = set()
        for line in lines[1:-1]:  # the last element is the "" after the last newline
            mark, _, name = line.partition(" ")
            if mark in ("d", "p") and name:
                last = max(last or name, name)
                (dirty.add if mark == "p" else dirty.discard)(name)
        return last, dirty

    def begin(self, fresh: bool) -> None:
        """Start a new file, or go on with the loaded one minus a torn last line (appending to
        it would glue the next name onto the fragment)."""
        if fresh:
            self.path.write_text(f"{_MAGIC} {self._mode}\n", encoding="utf-8")
        else:
            os.truncate(self.path, self._whole)

    def add(self, name: str, clean: bool) -> bool:
        """Queue a line; True when a flush is due."""
        self._buffer.append(f"{'d' if clean else 'p'} {name}\n")
        return time.monotonic() - self._flushed > 1.0

    def flush(self) -> None:
        if self._buffer:
            with self.path.open("a", encoding="utf-8") as f:
                f.write("".join(self._buffer))
            self._buffer.clear()
        self._flushed = time.monotonic()
