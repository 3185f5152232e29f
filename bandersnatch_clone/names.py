"""Project names in bulk: PEP 503 normalisation of 700,000 names at a time, fast."""

from __future__ import annotations

from collections.abc import Callable

from packaging.utils import canonicalize_name


def per_line(func: Callable[[str], str], items: list[str]) -> list[str]:
    """``[func(item) for item in items]``, computed as one call over the newline-joined items.

    Exact for functions that treat each line on its own and keep newlines, as `html.escape` and
    `canonicalize_name` do, and about ten times faster over 700,000 names. An item holding a
    newline changes the line count, and then the plain per-item loop runs instead.
    """
    out = func("\n".join(items)).split("\n")
    return out if len(out) == len(items) else [func(item) for item in items]


def canonical_names(names: list[str]) -> list[str]:
    """PEP 503 normalised form of each name (``canonicalize_name``), in order."""
    return per_line(canonicalize_name, names)
