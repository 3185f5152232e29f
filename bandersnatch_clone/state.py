"""Mirror state on disk: the status serial, the per-project serial ledger, the journal, the lock.

    <directory>/status       last serial at which every project was in step (plain int)
    <directory>/generation   tree layout version (5, as bandersnatch writes)
    <directory>/ledger       "#ledger <crc32> <lines>", then per project, sorted:
                             "<name> <serial> <files> <bytes> [<display>]"
    <directory>/todo         journal of the running (or interrupted) run, append-only
    <directory>/.lock        the inter-process lock

The ledger is what makes "what changed" and "what was deleted" a diff against the upstream listing,
and what the root index is written from: nothing here ever scans ``web/simple/``. It is rewritten
once per run. The journal gets one appended line per finished project, so an interrupted run loses
nothing it finished and the total cost stays O(projects), not O(projects²).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import filelock

from bandersnatch_clone.errors import LockedError, StorageError
from bandersnatch_clone.ledger import Ledger as Ledger
from bandersnatch_clone.ledger import LedgerEntry as LedgerEntry

GENERATION = 5
_JOURNAL_MAGIC = "bandersnatch-clone-journal 1"


def atomic_write_text(path: Path, text: str, *, fsync: bool = False) -> None:
    """Replace `path` by temp file + rename in the same directory."""
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_bytes(path: Path, *parts: bytes, fsync: bool = False) -> None:
    """Replace `path` by temp file (`parts` one after another) + rename in the same directory."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                f.write(part)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise StorageError.from_os(path, e) from e


def read_status(directory: Path) -> int:
    """The last fully completed serial; 0 for a new mirror."""
    try:
        text = (directory / "status").read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0
    try:
        return int(text)
    except ValueError:
        raise StorageError(str(directory / "status"), f"not a serial: {text[:40]!r}") from None


def write_status(directory: Path, serial: int) -> None:
    atomic_write_text(directory / "status", f"{serial}\n", fsync=True)


def ensure_generation(directory: Path) -> None:
    path = directory / "generation"
    if not path.exists():
        atomic_write_text(path, f"{GENERATION}\n")


def read_ledger(directory: Path) -> Ledger:
    try:
        fd = os.open(directory / "ledger", os.O_RDONLY)
    except FileNotFoundError:
        return Ledger()
    try:
        # The header line, then the rest in one read of its exact size (no 19 MB copy).
        head = os.pread(fd, 256, 0)
        cut = head.find(b"\n") + 1 or len(head)
        size = os.fstat(fd).st_size - cut
        # (A short read fails the header's checksum: the lines read are then parsed one by one.)
        body = os.pread(fd, size, cut) if size > 0 else b""
    finally:
        os.close(fd)
    return Ledger.from_file(head[:cut], body)


def write_ledger(directory: Path, ledger: Mapping[str, LedgerEntry]) -> None:
    own = ledger if isinstance(ledger, Ledger) else Ledger(ledger)
    atomic_write_bytes(directory / "ledger", *own.file_parts(), fsync=True)


@dataclass(slots=True)
class JournalState:
    """What an interrupted run left: its target serial, what it planned and what it finished."""

    target_serial: int = 0
    planned: int = 0
    done: dict[str, LedgerEntry] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    #: (project, path) of files journalled as losing their last link.
    obsolete: list[tuple[str, str]] = field(default_factory=list)


