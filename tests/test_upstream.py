"""The upstream client against real loopback servers: retries, freshness, limits, XML-RPC, files."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import xmlrpc.client
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from bandersnatch_clone import __version__
from bandersnatch_clone.errors import (
    BadUpstreamData,
    IntegrityError,
    ProjectNotFound,
    StaleUpstream,
    UpstreamUnavailable,
)
from bandersnatch_clone.parse import XmlRpcFault
from bandersnatch_clone.retry import RetryPolicy, parse_retry_after
from bandersnatch_clone.upstream import SIMPLE_JSON, Timeouts, Upstream, allowed_hosts

FILE = b"wheel bytes " * 1000
FILE_SHA = hashlib.sha256(FILE).hexdigest()
ATTEMPTS = 4


class Sleeps:
    """The injected sleep: records each delay, waits for nothing."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class MemorySink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.resets = 0
        self.committed = False

    async def write(self, chunk: bytes) -> None:
        self.data += chunk

    async def reset(self) -> None:
        self.data.clear()
        self.resets += 1

    async def commit(self) -> None:  # the caller's job; Upstream must never call it
        self.committed = True


Start = Callable[..., Awaitable[Upstream]]


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def start(aiohttp_server: AiohttpServer, session: aiohttp.ClientSession, sleeps: Sleeps) -> Start:
    """``await start(routes, **upstream_kwargs)``: serve the routes, return an Upstream on them."""

    async def start(routes: list[web.RouteDef], **kwargs: Any) -> Upstream:
        app = web.Application()
        app.add_routes(routes)
        server = await aiohttp_server(app)
        policy = RetryPolicy(attempts=ATTEMPTS, base_delay=1.0, jitter=False, sleep=sleeps)
        base = str(server.make_url("/")).rstrip("/")
        return Upstream(session, base, retry=policy, **kwargs)

    return start


def page(serial: int, files: list[dict[str, object]] | None = None, name: str = "demo") -> bytes:
    body = {"meta": {"api-version": "1.4", "_last-serial": serial}, "name": name, "files": files}
    return json.dumps({**body, "files": files or [], "versions": ["1.0"]}).encode()


def json_response(body: bytes, **kwargs: Any) -> web.Response:
    return web.Response(body=body, content_type=SIMPLE_JSON, **kwargs)


class RawServer:
    """A loopback HTTP server replying with scripted raw bytes, one reply per connection."""

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = replies
        self.connections = 0

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        reply = self.replies[min(self.connections, len(self.replies) - 1)]
        self.connections += 1
        writer.write(reply)
        await writer.drain()
        writer.close()


def raw_reply(body: bytes, length: int | None = None) -> bytes:
    length = len(body) if length is None else length
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


# -- retries -------------------------------------------------------------------------------------


async def test_5xx_is_retried_with_growing_delays(start: Start, sleeps: Sleeps) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return json_response(page(7)) if calls > 2 else web.Response(status=503)

    upstream = await start([web.get("/simple/demo/", handler)])
    detail = await upstream.project("Demo")
    assert (detail.serial, sleeps.delays) == (7, [1.0, 2.0])


async def test_429_retry_after_seconds_is_honoured(start: Start, sleeps: Sleeps) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return web.Response(status=429, headers={"Retry-After": "2"})
        return json_response(page(7))

    upstream = await start([web.get("/simple/demo/", handler)])
    await upstream.project("demo")
    assert sleeps.delays == [2.0]


async def test_persistent_5xx_gives_up_with_status(start: Start, sleeps: Sleeps) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=502)

    upstream = await start([web.get("/simple/demo/", handler)])
    with pytest.raises(UpstreamUnavailable) as info:
        await upstream.project("demo")
    assert (info.value.status, len(sleeps.delays)) == (502, ATTEMPTS - 1)


async def test_4xx_is_not_retried(start: Start, sleeps: Sleeps) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=403)

    upstream = await start([web.get("/simple/demo/", handler)])
    with pytest.raises(UpstreamUnavailable) as info:
        await upstream.project("demo")
    assert (info.value.status, sleeps.delays) == (403, [])


