"""Read-only aiohttp server for a mirror's web/ tree, with PEP 691 content negotiation.

The tree is a local folder (`LocalTree`: sendfile) or any storage backend such as an object
store (`serve_store.StoreTree`: streamed from the store); the routes and headers are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Final, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler

from bandersnatch_clone.errors import ConfigError, UnsafePath
from bandersnatch_clone.layout import (
    HTML_PAGE,
    JSON_DIR,
    PACKAGES,
    PYPI_DIR,
    SIMPLE,
    V1_HTML_PAGE,
    V1_JSON_PAGE,
    WEB,
    check_segment,
    normalize,
)

log = logging.getLogger(__name__)
access_log = logging.getLogger(__name__ + ".access")

TEXT_HTML: Final = "text/html"
V1_HTML: Final = "application/vnd.pypi.simple.v1+html"
V1_JSON: Final = "application/vnd.pypi.simple.v1+json"
#: What a page can be sent as, in PyPI's order of preference when a client likes several equally.
OFFERS: Final = (TEXT_HTML, V1_HTML, V1_JSON)
PAGE_FILES: Final = {TEXT_HTML: HTML_PAGE, V1_HTML: V1_HTML_PAGE, V1_JSON: V1_JSON_PAGE}
# PEP 691: "If latest was requested by the client, then v1 must be returned by the index server."
_ALIASES: Final = {
    "application/vnd.pypi.simple.latest+html": V1_HTML,
    "application/vnd.pypi.simple.latest+json": V1_JSON,
}
# RFC 9110 12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_QVALUE: Final = re.compile(r"0(?:\.\d{0,3})?|1(?:\.0{0,3})?")

#: PyPI's caching: pages change with every sync, files never (their path holds their hash).
PAGE_CACHE: Final = "max-age=600"
FILE_CACHE: Final = "max-age=365000000, immutable"
METADATA_TYPE: Final = "text/plain; charset=utf-8"
PARTIAL_NOTE: Final = (
    "This mirror may hold only part of the upstream index (filtered, or still syncing)."
)

# A project page's serial sits in its JSON form's "meta"; read only the ends of the file for it.
# The lookahead keeps a number cut off at the end of the peeked bytes from matching.
_META_SERIAL: Final = re.compile(rb'"meta"\s*:\s*\{[^{}]*?"_last-serial"\s*:\s*(\d+)(?=[\s,}])')
_PEEK: Final = 8192
_SERIAL_CACHE_MAX: Final = 10_000


def negotiate(accept: str | None) -> str | None:
    """The page format to send for an ``Accept`` header, or None when the client takes none of them.

    RFC 9110 12.5.1: each format gets the q of the most specific range that matches it
    (``text/html`` over ``text/*`` over ``*/*``; the first of equals); the highest q above 0 wins
    and ties go to the order of `OFFERS`, as on PyPI. Media-type parameters other than q are
    ignored and a range with a malformed q is skipped: examples/nginx.conf does exactly the same.
    """
    if accept is None or not accept.strip():
        # PEP 691: "If this header is missing, the index server assumes it to be */*."
        accept = "*/*"
    best: dict[str, tuple[int, int]] = {}  # offer -> (specificity, q in thousandths)
    for media_range, q in _parse_accept(accept):
        for offer in OFFERS:
            specificity = _specificity(media_range, offer)
            if specificity is not None and specificity > best.get(offer, (-1, 0))[0]:
                best[offer] = (specificity, q)
    ranked = [(best[o][1], -i, o) for i, o in enumerate(OFFERS) if best.get(o, (0, 0))[1] > 0]
    return max(ranked)[2] if ranked else None


def _parse_accept(header: str) -> Iterator[tuple[str, int]]:
    """``(media range, q * 1000)`` for each well-formed element of an Accept header."""
    for element in header.split(","):
        media_range, *params = element.split(";")
        media_range = media_range.strip().lower()
        if media_range.count("/") != 1:
            continue
        q: int | None = 1000
        for param in (p.strip() for p in params):
            if param[:2].lower() == "q=":  # the first q counts; a malformed one voids the range
                q = round(float(param[2:]) * 1000) if _QVALUE.fullmatch(param[2:]) else None
                break
        if q is not None:
            yield media_range, q


def _specificity(media_range: str, offer: str) -> int | None:
    """2 for the offer itself, 1 for ``type/*``, 0 for ``*/*``, None when the range excludes it."""
    if media_range == "*/*":
        return 0
    range_type, range_subtype = media_range.split("/")
    if range_type != offer.split("/")[0]:
        return None
    if range_subtype == "*":
        return 1
    return 2 if _ALIASES.get(media_range, media_range) == offer else None


class Tree(Protocol):
    """Where the served files come from: a local ``web/`` folder (`LocalTree`), or a storage
    backend such as an object store (`serve_store.StoreTree`)."""

    async def respond(
        self,
        request: web.Request,
        rel: PurePosixPath,
        headers: dict[str, str],
        serial_of: PurePosixPath | None = None,
    ) -> web.StreamResponse | None:
        """The response for the file at `rel` (below web/) with `headers`, conditional and
        Range requests answered; None when there is no such file. `serial_of`: the project
        folder whose JSON page's serial goes in ``X-PyPI-Last-Serial``."""


