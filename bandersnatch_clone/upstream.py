"""The HTTP client for one upstream index: listing, project metadata, XML-RPC and file streams."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import sys
import xmlrpc.client
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

import aiohttp
from packaging.utils import NormalizedName
from yarl import URL

from bandersnatch_clone import __version__
from bandersnatch_clone.errors import (
    BadUpstreamData,
    IntegrityError,
    ProjectNotFound,
    UpstreamError,
)
from bandersnatch_clone.model import ListedProject, ProjectDetail
from bandersnatch_clone.parse import (
    ChangelogEvent,
    LegacyProject,
    XmlRpcFault,
    normalized_name,
    parse_changelog,
    parse_legacy_json,
    parse_listing_json,
    parse_packages_with_serial,
    parse_project_json,
    parse_serial_result,
    parse_xmlrpc,
    peek_listing_serial,
)
from bandersnatch_clone.retry import (
    Retry,
    StaleRetry,
    check_complete,
    check_status,
    retrying,
    translated,
)
from bandersnatch_clone.retry import (
    RetryPolicy as RetryPolicy,  # re-exported: callers build the policy they pass in
)

PROJECT_URL = "https://pypi.org/project/bandersnatch-clone/"
#: PEP 691 content type of the JSON serialisation, API major version 1.
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
MiB = 1024 * 1024
#: PyPI's ``changelog_since_serial`` returns at most this many rows a call.
CHANGELOG_PAGE = 50_000

# Indexes whose files live on another host than their pages.
_FILE_HOSTS = {"pypi.org": "files.pythonhosted.org", "test.pypi.org": "test-files.pythonhosted.org"}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_SHA256 = re.compile(r"[0-9a-f]{64}")
# PyPI answers XML-RPC rate limiting with HTTP 200 and a fault, not a 429:
# "HTTPTooManyRequests: ... too many requests by the client. Limit may reset in N seconds."
_RATE_LIMIT_RESET = re.compile(r"reset in (\d+) seconds")


class Sink(Protocol):
    """Receives a file's bytes from `Upstream.download`; the caller commits or aborts it after.

    On an error the sink may hold a partial body: the caller must abort it.
    """

    async def write(self, chunk: bytes) -> None: ...

    async def reset(self) -> None:
        """Forget everything written so far: the download starts again from the first byte."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. A metadata request must finish in `metadata`; a download may take as long as
    it needs but never stall for more than `idle` between two chunks."""

    connect: float = 30.0
    metadata: float = 300.0
    idle: float = 120.0


class _Serialled(Protocol):
    @property
    def serial(self) -> int: ...


S = TypeVar("S", bound=_Serialled)


class _MemorySink:
    def __init__(self, cap: int, url: str) -> None:
        self.data = bytearray()
        self._cap = cap
        self._url = url

    async def write(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self._cap:
            raise BadUpstreamData(self._url, f"body exceeds the {self._cap}-byte cap")

    async def reset(self) -> None:
        self.data.clear()


def allowed_hosts(
    base_url: str, download_url: str | None = None, extra: Iterable[str] = ()
) -> frozenset[str]:
    """Origins (``host:port``) the mirror may fetch from: the upstream's, the download host's,
    `extra` (``host`` means its https and http ports), and the files host of an index known
    to keep its files elsewhere (pypi.org: files.pythonhosted.org). The port counts: another
    port on the upstream's host is another service, not the upstream."""
    origins: set[str] = set()
    for item in extra:
        item = item.lower()
        origins.update([item] if ":" in item else [f"{item}:443", f"{item}:80"])
    for url in (base_url, download_url):
        parsed = URL(url) if url else None
        if parsed is not None and parsed.host:
            host = parsed.host.lower()
            origins.add(f"{host}:{parsed.port}")
            if host in _FILE_HOSTS:
                origins.add(f"{_FILE_HOSTS[host]}:443")
    return frozenset(origins)


def _header_serial(resp: aiohttp.ClientResponse) -> int | None:
    value = resp.headers.get("X-PyPI-Last-Serial", "")
    return int(value) if value.isascii() and value.isdigit() else None


@dataclass(frozen=True, slots=True)
class ListingDocument:
    """The root listing as received: its global serial and its body, parsed on demand."""

    serial: int
    body: bytes
    url: str
    header_serial: int | None

    async def rows(self) -> tuple[int, list[ListedProject]]:
        """Every row, parsed and checked (off the event loop: most of a second at PyPI's size)."""
        return await asyncio.to_thread(parse_listing_json, self.body, self.url, self.header_serial)


