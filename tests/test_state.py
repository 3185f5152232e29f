"""state: status, ledger, the append-only journal and the lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from bandersnatch_clone.errors import LockedError, StorageError
from bandersnatch_clone.state import (
    Journal,
    JournalState,
    LedgerEntry,
    MirrorLock,
    fold_journal,
    read_ledger,
    read_status,
    write_ledger,
    write_status,
)


def test_status_roundtrip_and_default(tmp_path: Path) -> None:
    before = read_status(tmp_path)
    write_status(tmp_path, 1234)
    assert (before, read_status(tmp_path)) == (0, 1234)


def test_corrupt_status_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "status").write_text("garbage")
    with pytest.raises(StorageError, match="not a serial"):
        read_status(tmp_path)


def test_ledger_roundtrip(tmp_path: Path) -> None:
    ledger = {"zope-interface": LedgerEntry(7, 2, 300, "Zope.Interface"), "a": LedgerEntry(1)}
    write_ledger(tmp_path, ledger)
    assert read_ledger(tmp_path) == ledger


def test_journal_survives_a_torn_last_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.begin(50, 3)
    journal.done("a", LedgerEntry(40, 1, 10))
    journal.deleted("b")
    journal.done("c", LedgerEntry(41, 2, 20, "C"))
    journal.close()
    with (tmp_path / "todo").open("a") as f:
        f.write("done d 4")  # a crash in the middle of a line
    state = Journal(tmp_path).load()
    assert state is not None
    assert (state.target_serial, state.planned, state.done, state.deleted) == (
        50,
        3,
        {"a": LedgerEntry(40, 1, 10), "c": LedgerEntry(41, 2, 20, "C")},
        {"b"},
    )


def test_journal_is_appended_not_rewritten(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.begin(9, 2)
    inode = (tmp_path / "todo").stat().st_ino
    journal.done("a", LedgerEntry(1))
    journal.done("b", LedgerEntry(2))
    journal.close()
    assert (
        (tmp_path / "todo").stat().st_ino,
        len((tmp_path / "todo").read_text().splitlines()),
    ) == (
        inode,
        4,
    )


def test_fold_journal_applies_done_and_deleted() -> None:
    ledger = {"a": LedgerEntry(1), "b": LedgerEntry(1)}
    fold_journal(ledger, JournalState(9, 2, {"a": LedgerEntry(5)}, {"b"}))
    assert ledger == {"a": LedgerEntry(5)}


def test_second_lock_fails_at_once(tmp_path: Path) -> None:
    with MirrorLock(tmp_path), pytest.raises(LockedError), MirrorLock(tmp_path):
        pass


def test_missing_journal_loads_as_none(tmp_path: Path) -> None:
    assert Journal(tmp_path).load() is None