class Journal:
    """The append-only ``todo`` file of a run.

    Line forms: ``begin <target-serial> <planned-count>``, ``done <ledger line>``,
    ``deleted <name>``, ``obsolete <name> <path>``. A torn last line (a crash mid-write) is ignored.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "todo"
        self._file: int | None = None

    def load(self) -> JournalState | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        lines = text.split("\n")
        if not lines or lines[0] != _JOURNAL_MAGIC:
            return None
        state = JournalState()
        # The last element is "" after a complete line, or a torn fragment: skip it either way.
        for line in lines[1:-1]:
            parts = line.split(" ")
            if parts[0] == "begin" and len(parts) == 3:
                state.target_serial, state.planned = int(parts[1]), int(parts[2])
            elif parts[0] == "done" and len(parts) in (5, 6):
                state.done[parts[1]] = LedgerEntry.from_fields(parts[1:])
                state.deleted.discard(parts[1])
            elif parts[0] == "obsolete" and len(parts) >= 3:
                state.obsolete.append((parts[1], line.split(" ", 2)[2]))
            elif parts[0] == "deleted" and len(parts) == 2:
                state.deleted.add(parts[1])
                state.done.pop(parts[1], None)
        return state

    def begin(self, target_serial: int, planned: int) -> None:
        """Start a fresh journal (after the previous one was folded into the ledger)."""
        atomic_write_text(self.path, f"{_JOURNAL_MAGIC}\nbegin {target_serial} {planned}\n")
        self._file = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def _append(self, line: str) -> None:
        if self._file is None:
            raise RuntimeError("journal not begun")
        try:
            os.write(self._file, line.encode("utf-8"))
        except OSError as e:
            raise StorageError.from_os(self.path, e) from e

    def obsolete(self, name: str, path: PurePosixPath) -> None:
        """A file about to lose its last link (its page is being replaced or removed)."""
        self._append(f"obsolete {name} {path.as_posix()}\n")

    def done(self, name: str, entry: LedgerEntry) -> None:
        self._append(f"done {entry.to_fields(name)}\n")

    def deleted(self, name: str) -> None:
        self._append(f"deleted {name}\n")

    def close(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def fold_journal(ledger: MutableMapping[str, LedgerEntry], state: JournalState) -> None:
    """Apply what an interrupted run finished to the ledger."""
    ledger.update(state.done)
    for name in state.deleted:
        ledger.pop(name, None)


def load_ledger(directory: Path) -> tuple[Ledger, JournalState | None]:
    """The ledger with what an interrupted run finished folded in (its pages are on disk), and
    that run's journal, if there is one."""
    ledger = read_ledger(directory)
    pending = Journal(directory).load()
    if pending is not None:
        fold_journal(ledger, pending)
    return ledger, pending


class MirrorLock:
    """One process per mirror: a second run fails at once with `LockedError`."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".lock"
        self._lock = filelock.FileLock(str(self.path), timeout=0)

    def __enter__(self) -> MirrorLock:
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise LockedError(str(self.path)) from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


@dataclass(slots=True)
class FilterState:
    """What the filters decided by last time (their fingerprint) and which projects change
    with time alone (cooldown): name -> POSIX time at which to fetch them again."""

    fingerprint: str | None = None
    recheck: dict[str, float] = field(default_factory=dict)


def read_filter_state(directory: Path) -> FilterState:
    try:
        doc = json.loads((directory / "filters.state").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return FilterState()
    except ValueError:
        return FilterState()  # unreadable: treat as changed, which refilters (safe)
    return FilterState(doc.get("fingerprint"), dict(doc.get("recheck", {})))


def write_filter_state(directory: Path, state: FilterState) -> None:
    doc = {"fingerprint": state.fingerprint, "recheck": dict(sorted(state.recheck.items()))}
    atomic_write_text(directory / "filters.state", json.dumps(doc, indent=1) + "\n")


@dataclass(frozen=True, slots=True)
class ListingState:
    """What the last complete run saw of the upstream's listing, so the next one can look at
    only the rows whose serial moved (`plan.plan_from_changed_rows`)."""

    #: The serial that run completed at (``status``).
    serial: int
    #: Rows its listing had.
    rows: int
    #: Projects the ledger held when it ended (another count means something else changed it).
    projects: int
    #: POSIX time of the last diff of the whole listing.
    checked: float
    #: Removals the guard held back then: the next run diffs the whole listing again (and
    #: reports them again), even when nothing moved upstream.
    held: int = 0


def read_listing_state(directory: Path) -> ListingState | None:
    try:
        doc = json.loads((directory / "listing.state").read_text(encoding="utf-8"))
        return ListingState(
            int(doc["serial"]),
            int(doc["rows"]),
            int(doc["projects"]),
            float(doc["checked"]),
            int(doc.get("held", 0)),
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: the next run diffs the whole listing (safe)


def write_listing_state(directory: Path, state: ListingState | None) -> None:
    """Record `state`, or forget it (None): the next run then diffs the whole listing."""
    path = directory / "listing.state"
    if state is None:
        path.unlink(missing_ok=True)
        return
    doc: dict[str, float] = {"serial": state.serial, "rows": state.rows}
    doc |= {"projects": state.projects, "checked": state.checked}
    if state.held:
        doc["held"] = state.held
    atomic_write_text(path, json.dumps(doc) + "\n")
