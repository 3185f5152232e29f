"""examples/nginx.conf run by the real nginx: negotiation, types, caching, redirects, safety, pip.

The example is used as shipped, with only its two placeholders substituted (__ROOT__, __LISTEN__):
see `tests.minitree.running_nginx` for the command line around it.
"""

from __future__ import annotations

import gzip
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from bandersnatch_clone.layout import HTML_PAGE, V1_HTML_PAGE, V1_JSON_PAGE
from tests.minitree import (
    ACCEPT_CASES,
    PIP_ACCEPT,
    SECRET,
    TEXT_HTML,
    TRAVERSALS,
    V1_HTML,
    V1_JSON,
    MiniTree,
    Reply,
    build_minitree,
    http_get,
    nginx_binary,
    pip_download_args,
    pip_env,
    running_nginx,
)

pytestmark = pytest.mark.slow

PAGE_FOR = {TEXT_HTML: HTML_PAGE, V1_HTML: V1_HTML_PAGE, V1_JSON: V1_JSON_PAGE}
PAGE_CACHE = "max-age=600"
FILE_CACHE = "max-age=365000000, immutable"


@dataclass(frozen=True)
class Nginx:
    port: int
    tree: MiniTree

    def get(self, target: str, headers: dict[str, str] | None = None, method: str = "GET") -> Reply:
        return http_get(self.port, target, headers, method)


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (Debian/Ubuntu: apt-get install nginx-light)")
    base = tmp_path_factory.mktemp("nginx")
    tree = build_minitree(base / "mirror")
    with running_nginx(binary, tree.web, base / "run") as running:
        yield Nginx(running.port, tree)


# --- negotiation: the same table as the Python server -------------------------------------------


@pytest.mark.parametrize("project", [None, "tiny-thing"])
@pytest.mark.parametrize(("accept", "expected"), ACCEPT_CASES)
def test_page_negotiation(
    nginx: Nginx, project: str | None, accept: str | None, expected: str | None
) -> None:
    media_type = expected or TEXT_HTML
    url = "/simple/" if project is None else f"/simple/{project}/"
    reply = nginx.get(url, {} if accept is None else {"Accept": accept})
    got = (reply.status, reply.headers["Content-Type"], reply.body)
    assert got == (200, media_type, nginx.tree.page(project, PAGE_FOR[media_type]))


@pytest.mark.parametrize("url", ["/simple/", "/simple/tiny-thing/", "/simple/other/"])
def test_page_cache_headers(nginx: Nginx, url: str) -> None:
    reply = nginx.get(url, {"Accept": PIP_ACCEPT})
    # Two Vary headers (ours and gzip's "Accept-Encoding") are one list to HTTP (RFC 9110 5.3).
    vary = {v.strip() for h in reply.headers.get_all("Vary", []) for v in h.split(",")}
    assert ("Accept" in vary, reply.headers["Cache-Control"]) == (True, PAGE_CACHE)


@pytest.mark.parametrize(
    ("url", "accept"),
    [
        ("/simple/tiny-thing/", PIP_ACCEPT),
        ("/simple/tiny-thing/", "text/html"),
        ("/simple/tiny-thing/", V1_HTML),
        ("/pypi/tiny-thing/json", "*/*"),
        ("/json/tiny-thing", "*/*"),
    ],
)
def test_pages_and_json_are_gzipped(nginx: Nginx, url: str, accept: str) -> None:
    plain = nginx.get(url, {"Accept": accept}).body
    reply = nginx.get(url, {"Accept": accept, "Accept-Encoding": "gzip"})
    got = (reply.headers["Content-Encoding"], gzip.decompress(reply.body))
    assert got == ("gzip", plain)


def test_page_if_none_match_gives_304(nginx: Nginx) -> None:
    etag = nginx.get("/simple/other/", {"Accept": PIP_ACCEPT}).headers["ETag"]
    reply = nginx.get("/simple/other/", {"Accept": PIP_ACCEPT, "If-None-Match": etag})
    assert (reply.status, reply.body) == (304, b"")


# --- redirects ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("/simple", "/simple/"),
        ("/simple/tiny-thing", "/simple/tiny-thing/"),
        ("/simple/Tiny_thing/", "/simple/tiny-thing/"),
        ("/simple/TINY.thing", "/simple/tiny-thing/"),
        ("/simple/tiny.thing", "/simple/tiny-thing/"),
        ("/simple/tiny--thing/", "/simple/tiny-thing/"),
        ("/simple/tiny_thing/?format=x", "/simple/tiny-thing/?format=x"),
        ("/simple/Not_Mirrored/", "/simple/not-mirrored/"),
        ("/simple/a.b_c-.d/", "/simple/a-b-c-d/"),
    ],
)
def test_redirects_to_normal_form(nginx: Nginx, url: str, location: str) -> None:
    reply = nginx.get(url)
    assert (reply.status, reply.headers["Location"]) == (301, location)