class LocalTree:
    """The files under a local web/: path safety, the serial cache, sendfile. Its helpers
    block: they run in a thread."""

    def __init__(self, web_root: Path) -> None:
        self.root = web_root.resolve()
        self._serials: dict[Path, tuple[tuple[int, int], int | None]] = {}

    async def respond(
        self,
        request: web.Request,
        rel: PurePosixPath,
        headers: dict[str, str],
        serial_of: PurePosixPath | None = None,
    ) -> web.StreamResponse | None:
        found = await asyncio.to_thread(self._find, rel, serial_of)
        if found is None:
            return None
        path, serial = found
        if serial is not None:
            headers["X-PyPI-Last-Serial"] = str(serial)
        # FileResponse does ETag/304, Range and sendfile.
        return web.FileResponse(path, headers=headers)

    def _find(
        self, rel: PurePosixPath, serial_of: PurePosixPath | None
    ) -> tuple[Path, int | None] | None:
        """The file and its project's serial, in one thread hop."""
        path = self.locate(rel)
        if path is None:
            return None
        return path, None if serial_of is None else self.serial(serial_of)

    def locate(self, rel: PurePosixPath) -> Path | None:
        """The regular file at ``rel`` below web/, or None; symlinks may not lead outside web/."""
        try:
            path = self.root.joinpath(rel).resolve(strict=True)
        except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a NUL byte
            return None
        if not path.is_relative_to(self.root):
            log.warning("refusing %s: it resolves outside %s", rel, self.root)
            return None
        return path if path.is_file() else None

    def serial(self, rel_dir: PurePosixPath) -> int | None:
        """``meta._last-serial`` of ``rel_dir/index.v1_json``, read again only when it changes."""
        path = self.locate(rel_dir / V1_JSON_PAGE)
        if path is None:
            return None
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._serials.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        serial = _read_serial(path)
        if len(self._serials) >= _SERIAL_CACHE_MAX:
            self._serials.clear()
        self._serials[path] = (stamp, serial)
        return serial


def _read_serial(path: Path) -> int | None:
    """The PEP 691 ``meta._last-serial`` of a JSON page: from its first or last few KiB if there."""
    with path.open("rb") as f:
        data = f.read(_PEEK)
        if (serial := peek_serial(data)) is not None:
            return serial
        size = os.fstat(f.fileno()).st_size
        if size > _PEEK:
            f.seek(size - _PEEK)
            if (serial := peek_serial(f.read())) is not None:
                return serial
            f.seek(0)
            data = f.read()
    return whole_serial(data)


def peek_serial(data: bytes) -> int | None:
    """``meta._last-serial`` if it is in these bytes of a JSON page (its start or its end)."""
    match = _META_SERIAL.search(data)
    return None if match is None else int(match[1])


def whole_serial(data: bytes) -> int | None:
    """``meta._last-serial`` of a whole JSON page; None when it has none."""
    try:
        serial = json.loads(data)["meta"]["_last-serial"]
    except (ValueError, KeyError, TypeError):
        return None
    return serial if isinstance(serial, int) else None


TREE: Final = web.AppKey[Tree]("tree")


def _not_found(what: str) -> web.Response:
    return web.Response(status=404, text=f"Not found: {what}\n{PARTIAL_NOTE}\n")


def _redirect(request: web.Request, path: str) -> web.HTTPMovedPermanently:
    query = f"?{request.query_string}" if request.query_string else ""
    return web.HTTPMovedPermanently(location=path + query)


def _canonical(name: str) -> str | None:
    try:
        return normalize(name)
    except UnsafePath:
        return None


async def _send_page(request: web.Request, rel_dir: PurePosixPath, what: str) -> web.StreamResponse:
    # PEP 691 lets a server answer a client that accepts none of the formats with a default
    # instead of 406; PyPI sends text/html, and so do we (and examples/nginx.conf).
    media_type = negotiate(request.headers.get("Accept")) or TEXT_HTML
    headers = {"Content-Type": media_type, "Vary": "Accept", "Cache-Control": PAGE_CACHE}
    page = rel_dir / PAGE_FILES[media_type]
    response = await request.app[TREE].respond(request, page, headers, rel_dir)
    return _not_found(what) if response is None else response


async def _simple_no_slash(request: web.Request) -> web.StreamResponse:
    raise _redirect(request, "/simple/")


async def _root_index(request: web.Request) -> web.StreamResponse:
    return await _send_page(request, SIMPLE.relative_to(WEB), "the project list /simple/")


