"""A fake PyPI for tests and benchmarks: an aiohttp app over a `FakeIndex`, in its own thread.

Serves what a mirror reads from PyPI: ``/simple/`` and ``/simple/<name>/`` (PEP 691
negotiation), ``/pypi/<name>/json``, XML-RPC at ``POST /pypi``, files at
``/packages/<aa>/<bb>/<rest of blake2b-256>/<filename>`` and their ``.metadata``. Tests steer it
through the index (mutations), the request log and fault hooks (`fail`, `stale`, `corrupt`,
`drop`, ``latency``), seeded random faults (`chaos`) and raw bodies for any path (`override`).
``python -m tests.fake_upstream --port 0 --projects N`` runs it standalone and prints its URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import signal
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from packaging.utils import NormalizedName, canonicalize_name

from tests.fake_index import (
    Digests,
    FakeFile,
    FakeIndex,
    FakeProject,
    FakeRelease,
    FileKind,
)
from tests.fake_render import (
    LISTING_RENDERERS,
    V1_JSON,
    detail_html,
    detail_json,
    legacy_json,
    negotiate,
    project_detail,
    xmlrpc_response,
)

__all__ = [
    "Chaos",
    "Digests",
    "FakeFile",
    "FakeIndex",
    "FakeProject",
    "FakeRelease",
    "FakeUpstream",
    "FileKind",
    "LoggedRequest",
    "RawResponse",
]

#: Request headers kept in the log (the ones a mirror's behaviour shows in).
LOGGED_HEADERS = ("Accept", "Accept-Encoding", "Cache-Control", "Range", "User-Agent")
# PyPI's caching: pages 10 minutes (JSON API 15), files for ever.
PAGE_CACHE = "max-age=600, public"
FILE_CACHE = "max-age=365000000, immutable, public"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    #: Status sent back (after faults).
    status: int


@dataclass(slots=True)
class _Rule:
    """A fault that applies to the next ``times`` requests whose path matches."""

    match: str | re.Pattern[str]
    times: int
    status: int = 500
    #: Extra response headers (e.g. ``Retry-After`` on a 429).
    headers: Mapping[str, str] = field(default_factory=dict)
    #: For `drop`: "reset" (connection dropped) or "truncate" (short body, then dropped).
    mode: str = ""

    def matches(self, path: str) -> bool:
        if isinstance(self.match, str):
            return path.startswith(self.match)
        return self.match.search(path) is not None


@dataclass(slots=True)
class _Stale:
    times: int
    serial: int | None
    bust: bool


#: The fault kinds `Chaos` draws from, in the order their rates are stacked.
CHAOS_KINDS = ("error", "too_many", "reset", "truncate", "wrong_bytes", "stale")


@dataclass(frozen=True, slots=True)
class Chaos:
    """Seeded random faults: each rate is the chance that one request gets that fault.

    The draw for a request depends only on ``(seed, path, how many times that path was asked
    before)``, never on arrival order, so a concurrent client meets the same faults every run.
    A kind that does not fit the request (``wrong_bytes`` off ``/packages/``, ``stale`` off
    project pages) leaves it alone.
    """

    seed: int
    #: 500, 502 or 503.
    error: float = 0.0
    #: 429 with ``Retry-After: <retry_after>``.
    too_many: float = 0.0
    #: The connection is reset (RST) before anything is sent.
    reset: float = 0.0
    #: ``Content-Length`` of the whole body, half of it sent, then the connection is closed.
    truncate: float = 0.0
    #: Files and ``.metadata``: the last byte flipped (a hash mismatch).
    wrong_bytes: float = 0.0
    #: Project pages and JSON API: the serial one below the real one (a lagging CDN).
    stale: float = 0.0
    retry_after: str = "7"

    def draw(self, path: str, nth: int) -> str | None:
        """The fault for the ``nth`` request (0-based) of ``path``, or None."""
        u = random.Random(f"{self.seed}:{path}:{nth}").random()
        for kind in CHAOS_KINDS:
            rate: float = getattr(self, kind)
            if u < rate:
                return kind
            u -= rate
        return None


@dataclass(frozen=True, slots=True)
class RawResponse:
    """What `FakeUpstream.override` sends for one path instead of the real answer.

    The body is ``prefix + filler * repeat + suffix``, streamed chunk by chunk, so a body of
    hundreds of MiB costs no memory. ``length`` is the Content-Length header: None sends the
    body chunked (no length), ``-1`` the true length, any other number that number.
    """

    prefix: bytes = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    headers: Mapping[str, str] = field(default_factory=dict)
    filler: bytes = b""
    repeat: int = 0
    suffix: bytes = b""
    length: int | None = -1

    @property
    def size(self) -> int:
        return len(self.prefix) + len(self.filler) * self.repeat + len(self.suffix)


class FakeUpstream:
    """The fake PyPI server: ``with FakeUpstream(FakeIndex.small()) as up: ... up.url``."""

    def __init__(
        self,
        index: FakeIndex | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        record: bool = True,
    ) -> None:
        self.index = index if index is not None else FakeIndex.small()
        self.host = host
        #: Seconds every request waits (an async sleep) before being answered.
        self.latency = latency
        #: Keep every request in `requests` (turn off for long benchmarks; `total` still counts).
        self.record = record
        self.total = 0
        self._port = port
        self._lock = threading.Lock()
        self._log: list[LoggedRequest] = []
        self._fail: list[_Rule] = []
        self._corrupt: list[_Rule] = []
        self._stale: dict[NormalizedName, _Stale] = {}
        self._drop: list[_Rule] = []
        self._chaos: Chaos | None = None
        self._chaos_seen: dict[str, int] = {}
        self._overrides: dict[str, RawResponse] = {}
        #: Faults `chaos` injected, as (kind, path), in the order they were sent.
        self.injected: list[tuple[str, str]] = []
        #: Body bytes of each overridden path the server managed to hand to the socket.
        self.sent: dict[str, int] = {}
        #: Paths being answered right now; the most at once of each kind `track` names.
        self._active: dict[str, int] = {}
        self._kind: Callable[[str], str | None] | None = None
        self._peaks: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._startup_error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self.host}:{self._port}"

    @property
    def simple_url(self) -> str:
        return f"{self.url}/simple/"

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("fake upstream already started")
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="fake-upstream", daemon=True
        )
        self._thread.start()
        if not ready.wait(30) or self._startup_error is not None:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError("fake upstream failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
        self._thread = self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, self.host, self._port).start())
            self._port = runner.addresses[0][1]
            self._loop = loop
        except BaseException as exc:  # reported to start() in the caller's thread
            self._startup_error = exc
            loop.run_until_complete(runner.cleanup())
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    # -- request log -----------------------------------------------------------------------

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def count(self, prefix: str = "/", *, method: str | None = None) -> int:
        """How many logged requests have a path starting with ``prefix`` (and that method)."""
        with self._lock:
            return sum(
                1
                for r in self._log
                if r.path.startswith(prefix) and (method is None or r.method == method)
            )

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    def track(self, kind: Callable[[str], str | None]) -> None:
        """From now on, count the most requests of each kind in flight at once (`peaks`);
        ``kind(path)`` names a request's kind, None leaves it out. A request is in flight from
        its arrival until its handler returns: with `latency`, how many the client had
        waiting at once."""
        with self._lock:
            self._kind = kind
            self._peaks = {}

    @property
    def peaks(self) -> dict[str, int]:
        with self._lock:
            return dict(self._peaks)

    def _enter(self, path: str) -> None:
        with self._lock:
            self._active[path] = self._active.get(path, 0) + 1
            if self._kind is None or (kind := self._kind(path)) is None:
                return
            now = sum(n for p, n in self._active.items() if self._kind(p) == kind)
            self._peaks[kind] = max(self._peaks.get(kind, 0), now)

    def _leave(self, path: str) -> None:
        with self._lock:
            self._active[path] -= 1
            if not self._active[path]:
                del self._active[path]

    # -- fault hooks -----------------------------------------------------------------------

    def fail(
        self,
        match: str | re.Pattern[str],
        status: int = 500,
        times: int = 1,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests whose path starts with ``match`` (a str) or
        matches it (a compiled regex) with ``status``, ``headers`` and no useful body."""
        with self._lock:
            self._fail.append(_Rule(match, times, status, dict(headers or {})))

    def drop(self, match: str | re.Pattern[str], mode: str = "reset", times: int = 1) -> None:
        """Break the next ``times`` matching responses: ``"reset"`` drops the connection before
        answering; ``"truncate"`` sends a Content-Length for the whole body, half the body,
        then closes the connection."""
        if mode not in ("reset", "truncate"):
            raise ValueError(f"unknown drop mode {mode!r}")
        with self._lock:
            self._drop.append(_Rule(match, times, mode=mode))

    def chaos(self, chaos: Chaos | None) -> None:
        """Start (or with None stop) seeded random faults on every request; see `Chaos`."""
        with self._lock:
            self._chaos = chaos
            self._chaos_seen.clear()

    def override(self, path: str, response: RawResponse | None) -> None:
        """Serve ``response`` for requests whose decoded path is exactly ``path`` (any query,
        any method), whatever the index says; None removes the override."""
        with self._lock:
            if response is None:
                self._overrides.pop(path, None)
            else:
                self._overrides[path] = response

    def corrupt(self, match: str | re.Pattern[str], times: int = 1) -> None:
        """Flip the last byte of the next ``times`` matching file bodies (hash mismatch)."""
        with self._lock:
            self._corrupt.append(_Rule(match, times))

    def stale(
        self, name: str, times: int = 1, *, serial: int | None = None, bust: bool = True
    ) -> None:
        """The next ``times`` responses for the project (simple page and JSON API) report
        ``serial`` (default: its real serial - 1) in header and body, as a lagging CDN would.
        With ``bust`` (the default), a request carrying any query string is served fresh."""
        with self._lock:
            self._stale[canonicalize_name(name)] = _Stale(times, serial, bust)

    def clear_faults(self) -> None:
        with self._lock:
            self._fail.clear()
            self._corrupt.clear()
            self._stale.clear()
            self._drop.clear()
            self._chaos = None

    def _take(self, rules: list[_Rule], path: str) -> _Rule | None:
        with self._lock:
            for rule in rules:
                if rule.matches(path):
                    rule.times -= 1
                    if rule.times <= 0:
                        rules.remove(rule)
                    return rule
        return None

    def _serial_for(self, request: web.Request, project: FakeProject) -> int:
        if request.get(_CHAOS_STALE):
            return max(project.serial - 1, 0)
        with self._lock:
            stale = self._stale.get(project.normalized)
            if stale is None or (stale.bust and request.query_string):
                return project.serial
            stale.times -= 1
            if stale.times <= 0:
                del self._stale[project.normalized]
            return stale.serial if stale.serial is not None else project.serial - 1

    def _draw(self, request: web.Request) -> str | None:
        """The chaos fault for this request (recorded in `injected`), or None."""
        path = request.path
        with self._lock:
            chaos = self._chaos
            if chaos is None:
                return None
            nth = self._chaos_seen.get(path, 0)
            self._chaos_seen[path] = nth + 1
            kind = chaos.draw(path, nth)
            is_file = path.startswith("/packages/")
            is_page = path.startswith(("/simple/", "/pypi/")) and path.count("/") >= 3
            if (kind == "wrong_bytes" and not is_file) or (kind == "stale" and not is_page):
                return None
            if kind is not None:
                self.injected.append((kind, path))
            return kind

    async def _send_raw(self, request: web.Request, raw: RawResponse) -> web.StreamResponse:
        response = web.StreamResponse(status=raw.status, headers=raw.headers)
        response.content_type = raw.content_type
        if raw.length is not None:
            response.content_length = raw.size if raw.length == -1 else raw.length
        sent = 0
        try:
            await response.prepare(request)
            for part in (raw.prefix, *(raw.filler for _ in range(raw.repeat)), raw.suffix):
                if part:
                    await response.write(part)
                    sent += len(part)
            if raw.length is not None and raw.length > raw.size:
                # A Content-Length above the body: close so the client sees it short.
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client hung up: what it took is counted
        finally:
            with self._lock:
                self.sent[request.path] = self.sent.get(request.path, 0) + sent
        return response

    # -- the app ---------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp app (also usable with pytest-aiohttp's ``aiohttp_server``)."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/simple/", self._listing)
        app.router.add_get("/simple", _add_slash)
        app.router.add_get("/simple/{name}/", self._project_page)
        app.router.add_get("/simple/{name}", _add_slash)
        app.router.add_get("/pypi/{name}/json", self._json_api)
        app.router.add_get("/pypi/{name}/json/", self._json_api)
        app.router.add_post("/pypi", self._xmlrpc)
        app.router.add_get("/packages/{tail:.+}", self._file)
        app.router.add_get("/integrity/{name}/{version}/{filename}/provenance", self._provenance)
        app.router.add_post("/_fake/touch", self._touch)
        app.router.add_get("/_fake/state", self._state)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        status = 500
        self._enter(request.path)
        try:
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            rule = self._take(self._fail, request.path)
            if rule is not None:
                status = rule.status
                return web.Response(
                    status=rule.status, text=f"fake failure {rule.status}\n", headers=rule.headers
                )
            with self._lock:
                raw = self._overrides.get(request.path)
            if raw is not None:
                status = raw.status
                return await self._send_raw(request, raw)
            fault = self._draw(request)
            drop = self._take(self._drop, request.path)
            mode = drop.mode if drop is not None else fault
            if fault == "error":
                status = random.Random(request.path).choice((500, 502, 503))
                return web.Response(status=status, text=f"chaos {status}\n")
            if fault == "too_many":
                status = 429
                chaos = self._chaos
                retry_after = chaos.retry_after if chaos is not None else "1"
                return web.Response(
                    status=429, text="chaos 429\n", headers={"Retry-After": retry_after}
                )
            if mode == "reset":
                status = 0
                _reset(request)
                return web.Response(status=204)
            if fault == "wrong_bytes":
                request[_CHAOS_CORRUPT] = True
            elif fault == "stale":
                request[_CHAOS_STALE] = True
            response: web.StreamResponse = await handler(request)
            status = response.status
            if mode == "truncate" and isinstance(response, web.Response) and response.body:
                return await _truncated(request, response)
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self._leave(request.path)
            headers = {h: request.headers[h] for h in LOGGED_HEADERS if h in request.headers}
            entry = LoggedRequest(
                request.method, request.path, request.query_string, headers, status
            )
            with self._lock:
                self.total += 1
                if self.record:
                    self._log.append(entry)

    async def _listing(self, request: web.Request) -> web.Response:
        ctype = negotiate(request.headers.get("Accept"))
        render = LISTING_RENDERERS[ctype]
        key = "json" if ctype == V1_JSON else "html"
        loop = asyncio.get_running_loop()
        # A 700,000-project listing takes a moment to render: keep the loop free meanwhile.
        body, serial = await loop.run_in_executor(None, self.index.rendered, key, render)
        return _page(body, ctype, serial)

    async def _lookup(self, request: web.Request, route: str) -> FakeProject:
        """The project named in the URL: 301 to the normalised URL, 404 if unknown."""
        raw = request.match_info["name"]
        normalized = canonicalize_name(raw)
        if raw != normalized:
            query = f"?{request.query_string}" if request.query_string else ""
            raise web.HTTPMovedPermanently(route.format(normalized) + query)
        project = self.index.get(normalized)
        if project is None:
            raise web.HTTPNotFound(text="404 Not Found\n")
        with self.index.lock:
            pending = [f for _, f in project.files() if not f.digested]
        if pending:
            # Generated projects build their files on first sight: off the loop.
            await asyncio.get_running_loop().run_in_executor(None, _digest_all, pending)
        return project

    async def _project_page(self, request: web.Request) -> web.Response:
        project = await self._lookup(request, "/simple/{}/")
        base = _base_url(request)
        with self.index.lock:
            serial = self._serial_for(request, project)
            detail = project_detail(project, base, serial)
        ctype = negotiate(request.headers.get("Accept"))
        body = detail_json(detail) if ctype == V1_JSON else detail_html(detail)
        return _page(body, ctype, serial)

    async def _json_api(self, request: web.Request) -> web.Response:
        project = await self._lookup(request, "/pypi/{}/json")
        base = _base_url(request)
        with self.index.lock:
            serial = self._serial_for(request, project)
            data = legacy_json(project, base, serial)
        if data is None:
            raise web.HTTPNotFound(text="404 Not Found\n")
        return web.Response(
            body=json.dumps(data).encode(),
            content_type="application/json",
            headers={
                "X-PyPI-Last-Serial": str(serial),
                "Cache-Control": "max-age=900, public",
                "Access-Control-Allow-Origin": "*",
            },
        )

    async def _xmlrpc(self, request: web.Request) -> web.Response:
        body = await request.read()
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(None, xmlrpc_response, self.index, body)
        return web.Response(body=answer, content_type="text/xml")

    async def _file(self, request: web.Request) -> web.Response:
        path = request.path
        is_metadata = path.endswith(".metadata")
        file_path = path.removesuffix(".metadata") if is_metadata else path
        found = self.index.find_file(file_path.rsplit("/", 1)[-1])
        if found is None or found[0].status == "quarantined":
            raise web.HTTPNotFound(text="404 Not Found\n")
        f = found[2]
        loop = asyncio.get_running_loop()
        if not f.digested:
            await loop.run_in_executor(None, f.digests)
        if f.path != file_path:
            raise web.HTTPNotFound(text="404 Not Found\n")
        data = f.metadata() if is_metadata else await loop.run_in_executor(None, f.content)
        if data is None:
            raise web.HTTPNotFound(text="404 Not Found\n")
        if data and (request.get(_CHAOS_CORRUPT) or self._take(self._corrupt, path) is not None):
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        headers = {"Cache-Control": FILE_CACHE, "Accept-Ranges": "bytes"}
        return _ranged(request, data, headers)

    async def _provenance(self, request: web.Request) -> web.Response:
        found = self.index.find_file(request.match_info["filename"])
        if found is None or not found[2].provenance:
            raise web.HTTPNotFound(text="404 Not Found\n")
        # A stand-in for PEP 740's provenance object: right shape, no real attestations.
        return web.json_response({"version": 1, "attestation_bundles": []})

    async def _touch(self, request: web.Request) -> web.Response:
        """Control API for a standalone server: ``{"names": [...]}``, or ``{"count": N}``
        (spread evenly over the listing; ``"offset": K`` starts K projects further on, so that
        successive calls change other projects)."""
        spec = await request.json()
        with self.index.lock:
            names: list[str] = list(spec.get("names", []))
            count = int(spec.get("count", 0))
            if count:
                listed = self.index.listed()
                step = max(len(listed) // count, 1)
                offset = int(spec.get("offset", 0)) % step
                names += [p.name for p in listed[offset::step][:count]]
            serial = self.index.touch(names)
        return web.json_response({"serial": serial, "touched": names})

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"serial": self.index.serial, "projects": len(self.index), "requests": self.total}
        )