@pytest.mark.parametrize(
    "url", ["/simple/Tiny_Thing/", "/simple/TiNy.ThInG", "/simple/TTTT_T/", "/simple/A.B.C.D.E.F/"]
)
def test_repeated_capitals_take_a_few_redirects(nginx: Nginx, url: str) -> None:
    start, hops = url.rstrip("/"), list[str]()
    reply = nginx.get(url)
    while reply.status == 301 and len(hops) < 10:
        url = reply.headers["Location"]
        hops.append(url)
        reply = nginx.get(url)
    assert (hops[-1], len(hops) <= 5) == (f"/simple/{canonicalize_name(start[8:])}/", True)


# --- 404 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/simple/not-mirrored/",
        "/pypi/not-mirrored/json",
        "/json/not-mirrored",
        "/packages/aa/bb/cc/missing-1.0.tar.gz",
        "/packages/aa/",
        "/simple/tiny-thing/index.html",
        "/status",
        "/",
    ],
)
def test_not_found_says_what_and_why(nginx: Nginx, url: str) -> None:
    reply = nginx.get(url)
    got = (reply.status, reply.headers["Content-Type"], f"Not found: {url}".encode() in reply.body)
    assert got == (404, "text/plain; charset=utf-8", True)


# --- files --------------------------------------------------------------------------------------


def test_file_download(nginx: Nginx) -> None:
    wheel = nginx.tree.project("tiny-thing").files[0]
    reply = nginx.get(wheel.url, {"Accept-Encoding": "gzip"})
    got = (reply.headers["Content-Type"], reply.headers["Cache-Control"], reply.body)
    assert got == ("application/octet-stream", FILE_CACHE, wheel.body)


def test_sdist_is_not_content_encoded(nginx: Nginx) -> None:
    sdist = nginx.tree.project("tiny-thing").files[1]
    reply = nginx.get(sdist.url, {"Accept-Encoding": "gzip"})
    got = (reply.headers["Content-Type"], reply.headers["Content-Encoding"], reply.body)
    assert got == ("application/octet-stream", None, sdist.body)


def test_core_metadata_file(nginx: Nginx) -> None:
    wheel = nginx.tree.project("tiny-thing").files[0]
    reply = nginx.get(wheel.url + ".metadata")
    got = (reply.headers["Content-Type"], reply.headers["Cache-Control"], reply.body)
    assert got == ("text/plain; charset=utf-8", FILE_CACHE, wheel.metadata)


def test_file_head(nginx: Nginx) -> None:
    wheel = nginx.tree.project("other").files[0]
    reply = nginx.get(wheel.url, method="HEAD")
    assert (reply.status, reply.headers["Content-Length"]) == (200, str(len(wheel.body)))


def test_file_if_none_match_gives_304(nginx: Nginx) -> None:
    wheel = nginx.tree.project("other").files[0]
    etag = nginx.get(wheel.url).headers["ETag"]
    reply = nginx.get(wheel.url, {"If-None-Match": etag})
    assert (reply.status, reply.body) == (304, b"")


def test_file_range(nginx: Nginx) -> None:
    wheel = nginx.tree.project("tiny-thing").files[0]
    reply = nginx.get(wheel.url, {"Range": "bytes=10-29"})
    got = (reply.status, reply.headers["Content-Range"], reply.body)
    assert got == (206, f"bytes 10-29/{len(wheel.body)}", wheel.body[10:30])


@pytest.mark.parametrize("url", ["/pypi/tiny-thing/json", "/json/tiny-thing"])
def test_json_api(nginx: Nginx, url: str) -> None:
    reply = nginx.get(url)
    got = (reply.headers["Content-Type"], reply.headers["Cache-Control"], reply.body)
    assert got == ("application/json", PAGE_CACHE, nginx.tree.read("web/json/tiny-thing"))


# --- safety -------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TRAVERSALS)
def test_nothing_outside_web_is_served(nginx: Nginx, target: str) -> None:
    reply = nginx.get(target)
    leaked = SECRET in reply.body or reply.body == b"42\n"
    assert (reply.status in (400, 404), leaked) == (True, False)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_read_only(nginx: Nginx, method: str) -> None:
    urls = ["/simple/tiny-thing/", nginx.tree.project("other").files[0].url]
    assert [nginx.get(url, method=method).status for url in urls] == [405, 405]


# --- a real client ------------------------------------------------------------------------------


def test_pip_downloads_through_nginx(nginx: Nginx, tmp_path: Path) -> None:
    index = f"http://127.0.0.1:{nginx.port}/simple/"
    result = subprocess.run(
        pip_download_args(index, "Tiny_Thing", tmp_path),
        env=pip_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    wheel = nginx.tree.project("tiny-thing").files[0]
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / wheel.filename).read_bytes() == wheel.body