async def _project_page(request: web.Request) -> web.StreamResponse:
    raw = request.match_info["name"]
    name = _canonical(raw)
    if name is None:
        return _not_found(f"{raw!r} is not a valid project name")
    # PEP 503: project URLs end in "/" and use the normalised name; PyPI redirects to that form.
    if name != raw or not request.path.endswith("/"):
        raise _redirect(request, f"/simple/{name}/")
    return await _send_page(request, SIMPLE.relative_to(WEB) / name, f"project {name!r}")


async def _json_api(request: web.Request) -> web.StreamResponse:
    raw = request.match_info["name"]
    name = _canonical(raw)
    if name is None:
        return _not_found(f"{raw!r} is not a valid project name")
    legacy = request.path.startswith("/pypi/")
    if name != raw:
        raise _redirect(request, f"/pypi/{name}/json" if legacy else f"/json/{name}")
    rel = (PYPI_DIR / name / "json") if legacy else (JSON_DIR / name)
    headers = {"Content-Type": "application/json", "Cache-Control": PAGE_CACHE}
    project = SIMPLE.relative_to(WEB) / name
    response = await request.app[TREE].respond(request, rel.relative_to(WEB), headers, project)
    return _not_found(f"JSON API document for project {name!r}") if response is None else response


async def _package_file(request: web.Request) -> web.StreamResponse:
    tail = request.match_info["path"]
    try:
        parts = [check_segment(part) for part in tail.split("/")]
    except UnsafePath:
        return _not_found(f"{tail!r} is not a file path in this mirror")
    rel = PACKAGES.relative_to(WEB).joinpath(*parts)
    # PEP 658 core metadata is a UTF-8 text file; everything else goes out as opaque bytes, so
    # no client un-gzips a .tar.gz on the way.
    content_type = METADATA_TYPE if parts[-1].endswith(".metadata") else "application/octet-stream"
    headers = {"Content-Type": content_type, "Cache-Control": FILE_CACHE}
    response = await request.app[TREE].respond(request, rel, headers)
    return _not_found(f"file {parts[-1]!r} (/{rel})") if response is None else response


async def _anything_else(request: web.Request) -> web.StreamResponse:
    return _not_found(f"{request.path!r} is not part of the simple, JSON or files API")


@web.middleware
async def _read_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        return web.Response(
            status=405, text="This mirror is read-only.\n", headers={"Allow": "GET, HEAD"}
        )
    return await handler(request)


def make_app(source: Path | Tree) -> web.Application:
    """The server for a tree: a mirror directory's ``web/`` folder, or a `Tree`."""
    app = web.Application(middlewares=[_read_only])
    app[TREE] = LocalTree(source) if isinstance(source, Path) else source
    route = app.router.add_get
    route("/simple", _simple_no_slash)
    route("/simple/", _root_index)
    route("/simple/{name}", _project_page)
    route("/simple/{name}/", _project_page)
    route("/packages/{path:.+}", _package_file)
    route("/pypi/{name}/json", _json_api)
    route("/json/{name}", _json_api)
    route("/{tail:.*}", _anything_else)
    return app


def parse_bind(bind: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8080`` for IPv6, a bare ``8080`` for loopback) -> (host, port)."""
    host, _, port = bind.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError("--bind", None, f"expected HOST:PORT, got {bind!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def start(
    source: Path | Tree, host: str, port: int, *, log_requests: bool = False
) -> web.AppRunner:
    """Start serving in the background; ``runner.addresses`` tells the port, cleanup() stops."""
    runner = web.AppRunner(
        await asyncio.to_thread(make_app, source),  # resolving a web root touches the disk
        access_log=access_log if log_requests else None,
        access_log_format='%a "%r" %s %b %Tfs',
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as e:
        await runner.cleanup()
        raise ConfigError("--bind", None, f"cannot listen on {host}:{port}: {e.strerror}") from e
    for address in runner.addresses:
        log.info("serving %s on http://%s:%s/simple/", source, address[0], address[1])
    return runner


async def serve(source: Path | Tree, host: str, port: int, *, log_requests: bool = False) -> None:
    """Serve a tree until cancelled."""
    runner = await start(source, host, port, log_requests=log_requests)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run_serve(directory: Path, bind: str, *, log_requests: bool = False) -> None:
    """Serve the mirror ``directory`` (holding web/) on ``bind`` until Ctrl-C.

    With ``log_requests``, one line per request goes to the ``bandersnatch_clone.serve.access``
    logger at INFO. A tree in an object store: `serve_store.run_serve_store`.
    """
    host, port = parse_bind(bind)
    web_root = directory / WEB
    if not (web_root / SIMPLE.relative_to(WEB)).is_dir():
        raise ConfigError(str(directory), None, "no web/simple/ here: not a synced mirror")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(web_root, host, port, log_requests=log_requests))