async def test_connection_refused_is_retried_then_unavailable(
    session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    async with RawServer([b""]) as base:
        pass  # closed again: nothing listens on that port now
    policy = RetryPolicy(attempts=3, jitter=False, sleep=sleeps)
    with pytest.raises(UpstreamUnavailable) as info:
        await Upstream(session, base, retry=policy).project("demo")
    assert (len(sleeps.delays), isinstance(info.value.__cause__, aiohttp.ClientError)) == (2, True)


async def test_timeout_is_retried_then_unavailable(start: Start, sleeps: Sleeps) -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return json_response(page(7))

    upstream = await start([web.get("/simple/demo/", handler)], timeouts=Timeouts(metadata=0.05))
    with pytest.raises(UpstreamUnavailable, match="TimeoutError"):
        await upstream.project("demo")
    assert len(sleeps.delays) == ATTEMPTS - 1


async def test_404_is_project_not_found(start: Start, sleeps: Sleeps) -> None:
    upstream = await start([])
    with pytest.raises(ProjectNotFound) as info:
        await upstream.project("Gone_Project")
    assert (info.value.project, sleeps.delays) == ("gone-project", [])


# -- freshness -----------------------------------------------------------------------------------


async def test_stale_page_is_refetched_past_the_cache(start: Start) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.query_string)
        return json_response(page(10 if "_cb" in request.query else 5))

    upstream = await start([web.get("/simple/demo/", handler)])
    detail = await upstream.project("demo", min_serial=10)
    assert (detail.serial, seen[0], seen[1].startswith("_cb=")) == (10, "", True)


async def test_persistent_stale_raises_stale_upstream(start: Start, sleeps: Sleeps) -> None:
    async def handler(request: web.Request) -> web.Response:
        return json_response(page(5))

    upstream = await start([web.get("/simple/demo/", handler)])
    with pytest.raises(StaleUpstream) as info:
        await upstream.project("demo", min_serial=9)
    assert (info.value.expected, info.value.got, len(sleeps.delays)) == (9, 5, ATTEMPTS - 1)


async def test_header_serial_used_when_meta_has_none(start: Start) -> None:
    body = json.dumps({"meta": {"api-version": "1.0"}, "name": "demo", "files": []}).encode()

    async def handler(request: web.Request) -> web.Response:
        return json_response(body, headers={"X-PyPI-Last-Serial": "42"})

    upstream = await start([web.get("/simple/demo/", handler)])
    assert (await upstream.project("demo", min_serial=42)).serial == 42


async def test_legacy_json_stale_then_fresh(start: Start) -> None:
    def doc(serial: int) -> bytes:
        return json.dumps(
            {"info": {"name": "Demo"}, "last_serial": serial, "releases": {}}
        ).encode()

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(body=doc(8 if "_cb" in request.query else 3))

    upstream = await start([web.get("/pypi/demo/json", handler)])
    legacy = await upstream.legacy_json("Demo", min_serial=8)
    assert (legacy.name, legacy.serial, legacy.raw) == ("demo", 8, doc(8))


async def test_page_for_another_project_is_refused(start: Start) -> None:
    async def handler(request: web.Request) -> web.Response:
        return json_response(page(5, name="other"))

    upstream = await start([web.get("/simple/demo/", handler)])
    with pytest.raises(BadUpstreamData, match="other"):
        await upstream.project("demo")


# -- the listing ---------------------------------------------------------------------------------


def listing_body(serial: int, rows: int) -> bytes:
    projects = [{"name": f"p{i}", "_last-serial": i + 1} for i in range(rows)]
    meta = {"api-version": "1.1", "_last-serial": serial}
    return json.dumps({"meta": meta, "projects": projects}).encode()


async def test_listing_returns_serial_and_rows(start: Start) -> None:
    async def handler(request: web.Request) -> web.Response:
        return json_response(listing_body(99, 3))

    upstream = await start([web.get("/simple/", handler)])
    serial, rows = await upstream.listing()
    assert (serial, [(r.name, r.serial) for r in rows]) == (99, [("p0", 1), ("p1", 2), ("p2", 3)])


@pytest.mark.parametrize(("known", "expect_rows"), [(99, False), (100, False), (98, True)])
async def test_listing_if_newer(start: Start, known: int, expect_rows: bool) -> None:
    async def handler(request: web.Request) -> web.Response:
        return json_response(listing_body(99, 50_000))

    upstream = await start([web.get("/simple/", handler)])
    result = await upstream.listing_if_newer(known)
    assert (result is not None) == expect_rows


