"""plan: the diff between the ledger and the upstream's serials."""

from __future__ import annotations

from bandersnatch_clone.model import ListedProject
from bandersnatch_clone.plan import plan_from_changelog, plan_from_listing, plan_named
from bandersnatch_clone.state import LedgerEntry


def test_listing_fetches_new_and_moved_deletes_gone() -> None:
    ledger = {"same": LedgerEntry(5), "moved": LedgerEntry(5), "gone": LedgerEntry(3)}
    listing = [ListedProject("Same", 5), ListedProject("Moved", 9), ListedProject("New_One", 7)]
    plan = plan_from_listing(ledger, listing, 9, delete_removed=True)
    assert (
        [(p.name, p.serial, p.display) for p in plan.fetch],
        plan.delete,
        plan.target_serial,
    ) == ([("moved", 9, "Moved"), ("new-one", 7, "New_One")], ("gone",), 9)


def test_listing_keeps_removed_projects_when_deletion_is_off() -> None:
    plan = plan_from_listing({"gone": LedgerEntry(3)}, [], 9, delete_removed=False)
    assert plan.delete == ()


def test_changelog_takes_newest_serial_per_project_and_skips_known() -> None:
    ledger = {"known": LedgerEntry(10)}
    events = [("Foo", 11), ("foo", 14), ("known", 9), ("Bar", 12)]
    plan = plan_from_changelog(ledger, events, 14)
    assert [(p.name, p.serial) for p in plan.fetch] == [("bar", 12), ("foo", 14)]


def test_named_plan_normalises_and_dedupes() -> None:
    plan = plan_named(["Foo", "foo", "Bar.Baz"])
    assert [(p.name, p.serial) for p in plan.fetch] == [("foo", None), ("bar-baz", None)]


def test_listing_rows_that_are_not_project_names_are_skipped() -> None:
    listing = [ListedProject("", 3), ListedProject("../x", 4), ListedProject("ok", 5)]
    plan = plan_from_listing({}, listing, 5, delete_removed=True)
    assert [p.name for p in plan.fetch] == ["ok"]
