"""`serve` for a tree kept in a storage backend (an object store): every answer read through the
`Storage` protocol, with the routes and headers of `serve`.

A request costs a HEAD (`Storage.stat`: the size, and the sha256 recorded at upload, which is
the ETag) and a streamed GET of just the bytes asked for: a Range request (uv reads a wheel's zip
directory that way) becomes a ranged GET, never a download of the whole file. Conditional
requests are answered from the ETag. A project's serial (``X-PyPI-Last-Serial``) is read from
the first or last few KiB of its JSON page and kept until the page's digest changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from pathlib import PurePosixPath
from typing import Final, Literal

from aiohttp import web

from bandersnatch_clone.config import Config
from bandersnatch_clone.errors import ConfigError, MissingFile
from bandersnatch_clone.layout import SIMPLE, V1_JSON_PAGE, WEB
from bandersnatch_clone.serve import parse_bind, peek_serial, serve, whole_serial
from bandersnatch_clone.storage import FileStat, Storage
from bandersnatch_clone.storage.loader import open_storage

log = logging.getLogger(__name__)

_PEEK: Final = 8192
_SERIAL_CACHE_MAX: Final = 10_000
# RFC 9110 14.1.2: one byte range (first-last, first-, or -suffix); several ranges are answered
# with the whole file, which the RFC allows.
_RANGE: Final = re.compile(r"bytes=(\d*)-(\d*)")


class StoreTree:
    """The `serve.Tree` of a storage backend (see the module docstring)."""

    def __init__(self, storage: Storage, label: str = "the configured storage") -> None:
        self.storage = storage
        self.label = label
        #: Project folder -> (the JSON page's size and sha256, its serial).
        self._serials: dict[PurePosixPath, tuple[FileStat, int | None]] = {}

    def __str__(self) -> str:
        return self.label

    async def respond(
        self,
        request: web.Request,
        rel: PurePosixPath,
        headers: dict[str, str],
        serial_of: PurePosixPath | None = None,
    ) -> web.StreamResponse | None:
        path = WEB / rel
        found = await self.storage.stat(path)
        if found is None:
            return None
        if serial_of is not None:
            page = WEB / serial_of / V1_JSON_PAGE
            serial = await self.serial(serial_of, found if page == path else None)
            if serial is not None:
                headers["X-PyPI-Last-Serial"] = str(serial)
        return await send(request, self.storage, path, found, headers)

    async def serial(self, rel_dir: PurePosixPath, known: FileStat | None = None) -> int | None:
        """``meta._last-serial`` of ``rel_dir/index.v1_json``, read again when its digest
        changes (always, for a page stored without one)."""
        page = WEB / rel_dir / V1_JSON_PAGE
        found = known or await self.storage.stat(page)
        if found is None:
            return None
        cached = self._serials.get(rel_dir)
        if cached is not None and cached[0] == found and found.sha256 is not None:
            return cached[1]
        try:
            serial = await self._read_serial(page, found.size)
        except MissingFile:
            return None
        if len(self._serials) >= _SERIAL_CACHE_MAX:
            self._serials.clear()
        self._serials[rel_dir] = (found, serial)
        return serial

    async def _read_serial(self, page: PurePosixPath, size: int) -> int | None:
        head = await _read(self.storage, page, 0, min(size, _PEEK))
        if (serial := peek_serial(head)) is not None:
            return serial
        if size > _PEEK:
            tail = await _read(self.storage, page, size - _PEEK, size)
            if (serial := peek_serial(tail)) is not None:
                return serial
            head = await _read(self.storage, page, 0, size)
        return whole_serial(head)


async def _read(storage: Storage, path: PurePosixPath, start: int, end: int) -> bytes:
    return b"".join([c async for c in storage.read_chunks(path, start=start, end=end)])


def byte_range(header: str | None, size: int) -> tuple[int, int] | Literal[False] | None:
    """RFC 9110 14.2: the ``[start, end)`` a ``Range`` header asks of a file of `size` bytes;
    None to send the whole file (no header, several ranges, or one we do not understand);
    False when it is unsatisfiable (416)."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or not (match[1] or match[2]):
        return None
    if not match[1]:  # the last N bytes
        suffix = int(match[2])
        return (max(0, size - suffix), size) if suffix and size else False
    first = int(match[1])
    if match[2] and int(match[2]) < first:
        return None  # invalid: ignored
    if first >= size:
        return False
    return first, min(int(match[2]) if match[2] else size - 1, size - 1) + 1


def _etag_matches(header: str | None, etag: str) -> bool:
    """RFC 9110 13.1.2 (If-None-Match), weak comparison."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


async def send(
    request: web.Request,
    storage: Storage,
    path: PurePosixPath,
    found: FileStat,
    headers: dict[str, str],
) -> web.StreamResponse | None:
    """A GET or HEAD of the file at `path`: 304, 206, 416 or 200; None when it is gone."""
    size = found.size
    # The sha256 recorded at upload is the content's identity; without one there is no
    # validator to offer (a size would make a rewritten page of the same length look fresh).
    etag = f'"{found.sha256}"' if found.sha256 is not None else None
    headers["Accept-Ranges"] = "bytes"
    if etag is not None:
        headers["ETag"] = etag
        if _etag_matches(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers=headers)
    wanted = byte_range(request.headers.get("Range"), size)
    if_range = request.headers.get("If-Range")
    if wanted is not None and if_range is not None and if_range.strip() != etag:
        wanted = None  # RFC 9110 13.1.5: the file changed, send all of it
    if wanted is False:
        headers["Content-Range"] = f"bytes */{size}"
        return web.Response(status=416, headers=headers)
    start, end, status = 0, size, 200
    if isinstance(wanted, tuple):
        start, end, status = wanted[0], wanted[1], 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = end - start
    if request.method == "HEAD":
        await response.prepare(request)
        return response
    chunks = storage.read_chunks(path, start=start, end=end)
    try:
        try:
            first = await anext(chunks, b"")
        except MissingFile:
            return None  # deleted since the HEAD
        await response.prepare(request)
        if first:
            await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
    finally:
        await chunks.aclose()
    await response.write_eof()
    return response


def run_serve_store(config: Config, bind: str, *, log_requests: bool = False) -> None:
    """Serve the tree of the configured storage backend on ``bind`` until Ctrl-C."""
    host, port = parse_bind(bind)
    opened = open_storage(config)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config, opened, host, port, log_requests))


async def _serve(
    config: Config,
    opened: contextlib.AbstractAsyncContextManager[Storage],
    host: str,
    port: int,
    log_requests: bool,
) -> None:
    async with opened as storage:
        if await storage.size(SIMPLE / V1_JSON_PAGE) is None:
            raise ConfigError(
                str(config.path), "storage", "no web/simple/index.v1_json: not a synced mirror"
            )
        tree = StoreTree(storage, f"the {config.storage.backend} storage of {config.path}")
        await serve(tree, host, port, log_requests=log_requests)
