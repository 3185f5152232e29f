"""Finding the changed rows of a listing without parsing it must give what parsing it gives."""

from __future__ import annotations

import json
import random
import re

import pytest

from bandersnatch_clone.ledger import Ledger, LedgerEntry
from bandersnatch_clone.listing_scan import above, scan
from bandersnatch_clone.model import ListedProject
from bandersnatch_clone.parse import parse_listing_json
from bandersnatch_clone.plan import plan_from_changed_rows


@pytest.mark.parametrize("serial", [0, 1, 9, 10, 99, 1299, 1300, 30_000_000, 29_999_999, 10**12])
def test_above_matches_exactly_the_greater_integers(serial: int) -> None:
    pattern = re.compile(above(serial))
    rng = random.Random(serial)
    candidates = {serial + d for d in range(-12, 13) if serial + d >= 0}
    candidates |= {rng.randrange(0, max(2, serial * 20)) for _ in range(300)}
    candidates |= {10**k for k in range(14)} | {10**k - 1 for k in range(1, 14)}
    wrong = [n for n in candidates if bool(pattern.fullmatch(str(n))) != (n > serial)]
    assert wrong == []


def _listing(rows: list[tuple[str, int]], serial: int, *, spaced: bool = False) -> bytes:
    doc = {
        "meta": {"api-version": "1.4", "_last-serial": serial},
        "projects": [{"name": n, "_last-serial": s} for n, s in rows],
    }
    return json.dumps(doc, separators=(", ", ": ") if spaced else (",", ":")).encode()


@pytest.mark.parametrize("spaced", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_rows_above_agree_with_a_full_parse(seed: int, spaced: bool) -> None:
    rng = random.Random(seed)
    rows = [(f"Proj_{i}" if i % 3 else f"proj-{i}", rng.randrange(1, 10_000)) for i in range(2000)]
    body = _listing(rows, 10_000, spaced=spaced)
    since = rng.randrange(1, 10_000)
    _, parsed = parse_listing_json(body, "u")
    assert scan(body, since) == ([row for row in parsed if row.serial > since], len(parsed))


@pytest.mark.parametrize(
    "body",
    [
        # PyPI-like proxies that write serials as strings: the scan would see none of them.
        b'{"meta":{"api-version":"1.1","_last-serial":"9"},"projects":[{"name":"a","_last-serial":"9"}]}',
        b'{"meta":{"api-version":"1.1","_last-serial":9},"projects":[{"name":"a","_last-serial":"9"}]}',
        # A row that does not parse on its own.
        b'{"meta":{"api-version":"1.1","_last-serial":9},"projects":[{"name":"a{b","_last-serial":9}]}',
        # No flat meta object.
        b'{"projects":[{"name":"a","_last-serial":9}]}',
    ],
)
def test_unusual_shapes_are_left_to_the_full_parse(body: bytes) -> None:
    assert scan(body, 1) is None


LEDGER = Ledger({"a": LedgerEntry(5), "b": LedgerEntry(5), "c": LedgerEntry(5)})


@pytest.mark.parametrize(
    ("changed", "listed", "listed_before", "expect"),
    [
        # b moved: fetched; nothing added or removed.
        ([("b", 9)], 4, 4, ["b"]),
        # d is new and the listing grew by one: nothing can have gone.
        ([("d", 9)], 5, 4, ["d"]),
        # d is new but the listing did not grow: a project left. Diff everything.
        ([("d", 9)], 4, 4, None),
        # Nothing changed in the listing, yet it shrank.
        ([], 3, 4, None),
        # Grew with no new row: the counts do not add up. Diff everything.
        ([], 5, 4, None),
        # An invalid name is counted but never fetched.
        ([("../evil", 9)], 5, 4, []),
    ],
)
def test_plan_from_changed_rows(
    changed: list[tuple[str, int]], listed: int, listed_before: int, expect: list[str] | None
) -> None:
    plan = plan_from_changed_rows(
        LEDGER,
        [ListedProject(n, s) for n, s in changed],
        9,
        listed=listed,
        listed_before=listed_before,
        delete_removed=True,
    )
    assert (None if plan is None else [p.name for p in plan.fetch]) == expect


def test_without_deletions_the_counts_do_not_matter() -> None:
    plan = plan_from_changed_rows(
        LEDGER, [ListedProject("d", 9)], 9, listed=1, listed_before=4, delete_removed=False
    )
    assert (None if plan is None else [p.name for p in plan.fetch]) == ["d"]
