"""The few rows of a 700,000-row root listing whose serial moved, found without parsing it all.

PyPI's PEP 691 root listing is one JSON document of about 35 MB. Turning all of it into Python
objects costs about 0.3 s and 200 MB, for a run that wants the hundred or so rows whose
``_last-serial`` is above the mirror's. A regular expression that matches only integers above a
given one finds those rows in C; each is then parsed on its own, strictly. Whenever the document
does not have the plain shape this relies on (a serial written as a string, a row that does not
parse alone, a nested ``meta``), these functions answer None and the caller parses everything.
"""

from __future__ import annotations

import json
import re

from bandersnatch_clone.model import ListedProject

_KEY = b'"_last-serial"'
_META = re.compile(rb'"meta"\s*:\s*\{[^{}]*\}')


def above(serial: int) -> str:
    """A regular expression matching exactly the decimal integers greater than `serial`.

    >>> bool(re.fullmatch(above(1299), "1300")), bool(re.fullmatch(above(1299), "1299"))
    (True, False)
    """
    digits = str(serial)
    width = len(digits)
    # Any number with more digits (no leading zero), or as many digits and, at the first
    # place where it differs from `serial`, a greater digit.
    forms = [f"[1-9][0-9]{{{width},}}"]
    for i, digit in enumerate(digits):
        if digit != "9":
            rest = width - i - 1
            forms.append(
                re.escape(digits[:i])
                + f"[{int(digit) + 1}-9]"
                + (f"[0-9]{{{rest}}}" if rest else "")
            )
    return f"(?:{'|'.join(forms)})(?![0-9])"


def scan(body: bytes, serial: int) -> tuple[list[ListedProject], int] | None:
    """(the rows whose ``_last-serial`` is above `serial`, in listing order; how many rows the
    listing has), or None when unsure."""
    meta = _META.search(body)
    if meta is None:
        return None
    rows: list[ListedProject] = []
    # One pass finds both the rows above `serial` and any serial that is not an integer.
    pattern = re.compile(_KEY + rb"\s*:\s*(?:(" + above(serial).encode() + rb")|[^0-9\s])")
    for match in pattern.finditer(body):
        if match[1] is None:
            return None
        if meta.start() <= match.start() < meta.end():
            continue
        start = body.rfind(b"{", 0, match.start())
        end = body.find(b"}", match.end())
        row = _row(body[start : end + 1]) if start >= 0 and end >= 0 else None
        if row is None:
            return None
        rows.append(row)
    return rows, body.count(_KEY) - meta[0].count(_KEY)


def _row(snippet: bytes) -> ListedProject | None:
    try:
        data = json.loads(snippet)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    name, serial = data.get("name"), data.get("_last-serial")
    if type(name) is not str or type(serial) is not int or serial < 0:
        return None
    return ListedProject(name, serial)