_CHAOS_STALE = "fake_upstream.stale"
_CHAOS_CORRUPT = "fake_upstream.corrupt"


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP RST, as a crashed proxy or a flaky network does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _truncated(request: web.Request, response: web.Response) -> web.StreamResponse:
    """Send the headers of ``response`` with its full Content-Length, half its body, then close."""
    body = bytes(response.body) if isinstance(response.body, bytes | bytearray) else b""
    short = web.StreamResponse(status=response.status, headers=response.headers)
    short.content_length = len(body)
    try:
        await short.prepare(request)
        await short.write(body[: len(body) // 2])
    except (ConnectionError, RuntimeError):
        pass
    if request.transport is not None:
        request.transport.close()
    return short


async def _add_slash(request: web.Request) -> web.Response:
    query = f"?{request.query_string}" if request.query_string else ""
    raise web.HTTPMovedPermanently(f"{request.path}/{query}")


def _digest_all(files: list[FakeFile]) -> None:
    for f in files:
        f.digests()


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _page(body: bytes, content_type: str, serial: int) -> web.Response:
    response = web.Response(
        body=body,
        headers={
            "X-PyPI-Last-Serial": str(serial),
            "Vary": "Accept",
            "Cache-Control": PAGE_CACHE,
        },
    )
    # PEP 691: the Content-Type must be exactly the negotiated type (a charset would be too).
    response.content_type = content_type
    return response


def _ranged(request: web.Request, data: bytes, headers: dict[str, str]) -> web.Response:
    """200, or 206/416 for a single ``Range: bytes=a-b`` (uv reads wheels' tails this way)."""
    spec = request.headers.get("Range")
    match = _RANGE.match(spec.strip()) if spec else None
    if match is None or match.groups() == ("", ""):
        return web.Response(body=data, headers=headers, content_type="application/octet-stream")
    first, last = match.groups()
    size = len(data)
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        headers["Content-Range"] = f"bytes */{size}"
        return web.Response(status=416, headers=headers)
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return web.Response(
        status=206,
        body=data[start : end + 1],
        headers=headers,
        content_type="application/octet-stream",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_upstream", description="Run the fake PyPI upstream."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--projects", type=int, default=0, help="generated projects")
    parser.add_argument("--files-per-project", type=int, default=2)
    parser.add_argument("--file-size", type=int, default=0, help="padding bytes per file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="add the small realistic set too")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--blob-cache-mb", type=int, default=256)
    parser.add_argument("--log", action="store_true", help="keep a request log (memory grows)")
    args = parser.parse_args(argv)

    if args.projects:
        index = FakeIndex.generate(
            args.projects,
            files_per_project=args.files_per_project,
            file_size=args.file_size,
            seed=args.seed,
            blob_cache_bytes=args.blob_cache_mb << 20,
        )
    else:
        index = FakeIndex()
    if args.small or not args.projects:
        index.add_small_projects()

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    upstream = FakeUpstream(
        index, host=args.host, port=args.port, latency=args.latency, record=args.log
    )
    with upstream:
        print(upstream.url, flush=True)
        while not stop.wait(1.0):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
