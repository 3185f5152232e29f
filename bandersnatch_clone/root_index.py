"""Publishing a run's end state: the root index in its three forms, then the ledger.

Apart from the sync engine so that `verify` and `delete`, which rewrite the root index, do not
import the engine, its parsers and planners (start-up time is most of a small verify).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bandersnatch_clone import layout
from bandersnatch_clone.render import root_pages_sorted, splice_root_json
from bandersnatch_clone.state import Ledger, write_ledger
from bandersnatch_clone.storage import Storage


async def write_root_index(
    storage: Storage, ledger: Ledger, serial: int, *, rewrite: bool = False
) -> None:
    """The root index in its three forms, from the ledger (never from a scan of web/simple/).

    The HTML forms list names only: when no project came or went (nor changed its display name)
    since the ledger was read, and they exist, they are left alone without being rendered or
    read back (30 MB each at PyPI's size). `rewrite` renders and compares all three anyway.
    """
    html_pages = [layout.SIMPLE / layout.HTML_PAGE, layout.SIMPLE / layout.V1_HTML_PAGE]
    html = rewrite or ledger.names_changed or None in await storage.sizes(html_pages)

    changed = None if html else ledger.changed_rows()
    old = None if changed is None else await storage.read_bytes(layout.SIMPLE / layout.V1_JSON_PAGE)

    def render() -> dict[str, bytes]:
        if old is not None and changed is not None:
            # No project came or went: rewrite the moved rows of the last root page.
            spliced = splice_root_json(old, changed, len(ledger), serial)
            if spliced is not None:
                return {layout.V1_JSON_PAGE: spliced}
        return root_pages_sorted(*ledger.root_rows(), serial, html=html)

    pages = await asyncio.to_thread(render)
    await storage.write_many([(layout.SIMPLE / page, body) for page, body in pages.items()])


async def save_ledger(directory: Path, ledger: Ledger) -> None:
    await asyncio.to_thread(write_ledger, directory, ledger)
