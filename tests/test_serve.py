"""The aiohttp server: PEP 691 negotiation, routes, caching headers, path safety."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from bandersnatch_clone.errors import ConfigError
from bandersnatch_clone.layout import HTML_PAGE, V1_HTML_PAGE, V1_JSON_PAGE
from bandersnatch_clone.serve import (
    FILE_CACHE,
    PAGE_CACHE,
    _read_serial,
    make_app,
    negotiate,
    parse_bind,
    run_serve,
    start,
)
from tests.minitree import (
    ACCEPT_CASES,
    PIP_ACCEPT,
    SECRET,
    TEXT_HTML,
    TRAVERSALS,
    V1_HTML,
    V1_JSON,
    MiniTree,
    build_minitree,
    http_get,
    pip_download_args,
    pip_env,
)

Client = TestClient[web.Request, web.Application]
PAGE_FOR = {TEXT_HTML: HTML_PAGE, V1_HTML: V1_HTML_PAGE, V1_JSON: V1_JSON_PAGE}


@pytest.fixture
def tree(tmp_path: Path) -> MiniTree:
    return build_minitree(tmp_path / "mirror")


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, tree: MiniTree) -> Client:
    return await aiohttp_client(make_app(tree.web))


def _port(client: Client) -> int:
    port = client.server.port
    assert port is not None
    return port


# --- negotiate: a pure table --------------------------------------------------------------------


@pytest.mark.parametrize(("accept", "expected"), ACCEPT_CASES)
def test_negotiate(accept: str | None, expected: str | None) -> None:
    assert negotiate(accept) == expected


# --- pages --------------------------------------------------------------------------------------


@pytest.mark.parametrize("project", [None, "tiny-thing", "other"])
@pytest.mark.parametrize(("accept", "expected"), ACCEPT_CASES)
async def test_page_negotiation(
    client: Client, tree: MiniTree, project: str | None, accept: str | None, expected: str | None
) -> None:
    media_type = expected or TEXT_HTML  # nothing acceptable: text/html, like PyPI
    url = "/simple/" if project is None else f"/simple/{project}/"
    headers = {} if accept is None else {"Accept": accept}
    async with client.get(url, headers=headers) as resp:
        got = (resp.status, resp.headers["Content-Type"], await resp.read())
    assert got == (200, media_type, tree.page(project, PAGE_FOR[media_type]))


@pytest.mark.parametrize("url", ["/simple/", "/simple/tiny-thing/", "/simple/other/"])
async def test_page_cache_headers(client: Client, url: str) -> None:
    async with client.get(url, headers={"Accept": PIP_ACCEPT}) as resp:
        got = (resp.headers["Vary"], resp.headers["Cache-Control"], "ETag" in resp.headers)
    assert got == ("Accept", PAGE_CACHE, True)


@pytest.mark.parametrize(
    ("url", "serial"),
    [
        ("/simple/", "42"),
        ("/simple/tiny-thing/", "42"),
        ("/simple/other/", "17"),
        ("/pypi/other/json", "17"),
        ("/json/other", "17"),
    ],
)
async def test_last_serial_header(client: Client, url: str, serial: str) -> None:
    async with client.get(url) as resp:
        assert resp.headers["X-PyPI-Last-Serial"] == serial


async def test_last_serial_follows_a_rewritten_page(client: Client, tree: MiniTree) -> None:
    page = tree.web / "simple" / "other" / V1_JSON_PAGE
    page.write_text('{"meta": {"api-version": "1.1", "_last-serial": 99}, "name": "other"}')
    os.utime(page, ns=(1, 1))  # a different mtime for certain, whatever the clock's resolution
    async with client.get("/simple/other/") as resp:
        assert resp.headers["X-PyPI-Last-Serial"] == "99"


async def test_page_if_none_match_gives_304(client: Client) -> None:
    async with client.get("/simple/tiny-thing/", headers={"Accept": PIP_ACCEPT}) as resp:
        etag = resp.headers["ETag"]
    headers = {"Accept": PIP_ACCEPT, "If-None-Match": etag}
    async with client.get("/simple/tiny-thing/", headers=headers) as resp:
        got = (resp.status, resp.headers["Vary"], await resp.read())
    assert got == (304, "Accept", b"")


# --- redirects ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("/simple", "/simple/"),
        ("/simple/tiny-thing", "/simple/tiny-thing/"),
        ("/simple/Tiny_Thing/", "/simple/tiny-thing/"),
        ("/simple/Tiny_Thing", "/simple/tiny-thing/"),
        ("/simple/TINY..thing/", "/simple/tiny-thing/"),
        ("/simple/tiny_thing/?format=x", "/simple/tiny-thing/?format=x"),
        ("/simple/Not_Mirrored/", "/simple/not-mirrored/"),
        ("/pypi/Tiny.Thing/json", "/pypi/tiny-thing/json"),
        ("/json/TINY_THING", "/json/tiny-thing"),
    ],
)
async def test_redirects_to_normal_form(client: Client, url: str, location: str) -> None:
    async with client.get(url, allow_redirects=False) as resp:
        assert (resp.status, resp.headers["Location"]) == (301, location)


# --- 404 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "mentions"),
    [
        ("/simple/not-mirrored/", "'not-mirrored'"),
        ("/pypi/not-mirrored/json", "'not-mirrored'"),
        ("/json/not-mirrored", "'not-mirrored'"),
        ("/packages/aa/bb/cc/missing-1.0.tar.gz", "'missing-1.0.tar.gz'"),
        ("/simple/tiny-thing/index.html", "/simple/tiny-thing/index.html"),
        ("/status", "/status"),
        ("/", "'/'"),
    ],
)
async def test_not_found_says_what_and_why(client: Client, url: str, mentions: str) -> None:
    async with client.get(url) as resp:
        got = (resp.status, mentions in (text := await resp.text()), "only part" in text)
    assert got == (404, True, True)


# --- files --------------------------------------------------------------------------------------


async def test_file_download(client: Client, tree: MiniTree) -> None:
    wheel = tree.project("tiny-thing").files[0]
    async with client.get(wheel.url) as resp:
        got = (resp.status, resp.headers["Content-Type"], resp.headers["Cache-Control"])
        body = await resp.read()
    assert (got, body) == ((200, "application/octet-stream", FILE_CACHE), wheel.body)


async def test_sdist_is_not_content_encoded(client: Client, tree: MiniTree) -> None:
    sdist = tree.project("tiny-thing").files[1]
    async with client.get(sdist.url, headers={"Accept-Encoding": "gzip"}) as resp:
        got = (resp.headers["Content-Type"], resp.headers.get("Content-Encoding"), resp.status)
    assert got == ("application/octet-stream", None, 200)


async def test_core_metadata_file(client: Client, tree: MiniTree) -> None:
    wheel = tree.project("tiny-thing").files[0]
    async with client.get(wheel.url + ".metadata") as resp:
        got = (resp.headers["Content-Type"], resp.headers["Cache-Control"], await resp.read())
    assert got == ("text/plain; charset=utf-8", FILE_CACHE, wheel.metadata)


async def test_file_head(client: Client, tree: MiniTree) -> None:
    wheel = tree.project("other").files[0]
    async with client.head(wheel.url) as resp:
        got = (resp.status, resp.headers["Content-Length"], await resp.read())
    assert got == (200, str(len(wheel.body)), b"")


async def test_file_if_none_match_gives_304(client: Client, tree: MiniTree) -> None:
    wheel = tree.project("other").files[0]
    async with client.get(wheel.url) as resp:
        etag = resp.headers["ETag"]
    async with client.get(wheel.url, headers={"If-None-Match": etag}) as resp:
        got = (resp.status, resp.headers["Cache-Control"], await resp.read())
    assert got == (304, FILE_CACHE, b"")


async def test_file_if_modified_since_gives_304(client: Client, tree: MiniTree) -> None:
    wheel = tree.project("other").files[0]
    async with client.get(wheel.url) as resp:
        last_modified = resp.headers["Last-Modified"]
    async with client.get(wheel.url, headers={"If-Modified-Since": last_modified}) as resp:
        assert resp.status == 304


@pytest.mark.parametrize(("spec", "start", "end"), [("0-9", 0, 10), ("10-29", 10, 30)])
async def test_file_range(client: Client, tree: MiniTree, spec: str, start: int, end: int) -> None:
    wheel = tree.project("tiny-thing").files[0]
    async with client.get(wheel.url, headers={"Range": f"bytes={spec}"}) as resp:
        got = (resp.status, resp.headers["Content-Range"], await resp.read())
    assert got == (206, f"bytes {start}-{end - 1}/{len(wheel.body)}", wheel.body[start:end])


async def test_file_suffix_range_reads_the_zip_directory(client: Client, tree: MiniTree) -> None:
    wheel = tree.project("tiny-thing").files[0]
    async with client.get(wheel.url, headers={"Range": "bytes=-22"}) as resp:
        got = (resp.status, await resp.read())
    assert got == (206, wheel.body[-22:])


# --- JSON API -----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/pypi/tiny-thing/json", "/json/tiny-thing"])
async def test_json_api(client: Client, tree: MiniTree, url: str) -> None:
    async with client.get(url) as resp:
        got = (resp.headers["Content-Type"], resp.headers["Cache-Control"], await resp.read())
    assert got == ("application/json", PAGE_CACHE, tree.read("web/json/tiny-thing"))


# --- safety -------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TRAVERSALS)
async def test_nothing_outside_web_is_served(client: Client, target: str) -> None:
    reply = await asyncio.to_thread(http_get, _port(client), target)
    leaked = SECRET in reply.body or reply.body == b"42\n"
    assert (reply.status in (400, 404), leaked) == (True, False)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("url", ["/simple/", "/packages/aa/bb/x.whl", "/nowhere"])
async def test_read_only(client: Client, method: str, url: str) -> None:
    async with client.request(method, url) as resp:
        assert (resp.status, resp.headers["Allow"]) == (405, "GET, HEAD")


# --- the serial reader --------------------------------------------------------------------------

_FILLER = '"files": [' + ", ".join(['{"filename": "x", "_last-serial": 1}'] * 400) + "]"


@pytest.mark.parametrize(
    ("text", "serial"),
    [
        ('{"meta": {"api-version": "1.1", "_last-serial": 7}, "files": []}', 7),
        ('{"name": "x", "meta": {"_last-serial": 8, "api-version": "1.4"}}', 8),
        ('{"projects": [{"name": "a", "_last-serial": 3}], "meta": {"_last-serial": 9}}', 9),
        ("{" + _FILLER + ', "meta": {"api-version": "1.1", "_last-serial": 10}}', 10),
        ('{"meta": {"api-version": "1.1", "_last-serial": 11}, ' + _FILLER + "}", 11),
        (
            '{"a": ['
            + ",".join(["0"] * 5000)
            + '], "meta": {"_last-serial": 12}, "b": ['
            + ",".join(["0"] * 5000)
            + "]}",
            12,
        ),
        (" " * 8165 + '{"meta": {"_last-serial": 12345}}', 12345),  # number across the peek
        ('{"meta": {"api-version": "1.1"}}', None),
        ('{"meta": {"_last-serial": "13"}}', None),
        ("not json", None),
    ],
)
def test_read_serial(tmp_path: Path, text: str, serial: int | None) -> None:
    path = tmp_path / "index.v1_json"
    path.write_text(text)
    assert _read_serial(path) == serial


# --- running ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:8080", ("::1", 8080)),
        ("localhost:0", ("localhost", 0)),
        ("8080", ("127.0.0.1", 8080)),
        (":8080", ("127.0.0.1", 8080)),
    ],
)
def test_parse_bind(bind: str, expected: tuple[str, int]) -> None:
    assert parse_bind(bind) == expected


@pytest.mark.parametrize("bind", ["", "host", "host:", "host:http", "host:70000", "1.2.3.4:-1"])
def test_parse_bind_refuses(bind: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_bind(bind)


def test_run_serve_refuses_a_directory_without_pages(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a synced mirror"):
        run_serve(tmp_path, "127.0.0.1:0")


async def test_start_logs_requests(tree: MiniTree, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bandersnatch_clone.serve")
    runner = await start(tree.web, "127.0.0.1", 0, log_requests=True)
    try:
        port = runner.addresses[0][1]
        await asyncio.to_thread(http_get, port, "/simple/other/")
    finally:
        await runner.cleanup()
    lines = [r.getMessage() for r in caplog.records if r.name.endswith(".access")]
    assert [('"GET /simple/other/ HTTP/1.1" 200' in line) for line in lines] == [True]


@pytest.mark.slow
async def test_pip_downloads_from_the_server(tree: MiniTree, tmp_path: Path) -> None:
    runner = await start(tree.web, "127.0.0.1", 0)
    try:
        port = runner.addresses[0][1]
        dest = tmp_path / "dest"
        proc = await asyncio.create_subprocess_exec(
            *pip_download_args(f"http://127.0.0.1:{port}/simple/", "Tiny_Thing", dest),
            env=pip_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    finally:
        await runner.cleanup()
    wheel = tree.project("tiny-thing").files[0]
    assert proc.returncode == 0, output.decode(errors="replace")
    assert (dest / wheel.filename).read_bytes() == wheel.body