async def test_listing_if_newer_stops_after_the_meta(start: Start) -> None:
    head = b'{"meta": {"_last-serial": 99, "api-version": "1.1"}, "projects": ['

    async def handler(request: web.Request) -> web.Response:
        return json_response(head + b"not json at all " * 100_000)

    upstream = await start([web.get("/simple/", handler)])
    assert await upstream.listing_if_newer(99) is None


async def test_listing_if_newer_without_a_peekable_serial(start: Start) -> None:
    body = b'{"projects": [{"name": "a", "_last-serial": 1}], "meta": {"_last-serial": 5}}'

    async def handler(request: web.Request) -> web.Response:
        return json_response(body)

    upstream = await start([web.get("/simple/", handler)])
    assert (await upstream.listing_if_newer(5), await upstream.listing_serial()) == (None, 5)


async def test_listing_serial_reads_only_the_start(start: Start) -> None:
    async def handler(request: web.Request) -> web.Response:
        return json_response(listing_body(1234, 100_000))

    upstream = await start([web.get("/simple/", handler)])
    assert await upstream.listing_serial() == 1234


async def test_listing_in_html_is_refused(start: Start) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="<html></html>", content_type="text/html")

    upstream = await start([web.get("/simple/", handler)])
    with pytest.raises(BadUpstreamData, match="does not speak PEP 691 JSON"):
        await upstream.listing()


# -- limits and hostile metadata -----------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
async def test_body_over_the_cap_is_refused(start: Start, chunked: bool) -> None:
    body = page(5, [{"filename": "x" * 5000, "url": "x", "hashes": {}}])

    async def handler(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return json_response(body)
        resp = web.StreamResponse(headers={"Content-Type": SIMPLE_JSON})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(body), 1000):
            await resp.write(body[i : i + 1000])
        await resp.write_eof()
        return resp

    upstream = await start([web.get("/simple/demo/", handler)], max_json_bytes=4096)
    with pytest.raises(BadUpstreamData, match="exceeds"):
        await upstream.project("demo")


async def test_file_url_on_a_foreign_host_is_refused_in_metadata(start: Start) -> None:
    evil = {"filename": "demo-1.0.tar.gz", "url": "https://evil.example/demo-1.0.tar.gz"}

    async def handler(request: web.Request) -> web.Response:
        return json_response(page(5, [{**evil, "hashes": {"sha256": FILE_SHA}}]))

    upstream = await start([web.get("/simple/demo/", handler)])
    with pytest.raises(BadUpstreamData, match=r"evil\.example"):
        await upstream.project("demo")


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/packages/demo-1.0.tar.gz",
        "file:///etc/passwd",
        "/relative/demo-1.0.tar.gz",
    ],
)
async def test_download_from_a_foreign_url_is_refused(start: Start, url: str) -> None:
    upstream = await start([])
    sink = MemorySink()
    with pytest.raises(BadUpstreamData):
        await upstream.download(url, FILE_SHA, sink)


async def test_redirect_to_a_foreign_host_is_refused(start: Start) -> None:
    async def handler(request: web.Request) -> web.Response:
        raise web.HTTPFound("https://evil.example/simple/demo/")

    upstream = await start([web.get("/simple/demo/", handler)])
    with pytest.raises(BadUpstreamData, match=r"evil\.example"):
        await upstream.project("demo")


async def test_redirect_on_the_same_host_is_followed(start: Start) -> None:
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/elsewhere/demo/")

    async def handler(request: web.Request) -> web.Response:
        files: list[dict[str, object]] = [
            {"filename": "demo-1.0.tar.gz", "url": "../../f/demo-1.0.tar.gz", "hashes": {}}
        ]
        return json_response(page(5, files))

    upstream = await start([web.get("/simple/demo/", moved), web.get("/elsewhere/demo/", handler)])
    detail = await upstream.project("demo")
    assert detail.files[0].url.endswith("/f/demo-1.0.tar.gz")


def test_pypi_implies_its_files_host() -> None:
    hosts = allowed_hosts("https://pypi.org", None, ["Mirror.Example"])
    assert hosts == {
        "pypi.org:443",
        "files.pythonhosted.org:443",
        "mirror.example:443",
        "mirror.example:80",
    }


