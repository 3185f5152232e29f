"""The per-project serial ledger: a sorted file, held as its bytes and decoded on demand.

One line per project, sorted: ``<normalised name> <serial> <files> <bytes> [<display name>]``,
under a header line ``#ledger <crc32 of the lines> <line count>`` that certifies the lines as
written by us (sorted, whole). At PyPI's size (700,000 projects, 19 MB) turning every line into
an object costs 0.1 s and 70 MB, while a run that fetches 100 projects looks at 100 of them. So
`Ledger` keeps the bytes of the last read or write as they are (a line is found by binary search
over the bytes: for PEP 503 names, which hold no character below ``-``, the sorted lines are in
name order) and an overlay of what changed since. Writing splices the overlay into the bytes.
Whole-ledger work (a full diff, the root index, `status`) decodes the lines once and keeps them.

A file without the header (older versions) or whose checksum does not match (edited by hand) is
read line by line instead, sorted when it is not, and certified when next written.
"""

from __future__ import annotations

import zlib
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
_HEADER = b"#ledger "


class Ledger(MutableMapping[str, LedgerEntry]):
    """name -> `LedgerEntry`, cheap to load, look up in, update and write back at any size.

    `names_changed` says whether a project was added or removed, or its display name changed,
    since the ledger was read: when not, the root index's HTML forms (names only) are unchanged.
    """

    def __init__(self, entries: Mapping[str, LedgerEntry] | None = None) -> None:
        #: The sorted lines, each ending in a newline.
        self._blob = b""
        #: The same lines decoded, once whole-ledger work asked for them.
        self._lines: list[str] | None = None
        self._overlay: dict[str, LedgerEntry | None] = {}
        self._size = 0
        self.names_changed = False
        #: Projects given a new entry since the ledger was read.
        self._touched: set[str] = set()
        if entries:
            self._set_lines(sorted(entry.to_fields(name) for name, entry in entries.items()))

    @classmethod
    def from_text(cls, text: str) -> Ledger:
        """Parse a ledger file's text (no header needed); empty and ``#`` lines are skipped."""
        ledger = cls()
        lines = [line for line in text.split("\n") if line and not line.startswith("#")]
        if not all(map(le, lines, lines[1:])):
            lines.sort()
        ledger._set_lines(lines)
        return ledger

    @classmethod
    def from_file(cls, header: bytes, body: bytes) -> Ledger:
        """A ledger file as its first line and the rest: the rest is taken as it is when the
        header certifies it, else parsed line by line (see `from_text`)."""
        fields = header.split()
        if header.startswith(_HEADER) and len(fields) == 3 and body.endswith(b"\n"):
            try:
                crc, count = int(fields[1], 16), int(fields[2])
            except ValueError:
                crc, count = -1, -1
            if zlib.crc32(body) == crc:
                ledger = cls()
                ledger._blob, ledger._size = body, count
                return ledger
        return cls.from_text((header + body).decode("utf-8"))

    def file_parts(self) -> tuple[bytes, bytes]:
        """(header line, lines): what a ledger file holds, for `from_file` to read back."""
        self._merge()
        return b"#ledger %08x %d\n" % (zlib.crc32(self._blob), self._size), self._blob

    def _set_lines(self, lines: list[str]) -> None:
        self._lines = lines
        self._blob = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
        self._size = len(lines)

    # -- lookups ---------------------------------------------------------------------------

    def _find(self, name: str) -> tuple[int, int]:
        """(start, end) of the first line not below ``name + " "`` in the bytes (start == end
        at the end); it is `name`'s line when it starts with that key (see `_at`)."""
        blob, key = self._blob, name.encode("utf-8") + b" "
        lo, hi = 0, len(blob)  # both always at the start of a line (or the end)
        while lo < hi:
            mid = (lo + hi) // 2
            start = blob.rfind(b"\n", lo, mid) + 1 or lo
            end = blob.find(b"\n", start) + 1
            if blob[start:end] < key:
                lo = end
            else:
                hi = start
        end = blob.find(b"\n", lo) + 1 or lo
        return lo, end

    def _at(self, name: str) -> tuple[int, int, bool]:
        start, end = self._find(name)
        return start, end, self._blob.startswith(name.encode("utf-8") + b" ", start)

    def _base_entry(self, name: str) -> LedgerEntry | None:
        start, end, found = self._at(name)
        return _decode(self._blob[start : end - 1].decode("utf-8")) if found else None

    def get_entry(self, name: str) -> LedgerEntry | None:
        if name in self._overlay:
            return self._overlay[name]
        return self._base_entry(name)

    def _has_line(self, name: str) -> bool:
        """Whether `name` has a line, damaged or not."""
        if name in self._overlay:
            return self._overlay[name] is not None
        return self._at(name)[2]

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
        if not self._has_line(name):
            self._size += 1
            self.names_changed = True
        elif old is None or (old.display or name) != (entry.display or name):
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
        """The ledger's lines, sorted; the overlay is merged in first."""
        self._merge()
        if self._lines is None:
            self._lines = self._blob.decode("utf-8").split("\n")[:-1]
        return self._lines

    def _merge(self) -> None:
        if not self._overlay:
            return
        changes = sorted(self._overlay.items())
        self._overlay = {}
        if len(changes) > _SPLICE_LIMIT:
            kept = {line.partition(" ")[0]: line for line in self.lines()}
            for name, entry in changes:
                if entry is None:
                    kept.pop(name, None)
                else:
                    kept[name] = entry.to_fields(name)
            self._set_lines(sorted(kept.values()))
            return
        # Few changes: the bytes between them are kept as they are (one copy, in the join),
        # and decoded lines, if any, get the same changes spliced in.
        view, done = memoryview(self._blob), 0
        parts: list[bytes | memoryview] = []
        for name, entry in changes:
            start, end, found = self._at(name)
            parts.append(view[done:start])
            if entry is not None:
                parts.append(entry.to_fields(name).encode("utf-8") + b"\n")
            done = end if found else start
            if self._lines is not None:
                self._splice_line(name, entry)
        parts.append(view[done:])
        self._blob = b"".join(parts)
        view.release()

    def _splice_line(self, name: str, entry: LedgerEntry | None) -> None:
        lines = self._lines
        assert lines is not None
        key = name + " "
        i = bisect_left(lines, key)
        found = i < len(lines) and lines[i].startswith(key)
        if entry is None:
            if found:
                del lines[i]
        elif found:
            lines[i] = entry.to_fields(name)
        else:
            lines.insert(i, entry.to_fields(name))

    def to_text(self) -> str:
        """The lines, without the header (`from_text` reads them back)."""
        self._merge()
        return self._blob.decode("utf-8")

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