class Upstream:
    """One upstream index, reached through one injected `aiohttp.ClientSession`.

    The session must not set ``raise_for_status``: statuses are handled here. Every error raised
    is a `MirrorError`; nothing aiohttp-specific escapes.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        download_url: str | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        max_json_bytes: int = 64 * MiB,
        max_listing_bytes: int = 512 * MiB,
        extra_hosts: Iterable[str] = (),
        user_agent_extra: str | None = None,
        changelog_page: int = CHANGELOG_PAGE,
        chunk_size: int = 256 * 1024,
        peek_bytes: int = 4096,
    ) -> None:
        self._session = session
        self._base = URL(base_url.rstrip("/"))
        self._download = URL(download_url.rstrip("/")) if download_url else None
        for url in (self._base, self._download):
            if url is not None and (url.scheme not in ("http", "https") or not url.host):
                raise ValueError(f"not an http(s) URL: {url}")
        # Plain http is refused for files unless one of the configured URLs uses it.
        self._https_only = all(u.scheme == "https" for u in (self._base, self._download) if u)
        self.allowed_hosts = allowed_hosts(base_url, download_url, extra_hosts)
        self.user_agent = (
            f"bandersnatch-clone/{__version__} (+{PROJECT_URL}) aiohttp/{aiohttp.__version__}"
            + (f" {user_agent_extra}" if user_agent_extra else "")
        )
        self._retry = retry or RetryPolicy()
        t = timeouts or Timeouts()
        self._meta_timeout = aiohttp.ClientTimeout(total=t.metadata, sock_connect=t.connect)
        self._file_timeout = aiohttp.ClientTimeout(sock_connect=t.connect, sock_read=t.idle)
        self._max_json = max_json_bytes
        self._max_listing = max_listing_bytes
        self._changelog_page = changelog_page
        self._chunk = chunk_size
        self._peek = peek_bytes
        self._rpc = f"{self._base}/pypi"

    @property
    def base_url(self) -> str:
        """The upstream's base URL, without a trailing slash."""
        return str(self._base)

    # -- the listing ---------------------------------------------------------------------------

    async def listing(self) -> tuple[int, list[ListedProject]]:
        """``GET /simple/`` as PEP 691 JSON: (global serial, every project with its serial)."""
        document = await self.listing_document(stop_at=None)
        assert document is not None  # only a stop_at gives None
        return await document.rows()

    async def listing_if_newer(self, serial: int) -> tuple[int, list[ListedProject]] | None:
        """The listing, or None when its serial is not above `serial`.

        One request either way: when nothing changed the body is dropped after its first bytes.
        """
        document = await self.listing_document(stop_at=serial)
        if document is None:
            return None
        got, rows = await document.rows()
        return None if got <= serial else (got, rows)

    async def listing_serial(self) -> int:
        """The global serial alone, from the first bytes of the listing (or its header)."""
        document = await self.listing_document(stop_at=sys.maxsize, peek=True)
        assert document is not None
        return document.serial

    async def listing_document(
        self, stop_at: int | None, *, peek: bool = False
    ) -> ListingDocument | None:
        """The listing's body, unparsed; None when its serial is known (from its first bytes
        or its header) not to be above `stop_at`. ``peek``: never read past those bytes."""
        url = URL(f"{self._base}/simple/")

        async def attempt() -> ListingDocument | None:
            async with self._request("GET", url, self._meta_timeout, accept=SIMPLE_JSON) as resp:
                header = _header_serial(resp)
                body = bytearray()
                await self._read(resp, body, self._max_listing, url, stop_after=self._peek)
                serial = peek_listing_serial(bytes(body))
                serial = header if serial is None else serial
                if stop_at is not None and serial is not None and serial <= stop_at:
                    return ListingDocument(serial, b"", str(resp.url), header) if peek else None
                await self._read(resp, body, self._max_listing, url)
                page = str(resp.url)
            if serial is None:
                # No serial up front: the whole document says (and is checked) now.
                parsed, _ = await asyncio.to_thread(parse_listing_json, bytes(body), page, header)
                if stop_at is not None and parsed <= stop_at:
                    return ListingDocument(parsed, b"", page, header) if peek else None
                return ListingDocument(parsed, bytes(body), page, header)
            return ListingDocument(serial, bytes(body), page, header)

        return await retrying(self._retry, str(url), attempt)

    # -- per-project metadata ------------------------------------------------------------------

    async def project(self, name: str, min_serial: int | None = None) -> ProjectDetail:
        """``GET /simple/<name>/`` as PEP 691 JSON, never older than `min_serial`.

        404 raises `ProjectNotFound`; a serial below `min_serial` is retried past the CDN cache
        and raises `StaleUpstream` when it stays stale. File URLs on foreign hosts are refused.
        """
        normalized = normalized_name(name, self.base_url)
        url = URL(f"{self._base}/simple/{normalized}/")
        detail = await self._fresh(url, SIMPLE_JSON, min_serial, normalized, parse_project_json)
        if detail.name != normalized:
            raise BadUpstreamData(str(url), f"page is for {detail.name!r}, not {normalized!r}")
        for file in detail.files:
            self.file_url(file.url)
        return detail

    async def legacy_json(self, name: str, min_serial: int | None = None) -> LegacyProject:
        """PyPI's ``GET /pypi/<name>/json``, with the same not-found and freshness rules."""
        normalized = normalized_name(name, self.base_url)
        url = URL(f"{self._base}/pypi/{normalized}/json")
        return await self._fresh(url, "application/json", min_serial, normalized, parse_legacy_json)

    async def _fresh(
        self,
        url: URL,
        accept: str,
        min_serial: int | None,
        project: NormalizedName,
        parse: Callable[[bytes, str, int | None], S],
    ) -> S:
        bust = False

        async def attempt() -> S:
            nonlocal bust
            # A random query is a new cache key: the CDN has to ask the origin.
            target = url.update_query(_cb=secrets.token_hex(8)) if bust else url
            not_found = ProjectNotFound(str(url), project)
            async with self._request(
                "GET", target, self._meta_timeout, accept=accept, not_found=not_found
            ) as resp:
                header = _header_serial(resp)
                body = bytearray()
                await self._read(resp, body, self._max_json, url)
                page = str(resp.url.with_query(None))
            result = parse(bytes(body), page, header)
            if min_serial is not None and result.serial < min_serial:
                bust = True
                raise StaleRetry(min_serial, result.serial)
            return result

        return await retrying(self._retry, str(url), attempt)

    # -- XML-RPC -------------------------------------------------------------------------------

    async def changelog_last_serial(self) -> int:
        return parse_serial_result(await self._xmlrpc("changelog_last_serial"), self._rpc)

    async def changelog_since_serial(self, serial: int) -> list[ChangelogEvent]:
        """Every event after `serial`, following PyPI's 50,000-row pages to the end."""
        events: list[ChangelogEvent] = []
        while True:
            result = await self._xmlrpc("changelog_since_serial", serial)
            page = parse_changelog(result, self._rpc)
            events.extend(page)
            if len(page) < self._changelog_page:
                return events
            last = max(event.serial for event in page)
            if last <= serial:
                raise BadUpstreamData(self._rpc, f"changelog does not advance past {serial}")
            serial = last

    async def list_packages_with_serial(self) -> list[ListedProject]:
        result = await self._xmlrpc("list_packages_with_serial")
        return parse_packages_with_serial(result, self._rpc)

    async def _xmlrpc(self, method: str, *params: int | str) -> object:
        url = URL(self._rpc)
        payload = xmlrpc.client.dumps(params, method).encode()

        async def attempt() -> object:
            async with self._request("POST", url, self._meta_timeout, data=payload) as resp:
                body = bytearray()
                await self._read(resp, body, self._max_listing, url)
            try:
                return await asyncio.to_thread(parse_xmlrpc, bytes(body), str(url))
            except XmlRpcFault as e:
                if "TooManyRequests" not in e.fault:
                    raise
                hint = _RATE_LIMIT_RESET.search(e.fault)
                raise Retry(e.problem, None, float(hint[1]) if hint else None) from e

        return await retrying(self._retry, str(url), attempt)

    # -- files ---------------------------------------------------------------------------------

    def file_url(self, url: str) -> str:
        """Where a file is fetched from: `url` checked against the allowed hosts, with its scheme
        and host replaced by ``download_url`` when one is set (the path is kept)."""
        return str(self._file_target(url))

    def _file_target(self, url: str) -> URL:
        try:
            target = URL(url, encoded=True)
        except ValueError as e:
            raise BadUpstreamData(url, f"invalid file URL: {e}") from e
        self._check_url(target, url)
        if self._download is None:
            return target
        query = f"?{target.raw_query_string}" if target.raw_query_string else ""
        return URL(f"{self._download}{target.raw_path}{query}", encoded=True)

    async def download(
        self, url: str, expected_sha256: str, sink: Sink, size: int | None = None
    ) -> int:
        """Stream a file into `sink`, checking its sha256 on the way; returns the bytes written.

        Retries start again from the first byte (after ``sink.reset()``). A digest mismatch
        raises `IntegrityError`; the caller then aborts the sink. Nothing is ever committed here.
        With `size` (what the page advertised), a body that grows past it is cut off at once
        rather than streamed to disk to its end.
        """
        return await self._stream(url, expected_sha256, sink, size)

    async def fetch_bytes(self, url: str, expected_sha256: str | None) -> bytes:
        """A small file (PEP 658 ``.metadata``) in memory, at most ``max_json_bytes``, verified
        against `expected_sha256`. None only where the upstream offered the file without a hash
        (PEP 658 allows ``true``): then it is taken as served, as installers do."""
        sink = _MemorySink(self._max_json, url)
        await self._stream(url, expected_sha256, sink)
        return bytes(sink.data)

    async def _stream(
        self, url: str, expected_sha256: str | None, sink: Sink, size: int | None = None
    ) -> int:
        target = self._file_target(url)
        expected = expected_sha256.lower() if expected_sha256 is not None else None
        if expected is not None and not _SHA256.fullmatch(expected):
            raise BadUpstreamData(url, f"expected sha256 {expected_sha256!r} is not 64 hex digits")
        started = False

        async def attempt() -> int:
            nonlocal started
            if started:
                await sink.reset()
            started = True
            digest = hashlib.sha256()
            written = 0
            async with self._request("GET", target, self._file_timeout, raw=True) as resp:
                async for chunk in resp.content.iter_chunked(self._chunk):
                    written += len(chunk)
                    if size is not None and written > size:
                        raise IntegrityError(
                            str(target), f"{size} bytes", f"more than {size} bytes"
                        )
                    digest.update(chunk)
                    await sink.write(chunk)
                check_complete(resp, written, decoded=False)
            if expected is not None and digest.hexdigest() != expected:
                raise IntegrityError(str(target), expected, digest.hexdigest())
            return written

        return await retrying(self._retry, str(target), attempt)

    # -- plumbing ------------------------------------------------------------------------------

    def _check_url(self, url: URL, original: str) -> None:
        # Upstream metadata is untrusted: it must not send us to any other host.
        if url.scheme not in ("http", "https") or not url.host:
            raise BadUpstreamData(original, "not an absolute http(s) URL")
        if f"{url.host.lower()}:{url.port}" not in self.allowed_hosts:
            raise BadUpstreamData(
                original, f"{url.host}:{url.port} is not one of this upstream's hosts"
            )
        if self._https_only and url.scheme != "https":
            raise BadUpstreamData(original, "plain http from an https upstream")

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        url: URL,
        limits: aiohttp.ClientTimeout,
        *,
        accept: str | None = None,
        data: bytes | None = None,
        not_found: UpstreamError | None = None,
        raw: bool = False,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        headers = {"User-Agent": self.user_agent}
        if accept:
            headers["Accept"] = accept
        if data is not None:
            headers["Content-Type"] = "text/xml"
        if raw:
            # Files are taken as they come over the wire: a .tar.gz served with
            # Content-Encoding: gzip must not be unpacked before hashing.
            headers["Accept-Encoding"] = "identity"
        with translated(str(url)):
            # Redirects are followed here, not by aiohttp, so that every hop passes the host check.
            for _ in range(_MAX_REDIRECTS + 1):
                self._check_url(url, str(url))
                resp = await self._session.request(
                    method,
                    url,
                    headers=headers,
                    data=data,
                    timeout=limits,
                    allow_redirects=False,
                    auto_decompress=not raw,
                )
                location = resp.headers.get("Location")
                if resp.status not in _REDIRECTS or method != "GET" or not location:
                    break
                resp.release()
                try:
                    url = url.join(URL(location))
                except ValueError as e:
                    raise BadUpstreamData(str(url), f"bad redirect to {location!r}") from e
            else:
                raise BadUpstreamData(str(url), f"more than {_MAX_REDIRECTS} redirects")
            try:
                check_status(resp, str(url), self._retry.clock(), not_found)
                if accept == SIMPLE_JSON and resp.content_type != SIMPLE_JSON:
                    raise BadUpstreamData(
                        str(url),
                        f"upstream does not speak PEP 691 JSON (Content-Type {resp.content_type})",
                    )
                yield resp
            finally:
                resp.release()

    async def _read(
        self,
        resp: aiohttp.ClientResponse,
        into: bytearray,
        cap: int,
        url: URL,
        stop_after: int | None = None,
    ) -> None:
        """Append the body to `into` (or only until it holds `stop_after` bytes), up to `cap`."""
        if resp.content_length is not None and resp.content_length > cap:
            raise BadUpstreamData(str(url), f"body of {resp.content_length} bytes exceeds {cap}")
        while chunk := await resp.content.read(self._chunk):
            into += chunk
            if len(into) > cap:
                raise BadUpstreamData(str(url), f"body exceeds the {cap}-byte cap")
            if stop_after is not None and len(into) >= stop_after:
                return
        check_complete(resp, len(into), decoded=True)
