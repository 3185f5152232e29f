"""The ledger answers like a dict, whatever mix of reads, writes and merges it went through."""

from __future__ import annotations

import random

import pytest

from bandersnatch_clone.layout import V1_JSON_PAGE
from bandersnatch_clone.ledger import Ledger, LedgerEntry
from bandersnatch_clone.render import root_pages_sorted, splice_root_json


def _name(rng: random.Random) -> str:
    # Names that are prefixes of each other ("a", "a-b", "a0") are where a careless binary
    # search over "name serial ..." lines would go wrong.
    return rng.choice(["a", "a-b", "a0", "ab", "b", "zope", "zope-interface", "z"]) + (
        "" if rng.random() < 0.5 else f"-{rng.randrange(40)}"
    )


def _entry(rng: random.Random) -> LedgerEntry:
    display = rng.choice([None, None, "Shown_Name"])
    return LedgerEntry(rng.randrange(1, 10**8), rng.randrange(10), rng.randrange(10**6), display)


@pytest.mark.parametrize("seed", range(20))
def test_random_operations_match_a_dict(seed: int) -> None:
    rng = random.Random(seed)
    model = {_name(rng): _entry(rng) for _ in range(rng.randrange(0, 60))}
    ledger = Ledger.from_text(Ledger(model).to_text())
    for step in range(400):
        name = _name(rng)
        action = rng.random()
        if action < 0.45:
            ledger[name] = model[name] = _entry(rng)
        elif action < 0.7:
            assert ledger.pop(name, None) == model.pop(name, None)
        elif action < 0.8:
            # A write in the middle of a run folds the overlay into the lines.
            if step % 3 == 0:
                ledger = Ledger.from_text(ledger.to_text())
            elif step % 3 == 1:
                ledger = Ledger.from_file(*ledger.file_parts())
            else:
                ledger.lines()
        else:
            assert (name in ledger, ledger.get(name)) == (name in model, model.get(name))
        assert len(ledger) == len(model)
    assert (sorted(ledger), dict(ledger.entries()), ledger == model) == (
        sorted(model),
        dict(sorted(model.items())),
        True,
    )


def test_many_changes_merge_like_few() -> None:
    rng = random.Random(7)
    model = {f"p{i:05d}": LedgerEntry(i) for i in range(0, 12000, 2)}
    ledger = Ledger(model)
    for i in rng.sample(range(12000), 6000):
        ledger[f"p{i:05d}"] = model[f"p{i:05d}"] = LedgerEntry(i + 1)
    assert Ledger.from_text(ledger.to_text()) == model


def _file(ledger: Ledger) -> bytes:
    header, body = ledger.file_parts()
    return header + body


def _read(data: bytes) -> Ledger:
    header, _, body = data.partition(b"\n")
    return Ledger.from_file(header + b"\n", body)


def test_a_file_edited_by_hand_is_read_line_by_line() -> None:
    model = {f"p{i}": LedgerEntry(i, 1, i * 10) for i in range(50)}
    data = _file(Ledger(model))
    header, _, body = data.partition(b"\n")
    lines = body.splitlines(keepends=True)
    cut = lines.index(b"p7 7 1 70\n")
    del model["p7"]
    edits = {
        "as written": data,
        # Written by an older version: no header at all.
        "no header": body,
        # A line taken out, lines moved (so unsorted), the header left as it was.
        "edited": header + b"\n" + b"".join(lines[cut + 1 :] + lines[:cut]),
    }
    read = {what: _read(data) for what, data in edits.items()}
    assert {what: len(ledger) for what, ledger in read.items()} == {
        "as written": 50,
        "no header": 50,
        "edited": 49,
    }
    assert read["edited"] == model
    assert (read["edited"].get("p30"), "p7" in read["edited"]) == (LedgerEntry(30, 1, 300), False)
    # Written back, the edited ledger is certified again, sorted.
    again = _file(read["edited"])
    assert (again.startswith(b"#ledger "), _read(again) == model) == (True, True)
    assert again.splitlines()[1:] == sorted(again.splitlines()[1:])


def test_names_changed_only_when_a_project_comes_goes_or_is_renamed() -> None:
    text = Ledger({"a": LedgerEntry(1), "b": LedgerEntry(2, display="B")}).to_text()
    cases = []
    for change in ("serial", "display", "new", "gone", "same-display"):
        ledger = Ledger.from_text(text)
        if change == "serial":
            ledger["a"] = LedgerEntry(5, 3, 100)
        elif change == "display":
            ledger["a"] = LedgerEntry(5, display="A")
        elif change == "new":
            ledger["c"] = LedgerEntry(5)
        elif change == "gone":
            del ledger["b"]
        else:
            ledger["b"] = LedgerEntry(9, display="B")
        cases.append((change, ledger.names_changed))
    assert cases == [
        ("serial", False),
        ("display", True),
        ("new", True),
        ("gone", True),
        ("same-display", False),
    ]


def test_damaged_lines_are_left_out_not_fatal() -> None:
    ledger = Ledger.from_text("a 1 2 3\nb not-a-serial 0 0\nc 3 1 1 C\ntruncated\n")
    assert (dict(ledger.entries()), ledger.root_rows(), ledger.totals(), "b" in ledger) == (
        {"a": LedgerEntry(1, 2, 3), "c": LedgerEntry(3, 1, 1, "C")},
        (["a", "c"], ["a", "C"], [1, 3]),
        (3, 4),
        False,
    )


@pytest.mark.parametrize("seed", range(10))
def test_spliced_root_page_equals_a_full_render(seed: int) -> None:
    rng = random.Random(seed)
    names = sorted({f"p{rng.randrange(10**6)}" for _ in range(rng.randrange(1, 300))})
    ledger = Ledger({n: LedgerEntry(rng.randrange(1, 10**6), display=n.upper()) for n in names})
    old = root_pages_sorted(*ledger.root_rows(), 10**6, html=False)[V1_JSON_PAGE]
    ledger = Ledger.from_text(ledger.to_text())
    for name in rng.sample(names, rng.randrange(0, len(names) + 1)):
        ledger[name] = LedgerEntry(rng.randrange(10**6, 2 * 10**6), display=name.upper())
    changed = ledger.changed_rows()
    assert changed is not None
    spliced = splice_root_json(old, changed, len(ledger), 2 * 10**6)
    assert spliced == root_pages_sorted(*ledger.root_rows(), 2 * 10**6, html=False)[V1_JSON_PAGE]


def test_a_root_page_out_of_step_is_not_spliced() -> None:
    ledger = Ledger({"a": LedgerEntry(1), "b": LedgerEntry(2), "c": LedgerEntry(3)})
    page = root_pages_sorted(*ledger.root_rows(), 3, html=False)[V1_JSON_PAGE]
    other = root_pages_sorted(["a", "x"], ["a", "x"], [1, 9], 3, html=False)[V1_JSON_PAGE]
    ledger = Ledger.from_text(ledger.to_text())
    ledger["b"] = LedgerEntry(7)
    changed = ledger.changed_rows()
    assert changed is not None
    added = Ledger.from_text(ledger.to_text())
    added["d"] = LedgerEntry(1)
    assert (
        [
            splice_root_json(page, changed, 3, 9) is not None,
            splice_root_json(other, changed, 2, 9),  # another count, another name at that row
            splice_root_json(other, [("b", "b", 7)], 2, 9),  # no row names b
            splice_root_json(page[:-1], changed, 3, 9),  # truncated
            added.changed_rows(),  # a project came: rows moved
        ]
        == [True, None, None, None, None]
    )
