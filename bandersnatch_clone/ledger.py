"""The per-project serial ledger: a sorted text file, held as its lines and decoded on demand.

One line per project, sorted: ``<normalised name> <serial> <files> <bytes> [<display name>]``.
At PyPI's size (700,000 projects) turning every line into an object costs over a second and
hundreds of MB, while a run that fetches 100 projects looks at 100 of them. So `Ledger` keeps
the lines of the last read or write as they are (found by binary search: for PEP 503 names, which
hold no character below ``-``, the sorted lines are in name order) and an overlay of what changed
since; `lines()` merges the two. Whole-ledger work (the root index, `status`) walks the lines.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from operator import le


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    serial: int
    #: How many files (and their total size) the project's pages link to: `status` sums these
    #: instead of walking the tree.
    files: int = 0
    size: int = 0
    #: The name as the upstream lists it, when it differs from the normalised one.
    display: str | None = None

    def to_fields(self, name: str) -> str:
        tail = f" {self.display}" if self.display and self.display != name else ""
        return f"{name} {self.serial} {self.files} {self.size}{tail}"

    @classmethod
    def from_fields(cls, parts: list[str]) -> LedgerEntry:
        display = parts[4] if len(parts) > 4 else None
        return cls(int(parts[1]), int(parts[2]), int(parts[3]), display)


#: Above this many changes a merge rebuilds the lines instead of splicing each one in.
_SPLICE_LIMIT = 4096


class Ledger(MutableMapping[str, LedgerEntry]):
    """name -> `LedgerEntry`, cheap to load, look up in, update and write back at any size.

    `names_changed` says whether a project was added or removed, or its display name changed,
    since the ledger was read: when not, the root index's HTML forms (names only) are unchanged.
    """

    def __init__(self, entries: Mapping[str, LedgerEntry] | None = None) -> None:
        self._base: list[str] = []
        self._overlay: dict[str, LedgerEntry | None] = {}
        self._size = 0
        self.names_changed = False
        #: Projects given a new entry since the ledger was read.
        self._touched: set[str] = set()
        if entries:
            self._base = sorted(entry.to_fields(name) for name, entry in entries.items())
            self._size = len(self._base)

    @classmethod
    def from_text(cls, text: str) -> Ledger:
        """Parse a ledger file's text; lines with fewer than four fields are dropped."""
        ledger = cls()
        lines = [line for line in text.split("\n") if line]
        if not all(map(le, lines, lines[1:])):
            lines.sort()
        ledger._base = lines
        ledger._size = len(lines)
        return ledger

    # -- lookups ---------------------------------------------------------------------------

    def _find(self, name: str) -> int | None:
        """Index of `name`'s line in the base, or None."""
        key = name + " "
        i = bisect_left(self._base, key)
        if i < len(self._base) and self._base[i].startswith(key):
            return i
        return None

    def _base_entry(self, name: str) -> LedgerEntry | None:
        i = self._find(name)
        return None if i is None else _decode(self._base[i])

    def get_entry(self, name: str) -> LedgerEntry | None:
        if name in self._overlay:
            return self._overlay[name]
        return self._base_entry(name)

    def __getitem__(self, name: str) -> LedgerEntry:
        entry = self.get_entry(name)
        if entry is None:
            raise KeyError(name)
        return entry

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get_entry(name) is not None

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def entries(self) -> Iterator[tuple[str, LedgerEntry]]:
        """(name, entry) for every project, sorted: one pass over the lines."""
        for line, entry in self._valid_lines():
            yield line.partition(" ")[0], entry

    def serials(self) -> dict[str, int]:
        """name -> serial for every project (what a diff of the whole listing needs)."""
        serials: dict[str, int] = {}
        for line in self.lines():
            parts = line.split(" ", 2)
            try:
                serials[parts[0]] = int(parts[1])
            except (IndexError, ValueError):
                continue
        return serials

    def names(self) -> list[str]:
        """Every project name, sorted."""
        return [line.partition(" ")[0] for line in self.lines()]

    # -- changes ---------------------------------------------------------------------------

    def __setitem__(self, name: str, entry: LedgerEntry) -> None:
        old = self.get_entry(name)
        if old is None:
            self._size += 1
            self.names_changed = True
        elif (old.display or name) != (entry.display or name):
            self.names_changed = True
        self._overlay[name] = entry
        self._touched.add(name)

    def __delitem__(self, name: str) -> None:
        if self.get_entry(name) is None:
            raise KeyError(name)
        self._overlay[name] = None
        self._size -= 1
        self.names_changed = True

    # -- the whole ledger ------------------------------------------------------------------

    def lines(self) -> list[str]:
        """The ledger file's lines, sorted; the overlay is merged into the base first."""
        if self._overlay:
            self._merge()
        return self._base

    def _merge(self) -> None:
        changes = sorted(self._overlay.items())
        self._overlay = {}
        base = self._base
        if len(changes) > _SPLICE_LIMIT:
            kept = {line.partition(" ")[0]: line for line in base}
            for name, entry in changes:
                if entry is None:
                    kept.pop(name, None)
                else:
                    kept[name] = entry.to_fields(name)
            self._base = sorted(kept.values())
            return
        # Few changes: splice each into place (one binary search and one list move each).
        for name, entry in changes:
            i = self._find(name)
            if entry is None:
                if i is not None:
                    del base[i]
            elif i is not None:
                base[i] = entry.to_fields(name)
            else:
                base.insert(bisect_left(base, name + " "), entry.to_fields(name))

    def to_text(self) -> str:
        lines = self.lines()
        return "\n".join(lines) + "\n" if lines else ""

    def root_rows(self) -> tuple[list[str], list[str], list[int]]:
        """(normalised names, display names, serials), sorted: what the root index lists."""
        split = [line.split(" ") for line in self.lines()]
        try:
            serials = [int(parts[1]) for parts in split]
        except (IndexError, ValueError):
            # A damaged line (the file was edited by hand): leave it out, as lookups do.
            split = [line.split(" ") for line, _ in self._valid_lines()]
            serials = [int(parts[1]) for parts in split]
        norms = [parts[0] for parts in split]
        names = [parts[4] if len(parts) > 4 else parts[0] for parts in split]
        return norms, names, serials

    def _valid_lines(self) -> Iterator[tuple[str, LedgerEntry]]:
        for line in self.lines():
            entry = _decode(line)
            if entry is not None:
                yield line, entry

    def changed_rows(self) -> list[tuple[str, str, int]] | None:
        """(name, display name, serial) of every project updated since the ledger was read,
        when none came, went or was renamed (so the root index keeps its rows); else None."""
        if self.names_changed:
            return None
        rows = []
        for name in sorted(self._touched):
            entry = self.get_entry(name)
            if entry is None:
                return None
            rows.append((name, entry.display or name, entry.serial))
        return rows

    def totals(self) -> tuple[int, int]:
        """(files, bytes) over every project."""
        files = size = 0
        for _, entry in self._valid_lines():
            files += entry.files
            size += entry.size
        return files, size


def _decode(line: str) -> LedgerEntry | None:
    """The entry of one ledger line; None for a damaged line (its project is fetched again)."""
    parts = line.split(" ", 4)
    try:
        return LedgerEntry.from_fields(parts)
    except (IndexError, ValueError):
        return None