# -- files ---------------------------------------------------------------------------------------


async def test_download_streams_and_verifies(start: Start) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=FILE)

    upstream = await start([web.get("/packages/aa/demo-1.0.tar.gz", handler)])
    sink = MemorySink()
    written = await upstream.download(
        upstream.base_url + "/packages/aa/demo-1.0.tar.gz", FILE_SHA, sink
    )
    assert (written, bytes(sink.data), sink.resets) == (len(FILE), FILE, 0)


async def test_truncated_body_is_retried_from_scratch(
    session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    replies = [raw_reply(FILE[:500], length=len(FILE)), raw_reply(FILE)]
    async with RawServer(replies) as base:
        policy = RetryPolicy(attempts=3, jitter=False, sleep=sleeps)
        sink = MemorySink()
        written = await Upstream(session, base, retry=policy).download(
            f"{base}/packages/demo-1.0.tar.gz", FILE_SHA, sink
        )
    assert (written, bytes(sink.data), sink.resets, len(sleeps.delays)) == (len(FILE), FILE, 1, 1)


async def test_disconnect_without_reply_is_retried(
    session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    async with RawServer([b"", raw_reply(FILE)]) as base:
        policy = RetryPolicy(attempts=3, jitter=False, sleep=sleeps)
        body = await Upstream(session, base, retry=policy).fetch_bytes(
            f"{base}/f.metadata", FILE_SHA
        )
    assert body == FILE


async def test_compressed_metadata_is_decoded(start: Start) -> None:
    async def handler(request: web.Request) -> web.Response:
        resp = json_response(page(7))
        resp.enable_compression(web.ContentCoding.gzip)
        return resp

    upstream = await start([web.get("/simple/demo/", handler)])
    assert (await upstream.project("demo")).serial == 7


async def test_file_bytes_are_taken_as_sent_never_decoded(start: Start) -> None:
    packed = gzip.compress(FILE)
    asked: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        asked.append(request.headers.get("Accept-Encoding", ""))
        return web.Response(body=packed, headers={"Content-Encoding": "gzip"})

    upstream = await start([web.get("/packages/demo-1.0.tar.gz", handler)])
    sink = MemorySink()
    sha = hashlib.sha256(packed).hexdigest()
    await upstream.download(upstream.base_url + "/packages/demo-1.0.tar.gz", sha, sink)
    assert (bytes(sink.data), asked) == (packed, ["identity"])


async def test_wrong_bytes_raise_integrity_error_uncommitted(start: Start, sleeps: Sleeps) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=FILE + b"tampered")

    upstream = await start([web.get("/packages/demo-1.0.tar.gz", handler)])
    sink = MemorySink()
    with pytest.raises(IntegrityError) as info:
        await upstream.download(upstream.base_url + "/packages/demo-1.0.tar.gz", FILE_SHA, sink)
    assert (info.value.expected, sink.committed, sleeps.delays) == (FILE_SHA, False, [])


async def test_missing_file_is_unavailable_not_retried(start: Start, sleeps: Sleeps) -> None:
    upstream = await start([])
    with pytest.raises(UpstreamUnavailable) as info:
        await upstream.download(upstream.base_url + "/packages/x.whl", FILE_SHA, MemorySink())
    assert (info.value.status, sleeps.delays) == (404, [])


async def test_download_url_replaces_scheme_and_host(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        return web.Response(body=FILE)

    app = web.Application()
    app.add_routes([web.get("/packages/{tail:.*}", handler)])
    files = await aiohttp_server(app)
    download = str(files.make_url("/")).rstrip("/")
    upstream = Upstream(session, "https://index.example", download_url=download)
    sink = MemorySink()
    await upstream.download(
        "https://index.example/packages/a/b/demo-1.0%2Bx.tar.gz", FILE_SHA, sink
    )
    assert seen == ["/packages/a/b/demo-1.0%2Bx.tar.gz"]


async def test_fetch_bytes_is_capped(start: Start) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=FILE)

    upstream = await start([web.get("/f.metadata", handler)], max_json_bytes=1000)
    with pytest.raises(BadUpstreamData, match="exceeds"):
        await upstream.fetch_bytes(upstream.base_url + "/f.metadata", FILE_SHA)


# -- XML-RPC -------------------------------------------------------------------------------------


class XmlRpcServer:
    """The three mirroring methods of PyPI's XML-RPC API over a changelog of `events` rows."""

    def __init__(self, events: int, page_size: int) -> None:
        self.log = [("p", "1.0", 1_700_000_000 + i, "new release", i + 1) for i in range(events)]
        self.page_size = page_size
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.faults: list[xmlrpc.client.Fault] = []

    async def handle(self, request: web.Request) -> web.Response:
        params, method = xmlrpc.client.loads(await request.read())
        self.calls.append((str(method), params))
        if self.faults:
            body = xmlrpc.client.dumps(self.faults.pop(0), methodresponse=True)
            return web.Response(text=body, content_type="text/xml")
        result: object
        if method == "changelog_last_serial":
            result = len(self.log)
        elif method == "changelog_since_serial":
            since = params[0]
            assert isinstance(since, int)
            result = [row for row in self.log if row[4] > since][: self.page_size]
        else:
            result = {"Demo": 3, "other": 5}
        body = xmlrpc.client.dumps((result,), methodresponse=True, allow_none=True)
        return web.Response(text=body, content_type="text/xml")


async def test_changelog_follows_full_pages(start: Start) -> None:
    rpc = XmlRpcServer(events=7, page_size=3)
    upstream = await start([web.post("/pypi", rpc.handle)], changelog_page=3)
    events = await upstream.changelog_since_serial(0)
    assert ([e.serial for e in events], [c[1] for c in rpc.calls]) == (
        [1, 2, 3, 4, 5, 6, 7],
        [(0,), (3,), (6,)],
    )


async def test_changelog_last_serial_and_packages(start: Start) -> None:
    rpc = XmlRpcServer(events=4, page_size=3)
    upstream = await start([web.post("/pypi", rpc.handle)])
    last = await upstream.changelog_last_serial()
    packages = await upstream.list_packages_with_serial()
    assert (last, [(p.name, p.serial) for p in packages]) == (4, [("Demo", 3), ("other", 5)])


async def test_xmlrpc_fault_raises_with_its_text(start: Start) -> None:
    rpc = XmlRpcServer(events=0, page_size=3)
    rpc.faults.append(xmlrpc.client.Fault(-32601, "method not found"))
    upstream = await start([web.post("/pypi", rpc.handle)])
    with pytest.raises(XmlRpcFault, match="method not found"):
        await upstream.changelog_last_serial()


async def test_xmlrpc_rate_limit_fault_is_retried(start: Start, sleeps: Sleeps) -> None:
    rpc = XmlRpcServer(events=2, page_size=3)
    text = "HTTPTooManyRequests: too many requests by the client. Limit may reset in 7 seconds."
    rpc.faults.append(xmlrpc.client.Fault(-32500, text))
    upstream = await start([web.post("/pypi", rpc.handle)])
    assert (await upstream.changelog_last_serial(), sleeps.delays) == (2, [7.0])


# -- identity ------------------------------------------------------------------------------------


async def test_user_agent_is_sent(start: Start) -> None:
    agents: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        agents.append(request.headers["User-Agent"])
        return json_response(page(5))

    upstream = await start([web.get("/simple/demo/", handler)], user_agent_extra="ci/1")
    await upstream.project("demo")
    assert agents == [
        f"bandersnatch-clone/{__version__} (+https://pypi.org/project/bandersnatch-clone/) "
        f"aiohttp/{aiohttp.__version__} ci/1"
    ]


# -- the retry policy on its own -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("2", 2.0),
        (" 120 ", 120.0),
        (formatdate(1_000_030, usegmt=True), 30.0),
        (formatdate(999_000, usegmt=True), 0.0),
        ("soon", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=1_000_000.0) == expected


@pytest.mark.parametrize(
    ("failures", "retry_after", "expected"),
    [(1, None, 0.5), (2, None, 1.0), (3, None, 2.0), (9, None, 10.0), (1, 2.0, 2.0), (1, 999, 60)],
)
def test_policy_delay(failures: int, retry_after: float | None, expected: float) -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=10.0, max_retry_after=60.0, jitter=False)
    assert policy.delay(failures, retry_after) == expected


def test_full_jitter_scales_the_backoff() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=100.0, random=lambda: 0.25)
    assert policy.backoff(3) == 1.0
