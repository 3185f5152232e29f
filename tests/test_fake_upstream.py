"""The fake upstream speaks PyPI: checked over real HTTP, with real clients at the end."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
import xmlrpc.client
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import MakeUpstream
from tests.distbuilder import build_metadata, build_sdist, build_wheel, padding
from tests.fake_render import negotiate
from tests.fake_upstream import FakeIndex, FakeUpstream

V1_JSON = "application/vnd.pypi.simple.v1+json"
V1_HTML = "application/vnd.pypi.simple.v1+html"
PIP_ACCEPT = f"{V1_JSON}, {V1_HTML}; q=0.1, text/html; q=0.01"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def fetch(
    http: aiohttp.ClientSession,
    url: str,
    accept: str | None = V1_JSON,
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> tuple[aiohttp.ClientResponse, bytes]:
    headers = {"Accept": accept, **(headers or {})} if accept else headers
    async with http.get(url, headers=headers, **kw) as response:
        return response, await response.read()


async def page(http: aiohttp.ClientSession, upstream: FakeUpstream, name: str) -> Any:
    response, body = await fetch(http, f"{upstream.url}/simple/{name}/")
    assert response.status == 200
    return json.loads(body)


# -- distbuilder -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "version", "tag", "expected"),
    [
        ("alpha", "1.0", "py3-none-any", "alpha-1.0-py3-none-any.whl"),
        (
            "Zope.Interface_Thing",
            "5.0",
            "py3-none-any",
            "zope_interface_thing-5.0-py3-none-any.whl",
        ),
        ("foo-bar", "1.0.0-beta1", "py2.py3-none-any", "foo_bar-1.0.0b1-py2.py3-none-any.whl"),
        (
            "x",
            "2",
            "cp311-cp311-manylinux_2_17_x86_64",
            "x-2-cp311-cp311-manylinux_2_17_x86_64.whl",
        ),
    ],
)
def test_wheel_filename_follows_the_spec(name: str, version: str, tag: str, expected: str) -> None:
    assert build_wheel(name, version, tag=tag)[0] == expected


def test_wheel_is_deterministic_and_its_record_and_metadata_are_right() -> None:
    def build() -> tuple[str, bytes, bytes]:
        return build_wheel(
            "Foo.Bar", "1.0", requires_dist=["baz>=1"], requires_python=">=3.8", extra_size=5000
        )

    _, data, metadata = build()
    assert build()[1] == data
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.read("foo_bar-1.0.dist-info/METADATA") == metadata
        record = zf.read("foo_bar-1.0.dist-info/RECORD").decode().splitlines()
        for line in record:
            path, digest, size = line.rsplit(",", 2)
            if path.endswith("RECORD"):
                continue
            content = zf.read(path)
            expected = hashlib.sha256(content).digest()
            assert digest == "sha256=" + base64.urlsafe_b64encode(expected).rstrip(b"=").decode()
            assert int(size) == len(content)
        assert len(zf.read("foo_bar/_padding.bin")) == 5000
    assert b"Requires-Dist: baz>=1\n" in metadata
    assert b"Requires-Python: >=3.8\n" in metadata


def test_sdist_is_deterministic_with_pkg_info_and_pyproject() -> None:
    filename, data = build_sdist("Foo.Bar", "1.0", requires_dist=['baz; python_version < "4"'])
    assert filename == "foo_bar-1.0.tar.gz"
    assert build_sdist("Foo.Bar", "1.0", requires_dist=['baz; python_version < "4"'])[1] == data
    assert data[4:8] == b"\x00\x00\x00\x00"  # gzip header mtime
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        pkg_info = tf.extractfile("foo_bar-1.0/PKG-INFO")
        pyproject = tf.extractfile("foo_bar-1.0/pyproject.toml")
        assert pkg_info is not None
        assert pyproject is not None
        assert pkg_info.read() == build_metadata(
            "Foo.Bar", "1.0", requires_dist=['baz; python_version < "4"']
        )
        assert 'dependencies = ["baz; python_version < \\u0022' in pyproject.read().decode()
    assert len(gzip.decompress(data)) % 512 == 0


def test_padding_is_deterministic_per_seed() -> None:
    assert padding("a", 100_000) == padding("a", 100_000)
    assert padding("a", 1000) != padding("b", 1000)
    assert len(padding("a", 200_001)) == 200_001


# -- negotiation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "text/html"),
        ("", "text/html"),
        ("*/*", "text/html"),
        ("text/html", "text/html"),
        (V1_HTML, V1_HTML),
        (V1_JSON, V1_JSON),
        (PIP_ACCEPT, V1_JSON),
        (f"{V1_JSON}, {V1_HTML}; q=0.2, text/html; q=0.01", V1_JSON),  # uv
        (f"{V1_JSON}; q=0.5, text/html", "text/html"),
        (f"{V1_JSON}; q=0, */*", "text/html"),
        ("application/*", V1_HTML),
        ("application/json", "text/html"),  # nothing acceptable: PyPI falls back to HTML
    ],
)
def test_negotiate_like_pypi(accept: str | None, expected: str) -> None:
    assert negotiate(accept) == expected


# -- listing ---------------------------------------------------------------------------------


async def test_listing_json(http: aiohttp.ClientSession, upstream: FakeUpstream) -> None:
    response, body = await fetch(http, upstream.simple_url, PIP_ACCEPT)
    data = json.loads(body)
    assert response.headers["Content-Type"] == V1_JSON
    assert response.headers["X-PyPI-Last-Serial"] == str(upstream.index.serial)
    assert response.headers["Vary"] == "Accept"
    assert data["meta"] == {"api-version": "1.4", "_last-serial": upstream.index.serial}
    expected = [{"name": p.name, "_last-serial": p.serial} for p in upstream.index.listed()]
    assert data["projects"] == expected
    assert len(expected) == 12
    assert {"name": "Zope.Interface_Thing", "_last-serial": 41} in expected


@pytest.mark.parametrize(("accept", "ctype"), [(None, "text/html"), (V1_HTML, V1_HTML)])
async def test_listing_html(
    http: aiohttp.ClientSession, upstream: FakeUpstream, accept: str | None, ctype: str
) -> None:
    response, body = await fetch(http, upstream.simple_url, accept)
    assert response.headers["Content-Type"] == ctype
    assert '<meta name="pypi:repository-version" content="1.4">' in body.decode()
    links = re.findall(r'<a href="([^"]+)">([^<]+)</a>', body.decode())
    assert ("/simple/zope-interface-thing/", "Zope.Interface_Thing") in links
    assert len(links) == 12


async def test_listing_hides_quarantined_and_renders_again_after_mutation(
    http: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    before = json.loads((await fetch(http, upstream.simple_url))[1])
    upstream.index.set_status("alpha", "quarantined")
    after = json.loads((await fetch(http, upstream.simple_url))[1])
    assert "alpha" in [p["name"] for p in before["projects"]]
    assert "alpha" not in [p["name"] for p in after["projects"]]
    assert after["meta"]["_last-serial"] == before["meta"]["_last-serial"] + 1


async def test_simple_without_slash_redirects(
    http: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    response, _ = await fetch(http, f"{upstream.url}/simple", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (301, "/simple/")


# -- project pages ---------------------------------------------------------------------------


async def test_project_page_json_fields(
    http: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    response, body = await fetch(http, f"{upstream.url}/simple/alpha/", PIP_ACCEPT)
    data = json.loads(body)
    alpha = upstream.index.project("alpha")
    assert response.headers["Content-Type"] == V1_JSON
    assert response.headers["X-PyPI-Last-Serial"] == str(alpha.serial)
    assert data["meta"] == {"api-version": "1.4", "_last-serial": alpha.serial}
    assert data["name"] == "alpha"
    assert data["versions"] == ["1.0", "2.0"]
    assert data["project-status"] == {"status": "active"}
    assert [f["filename"] for f in data["files"]] == [
        "alpha-1.0-py3-none-any.whl",
        "alpha-1.0.tar.gz",
        "alpha-2.0-py3-none-any.whl",
        "alpha-2.0.tar.gz",
    ]
    wheel, sdist = data["files"][2], data["files"][3]
    f = upstream.index.file("alpha", "alpha-2.0-py3-none-any.whl")
    assert wheel == {
        "filename": "alpha-2.0-py3-none-any.whl",
        "url": upstream.url + f.path,
        "hashes": {"sha256": f.digests().sha256},
        "requires-python": ">=3.8",
        "size": f.digests().size,
        "upload-time": f.upload_time.isoformat() + "Z",
        "yanked": False,
        "data-dist-info-metadata": {"sha256": f.digests().metadata_sha256},
        "core-metadata": {"sha256": f.digests().metadata_sha256},
        "provenance": None,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", wheel["upload-time"])
    assert sdist["core-metadata"] is False
    assert sdist["data-dist-info-metadata"] is False


@pytest.mark.parametrize(
    ("name", "key", "expected"),
    [
        ("gamma", "yanked", [False, False, "broken build", "broken build"]),
        ("zeta", "yanked", [False, False, True, True]),
        ("delta", "requires-python", [">=3.8,<4", ">=3.8,<4"]),
        ("epsilon", "filename", ["epsilon-1.0.tar.gz"]),
        ("theta", "upload-time", ["2024-02-03T04:05:06Z", "2024-01-02T03:56:05.123456Z"]),
        ("theta", "core-metadata", [False, False]),
        ("kappa", "filename", ["kappa-1.0-py3-none-any.whl", "kappa-1.0.tar.gz"]),
    ],
)
async def test_project_page_file_values(
    http: aiohttp.ClientSession, upstream: FakeUpstream, name: str, key: str, expected: list[Any]
) -> None:
    data = await page(http, upstream, name)
    assert [f[key] for f in data["files"]] == expected


@pytest.mark.parametrize(
    ("name", "key", "expected"),
    [
        ("beta", "versions", ["1.0", "1.1", "2.0b1"]),
        ("kappa", "versions", ["1.0"]),  # 2.0 lost its files: PyPI lists versions from files
        ("omicron", "project-status", {"status": "archived", "reason": "Unmaintained"}),
        ("iota", "project-status", {"status": "deprecated", "reason": "Use alpha instead"}),
        ("zope-interface-thing", "name", "zope-interface-thing"),
    ],
)
async def test_project_page_values(
    http: aiohttp.ClientSession, upstream: FakeUpstream, name: str, key: str, expected: Any
) -> None:
    assert (await page(http, upstream, name))[key] == expected


async def test_project_page_provenance(http: aiohttp.ClientSession, upstream: FakeUpstream) -> None:
    wheel = (await page(http, upstream, "theta"))["files"][0]
    expected = f"{upstream.url}/integrity/theta/1.0/theta-1.0-py3-none-any.whl/provenance"
    _, body = await fetch(http, wheel["provenance"])
    assert wheel["provenance"] == expected
    assert json.loads(body) == {"version": 1, "attestation_bundles": []}


async def test_project_page_html(http: aiohttp.ClientSession, upstream: FakeUpstream) -> None:
    response, body = await fetch(http, f"{upstream.url}/simple/delta/", "text/html")
    html = body.decode()
    f = upstream.index.file("delta", "delta-0.1-py3-none-any.whl")
    meta = f.digests().metadata_sha256
    assert response.headers["Content-Type"] == "text/html"
    assert '<meta name="pypi:repository-version" content="1.4">' in html
    assert '<meta name="pypi:project-status" content="active">' in html
    assert (
        f'<a href="{upstream.url}{f.path}#sha256={f.digests().sha256}" '
        'data-requires-python="&gt;=3.8,&lt;4" '
        f'data-dist-info-metadata="sha256={meta}" data-core-metadata="sha256={meta}">'
        "delta-0.1-py3-none-any.whl</a><br />"
    ) in html
    assert html.endswith(f"<!--SERIAL {upstream.index.project('delta').serial}-->\n")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("gamma", 'data-yanked="broken build"'),
        ("zeta", 'data-yanked=""'),
        ("omicron", '<meta name="pypi:project-status-reason" content="Unmaintained">'),
        ("theta", 'data-provenance="'),
    ],
)
async def test_project_page_html_attributes(
    http: aiohttp.ClientSession, upstream: FakeUpstream, name: str, fragment: str
) -> None:
    response, body = await fetch(http, f"{upstream.url}/simple/{name}/", V1_HTML)
    assert response.headers["Content-Type"] == V1_HTML
    assert fragment in body.decode()


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/simple/Zope.Interface_Thing/", "/simple/zope-interface-thing/"),
        ("/simple/ALPHA/?x=1", "/simple/alpha/?x=1"),
        ("/simple/alpha", "/simple/alpha/"),
        ("/pypi/Zope.Interface_Thing/json", "/pypi/zope-interface-thing/json"),
    ],
)
async def test_non_normalised_urls_redirect(
    http: aiohttp.ClientSession, upstream: FakeUpstream, path: str, location: str
) -> None:
    response, _ = await fetch(http, upstream.url + path, allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (301, location)


@pytest.mark.parametrize(
    "path",
    [
        "/simple/nope/",
        "/pypi/nope/json",
        "/packages/00/11/2233/alpha-1.0-py3-none-any.whl",
        "/packages/aa/bb/cc/nope-1.0.tar.gz",
        "/packages/aa/bb/cc/not-a-dist.txt",
    ],
)
async def test_unknown_is_404(
    http: aiohttp.ClientSession, upstream: FakeUpstream, path: str
) -> None:
    response, _ = await fetch(http, upstream.url + path)
    assert response.status == 404


# -- files -----------------------------------------------------------------------------------


async def test_every_file_matches_its_advertised_hashes(
    http: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    checked = 0
    for project in upstream.index.listed():
        for f in (await page(http, upstream, project.normalized))["files"]:
            response, body = await fetch(http, f["url"], None)
            assert response.status == 200
            assert hashlib.sha256(body).hexdigest() == f["hashes"]["sha256"]
            assert len(body) == f["size"]
            b2 = hashlib.blake2b(body, digest_size=32).hexdigest()
            assert f["url"].endswith(f"/packages/{b2[:2]}/{b2[2:4]}/{b2[4:]}/{f['filename']}")
            checked += 1
    assert checked == sum(len(list(p.files())) for p in upstream.index.listed()) == 34


async def test_metadata_file_is_the_wheels_metadata(
    http: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    wheels = 0
    for project in upstream.index.listed():
        for f in (await page(http, upstream, project.normalized))["files"]:
            response, metadata = await fetch(http, f["url"] + ".metadata", None)
            if not f["core-metadata"]:
                assert response.status == 404
                continue
            _, wheel = await fetch(http, f["url"], None)
            with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
                [inside] = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
                assert zf.read(inside) == metadata
            assert hashlib.sha256(metadata).hexdigest() == f["core-metadata"]["sha256"]
            wheels += 1
    assert wheels == 16


async def test_file_head_and_range(http: aiohttp.ClientSession, upstream: FakeUpstream) -> None:
    f = upstream.index.file("alpha", "alpha-1.0-py3-none-any.whl")
    url, data = upstream.url + f.path, f.content()
    async with http.head(url) as head:
        assert head.status == 200
        assert int(head.headers["Content-Length"]) == len(data)
        assert await head.read() == b""
    response, tail = await fetch(http, url, None, headers={"Range": "bytes=-100"})
    assert (response.status, tail) == (206, data[-100:])
    assert (
        response.headers["Content-Range"] == f"bytes {len(data) - 100}-{len(data) - 1}/{len(data)}"
    )
    response, middle = await fetch(http, url, None, headers={"Range": "bytes=10-19"})
    assert (response.status, middle) == (206, data[10:20])
    response, _ = await fetch(http, url, None, headers={"Range": f"bytes={len(data)}-"})
    assert response.status == 416
    assert response.headers["Cache-Control"] == "max-age=365000000, immutable, public"


# -- legacy JSON API -------------------------------------------------------------------------


async def test_legacy_json(http: aiohttp.ClientSession, upstream: FakeUpstream) -> None:
    response, body = await fetch(http, f"{upstream.url}/pypi/alpha/json", None)
    data = json.loads(body)
    alpha = upstream.index.project("alpha")
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-PyPI-Last-Serial"] == str(alpha.serial)
    assert data["last_serial"] == alpha.serial
    assert data["vulnerabilities"] == []
    info = data["info"]
    assert (info["name"], info["version"], info["summary"]) == ("alpha", "2.0", "The first project")
    assert (info["requires_python"], info["requires_dist"]) == (">=3.8", ["beta>=1.0"])
    assert list(data["releases"]) == ["2.0", "1.0"]
    assert data["urls"] == data["releases"]["2.0"]
    f = upstream.index.file("alpha", "alpha-1.0-py3-none-any.whl")
    d = f.digests()
    assert data["releases"]["1.0"][0] == {
        "comment_text": "",
        "digests": {"blake2b_256": d.blake2b_256, "md5": d.md5, "sha256": d.sha256},
        "downloads": -1,
        "filename": "alpha-1.0-py3-none-any.whl",
        "has_sig": False,
        "md5_digest": d.md5,
        "packagetype": "bdist_wheel",
        "python_version": "py3",
        "requires_python": ">=3.8",
        "size": d.size,
        "upload_time": f.upload_time.strftime("%Y-%m-%dT%H:%M:%S"),
        "upload_time_iso_8601": f.upload_time.isoformat() + "Z",
        "url": upstream.url + f.path,
        "yanked": False,
        "yanked_reason": None,
    }
    assert data["releases"]["1.0"][1]["packagetype"] == "sdist"
    assert data["releases"]["1.0"][1]["python_version"] == "source"


@pytest.mark.parametrize(
    ("name", "version", "urls"),
    [
        ("beta", "1.1", 2),  # 2.0b1 is a pre-release
        ("gamma", "1.0", 2),  # 1.1 is yanked
        ("kappa", "2.0", 0),  # the newest release, though it has no files left
    ],
)
async def test_legacy_json_latest_version(
    http: aiohttp.ClientSession, upstream: FakeUpstream, name: str, version: str, urls: int
) -> None:
    data = json.loads((await fetch(http, f"{upstream.url}/pypi/{name}/json", None))[1])
    assert (data["info"]["version"], len(data["urls"])) == (version, urls)


async def test_legacy_json_yank_fields(http: aiohttp.ClientSession, upstream: FakeUpstream) -> None:
    data = json.loads((await fetch(http, f"{upstream.url}/pypi/gamma/json", None))[1])
    assert {(f["yanked"], f["yanked_reason"]) for f in data["releases"]["1.1"]} == {
        (True, "broken build")
    }


# -- XML-RPC ---------------------------------------------------------------------------------


def test_xmlrpc_methods(upstream: FakeUpstream) -> None:
    serial = upstream.index.serial
    with xmlrpc.client.ServerProxy(f"{upstream.url}/pypi") as proxy:
        last = proxy.changelog_last_serial()
        rows = proxy.changelog_since_serial(0)
        tail = proxy.changelog_since_serial(serial - 1)
        nothing = proxy.changelog_since_serial(serial)
        packages = proxy.list_packages_with_serial()
    assert last == serial
    assert isinstance(rows, list)
    assert [r[4] for r in rows] == list(range(1, serial + 1))
    assert rows[0] == ["alpha", None, rows[0][2], "create", 1]
    assert rows[1][1:2] + rows[1][3:] == ["1.0", "new release", 2]
    assert rows[2][3] == "add py3 file alpha-1.0-py3-none-any.whl"
    assert tail == [["omicron", None, rows[-1][2], "set status archived", serial]]
    assert nothing == []
    assert packages == {p.name: p.serial for p in upstream.index.listed()}


def test_xmlrpc_unknown_method_is_a_fault(upstream: FakeUpstream) -> None:
    with (
        xmlrpc.client.ServerProxy(f"{upstream.url}/pypi") as proxy,
        pytest.raises(xmlrpc.client.Fault) as info,
    ):
        proxy.package_releases("alpha")
    assert info.value.faultCode == -32601


def test_xmlrpc_changelog_is_paged_at_50000(make_upstream: MakeUpstream) -> None:
    upstream = make_upstream(FakeIndex.generate(60_000, files_per_project=0))
    upstream.index.add_project("late", ["1.0"])
    with xmlrpc.client.ServerProxy(f"{upstream.url}/pypi") as proxy:
        first = proxy.changelog_since_serial(0)
        rest = proxy.changelog_since_serial(50_000)
    assert isinstance(first, list)
    assert isinstance(rest, list)
    assert (len(first), first[-1][4]) == (50_000, 50_000)
    assert [r[4] for r in rest] == list(range(50_001, upstream.index.serial + 1))
    assert rest[-1][:2] == ["late", "1.0"]


# -- mutations -------------------------------------------------------------------------------


Mutation = Callable[[FakeIndex], object]


@pytest.mark.parametrize(
    ("mutate", "project", "actions"),
    [
        (lambda i: i.add_file("alpha", "2.0", "wheel", tag="py2-none-any"), "alpha",
         ["add py2 file alpha-2.0-py2-none-any.whl"]),
        (lambda i: i.add_release("alpha", "3.0"), "alpha",
         ["new release", "add py3 file alpha-3.0-py3-none-any.whl",
          "add source file alpha-3.0.tar.gz"]),
        (lambda i: i.remove_file("alpha", "alpha-1.0.tar.gz"), "alpha",
         ["remove file alpha-1.0.tar.gz"]),
        (lambda i: i.remove_release("alpha", "1.0"), "alpha", ["remove release"]),
        (lambda i: i.remove_project("alpha"), "alpha", ["remove project"]),
        (lambda i: i.yank("alpha", "1.0", "oops"), "alpha", ["yank release"]),
        (lambda i: i.unyank("gamma", "1.1"), "gamma", ["unyank release"]),
        (lambda i: i.set_status("alpha", "archived", "done"), "alpha", ["set status archived"]),
        (lambda i: i.add_project("new.Project", ["1.0"], sdist=False), "new.Project",
         ["create", "new release", "add py3 file new_project-1.0-py3-none-any.whl"]),
        (lambda i: i.touch(["beta"]), "beta",
         ["new release", "add py3 file beta-2.1-py3-none-any.whl"]),
    ],
)  # fmt: skip
def test_mutation_writes_changelog_rows_and_serials(
    mutate: Mutation, project: str, actions: list[str]
) -> None:
    index = FakeIndex.small()
    before = index.serial
    mutate(index)
    rows = index.changelog_since(before)
    assert [r[3] for r in rows] == actions
    assert [r[4] for r in rows] == list(range(before + 1, before + 1 + len(actions)))
    assert {r[0] for r in rows} == {project}
    assert index.serial == before + len(actions)
    if (p := index.get(project)) is not None:
        assert p.serial == index.serial


async def test_mutations_show_on_the_pages(
    http: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    index = upstream.index
    old = index.file("alpha", "alpha-1.0.tar.gz")
    old_url = upstream.url + old.path
    index.remove_file("alpha", "alpha-1.0.tar.gz")
    index.yank("alpha", "2.0", "bad")
    index.add_release("alpha", "3.0", sdist=False)
    data = await page(http, upstream, "alpha")
    assert data["meta"]["_last-serial"] == index.serial
    assert data["versions"] == ["1.0", "2.0", "3.0"]
    assert "alpha-1.0.tar.gz" not in [f["filename"] for f in data["files"]]
    assert {f["yanked"] for f in data["files"] if "-2.0" in f["filename"]} == {"bad"}
    assert (await fetch(http, old_url, None))[0].status == 404
    index.remove_project("alpha")
    assert (await fetch(http, f"{upstream.url}/simple/alpha/"))[0].status == 404
    listing = json.loads((await fetch(http, upstream.simple_url))[1])
    assert "alpha" not in [p["name"] for p in listing["projects"]]
    assert listing["meta"]["_last-serial"] == index.serial


def test_mutations_refuse_nonsense() -> None:
    index = FakeIndex.small()
    with pytest.raises(ValueError, match="exists"):
        index.add_project("ALPHA")
    with pytest.raises(ValueError, match="invalid project name"):
        index.add_project("../etc")
    with pytest.raises(ValueError, match="unknown project status"):
        index.set_status("alpha", "gone")
    with pytest.raises(KeyError):
        index.remove_file("alpha", "nope.whl")


async def test_quarantined_project_offers_no_files(
    http: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    f = upstream.index.file("alpha", "alpha-1.0-py3-none-any.whl")
    upstream.index.set_status("alpha", "quarantined")
    data = await page(http, upstream, "alpha")
    assert (data["files"], data["versions"]) == ([], [])
    assert data["project-status"] == {"status": "quarantined"}
    assert (await fetch(http, upstream.url + f.path, None))[0].status == 404
    assert (await fetch(http, f"{upstream.url}/pypi/alpha/json"))[0].status == 404


async def test_status_none_drops_project_status(
    http: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    upstream.index.set_status("alpha", None)
    assert "project-status" not in await page(http, upstream, "alpha")


# -- faults ----------------------------------------------------------------------------------


async def test_fail_by_prefix_then_recover(
    http: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    upstream.fail("/simple/alpha/", status=503, times=2)
    statuses = [(await fetch(http, f"{upstream.url}/simple/alpha/"))[0].status for _ in range(3)]
    other = (await fetch(http, f"{upstream.url}/simple/beta/"))[0].status
    assert (statuses, other) == ([503, 503, 200], 200)
    assert [r.status for r in upstream.requests] == [503, 503, 200, 200]


async def test_fail_by_regex(http: aiohttp.ClientSession, upstream: FakeUpstream) -> None:
    upstream.fail(re.compile(r"\.whl$"), status=429, times=1)
    f = upstream.index.file("beta", "beta-1.0-py3-none-any.whl")
    first = (await fetch(http, upstream.url + f.path, None))[0].status
    sdist = upstream.index.file("beta", "beta-1.0.tar.gz")
    assert (await fetch(http, upstream.url + sdist.path, None))[0].status == 200
    assert (first, (await fetch(http, upstream.url + f.path, None))[0].status) == (429, 200)


@pytest.mark.parametrize("path", ["/simple/alpha/", "/pypi/alpha/json"])
async def test_stale_reports_a_lower_serial_until_busted(
    http: aiohttp.ClientSession, upstream: FakeUpstream, path: str
) -> None:
    real = upstream.index.project("alpha").serial
    upstream.stale("alpha", times=2)

    async def serials(query: str = "") -> tuple[int, int]:
        response, body = await fetch(http, upstream.url + path + query)
        data = json.loads(body)
        in_body = data["meta"]["_last-serial"] if "meta" in data else data["last_serial"]
        return int(response.headers["X-PyPI-Last-Serial"]), in_body

    assert await serials() == (real - 1, real - 1)
    assert await serials("?cache-bust=1") == (real, real)  # a query skips the stale copy
    assert await serials() == (real - 1, real - 1)
    assert await serials() == (real, real)


async def test_stale_without_bust_and_explicit_serial(
    http: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    upstream.stale("Alpha", times=1, serial=3, bust=False)
    response, body = await fetch(http, f"{upstream.url}/simple/alpha/?x=1")
    assert response.headers["X-PyPI-Last-Serial"] == "3"
    assert json.loads(body)["meta"]["_last-serial"] == 3


async def test_corrupt_flips_a_byte_once(
    http: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    f = upstream.index.file("alpha", "alpha-1.0-py3-none-any.whl")
    upstream.corrupt("/packages/")
    bad = (await fetch(http, upstream.url + f.path, None))[1]
    good = (await fetch(http, upstream.url + f.path, None))[1]
    assert hashlib.sha256(bad).hexdigest() != f.digests().sha256
    assert hashlib.sha256(good).hexdigest() == f.digests().sha256
    assert len(bad) == len(good)


async def test_latency(http: aiohttp.ClientSession, upstream: FakeUpstream) -> None:
    upstream.latency = 0.2
    start = time.monotonic()
    await asyncio.gather(*(fetch(http, upstream.simple_url) for _ in range(5)))
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < 0.9  # concurrent: the sleeps overlap


async def test_clear_faults(http: aiohttp.ClientSession, upstream: FakeUpstream) -> None:
    upstream.fail("/", times=5)
    upstream.stale("alpha", times=5)
    upstream.clear_faults()
    response, body = await fetch(http, f"{upstream.url}/simple/alpha/")
    assert response.status == 200
    assert json.loads(body)["meta"]["_last-serial"] == upstream.index.project("alpha").serial


# -- request log -----------------------------------------------------------------------------


async def test_request_log(http: aiohttp.ClientSession, upstream: FakeUpstream) -> None:
    await fetch(http, upstream.simple_url, PIP_ACCEPT, params={"a": "b"})
    await fetch(http, f"{upstream.url}/simple/alpha/")
    await fetch(http, f"{upstream.url}/pypi/alpha/json")
    async with http.head(upstream.simple_url):
        pass
    first = upstream.requests[0]
    assert (first.method, first.path, first.query, first.status) == ("GET", "/simple/", "a=b", 200)
    assert first.headers["Accept"] == PIP_ACCEPT
    assert upstream.count("/simple/") == 3
    assert upstream.count("/simple/", method="HEAD") == 1
    assert upstream.count("/pypi/") == 1
    upstream.reset_log()
    assert (upstream.requests, upstream.count()) == ([], 0)
    upstream.record = False
    await fetch(http, upstream.simple_url)
    assert (upstream.requests, upstream.total) == ([], 5)


# -- scale and concurrency -------------------------------------------------------------------


async def test_generated_index(http: aiohttp.ClientSession, make_upstream: MakeUpstream) -> None:
    upstream = make_upstream(
        FakeIndex.generate(2000, files_per_project=3, file_size=50_000, seed=7)
    )
    listing = json.loads((await fetch(http, upstream.simple_url))[1])
    serials = sorted(p["_last-serial"] for p in listing["projects"])
    assert serials == list(range(1, 2001))
    assert listing["projects"][3]["name"] == "Proj_000003"
    data = await page(http, upstream, "Proj_000003".lower().replace("_", "-"))
    assert [f["filename"] for f in data["files"]] == [
        "proj_000003-1.0-py3-none-any.whl",
        "proj_000003-1.0.tar.gz",
        "proj_000003-1.1-py3-none-any.whl",
    ]
    for f in data["files"]:
        body = (await fetch(http, f["url"], None))[1]
        assert hashlib.sha256(body).hexdigest() == f["hashes"]["sha256"]
        assert 50_000 < len(body) < 65_000  # padding plus the archive's own overhead


def test_generated_index_is_cheap_and_deterministic() -> None:
    start = time.monotonic()
    a = FakeIndex.generate(100_000, seed=1)
    assert time.monotonic() - start < 5
    b, c = FakeIndex.generate(1000, seed=1), FakeIndex.generate(1000, seed=2)
    assert a.project("proj-000010").releases["1.0"].files["proj_000010-1.0.tar.gz"]._content is None
    assert [p.serial for p in b.listed()] != [p.serial for p in c.listed()]
    fb = b.file("proj-000005", "proj_000005-1.0-py3-none-any.whl")
    fc = c.file("proj-000005", "proj_000005-1.0-py3-none-any.whl")
    assert fb.digests() == fc.digests()


async def test_listing_stays_consistent_under_concurrent_mutation(
    http: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    def mutate() -> None:
        for i in range(100):
            upstream.index.add_project(f"extra{i}", ["1.0"], sdist=False)

    writer = threading.Thread(target=mutate)
    writer.start()
    bodies = [await fetch(http, upstream.simple_url) for _ in range(30)]
    await asyncio.to_thread(writer.join)
    for response, body in bodies:
        data = json.loads(body)
        serial = data["meta"]["_last-serial"]
        assert int(response.headers["X-PyPI-Last-Serial"]) == serial
        assert max(p["_last-serial"] for p in data["projects"]) == serial


async def test_touch_control_endpoint(http: aiohttp.ClientSession, upstream: FakeUpstream) -> None:
    before = upstream.index.serial
    async with http.post(f"{upstream.url}/_fake/touch", json={"count": 3}) as response:
        result = await response.json()
    assert len(result["touched"]) == 3
    assert result["serial"] == upstream.index.serial == before + 6
    # Another offset, other projects (the benchmarks' rounds of "100 changed").
    async with http.post(f"{upstream.url}/_fake/touch", json={"count": 3, "offset": 1}) as response:
        again = await response.json()
    assert (len(again["touched"]), set(again["touched"]) & set(result["touched"])) == (3, set())
    async with http.get(f"{upstream.url}/_fake/state") as response:
        state = await response.json()
    # "requests" counts finished requests: the two touches, not this one.
    assert (state["serial"], state["projects"], state["requests"]) == (upstream.index.serial, 12, 2)


def test_standalone_server(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_upstream", "--port", "0", "--projects", "50"],
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        with xmlrpc.client.ServerProxy(f"{url}/pypi") as proxy:
            assert proxy.changelog_last_serial() == 50
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        if proc.stdout:
            proc.stdout.close()


def test_upstream_context_manager_frees_the_port() -> None:
    with FakeUpstream(FakeIndex()) as upstream:
        port = upstream.port
        assert port > 0
    with FakeUpstream(FakeIndex(), port=port) as again:
        assert again.url == f"http://127.0.0.1:{port}"


# -- real clients ----------------------------------------------------------------------------


def _client_env(tmp_path: Path) -> dict[str, str]:
    drop = ("PIP_", "UV_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        UV_NO_CONFIG="1",
        UV_CACHE_DIR=str(tmp_path / "uv-cache"),
        NO_PROXY="*",
    )
    return env


def _installed(target: Path) -> set[str]:
    return {p.name for p in target.glob("*.dist-info")}


@pytest.mark.slow
def test_pip_installs_from_the_fake(upstream: FakeUpstream, tmp_path: Path) -> None:
    pip = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-cache-dir",
        "--index-url",
        upstream.simple_url,
    ]
    env = _client_env(tmp_path)
    subprocess.run(
        [*pip, "--no-deps", "--target", str(tmp_path / "a"), "alpha"], env=env, check=True
    )
    init = (tmp_path / "a" / "alpha" / "__init__.py").read_text()
    subprocess.run(
        [*pip, "--target", str(tmp_path / "z"), "Zope.Interface_Thing"], env=env, check=True
    )
    assert _installed(tmp_path / "a") == {"alpha-2.0.dist-info"}
    assert init == '__version__ = "2.0"\n'
    # Resolved through .metadata: alpha 2.0 needs beta>=1.0, and 2.0b1 is a pre-release.
    assert _installed(tmp_path / "z") == {
        "zope_interface_thing-5.0.dist-info",
        "alpha-2.0.dist-info",
        "beta-1.1.dist-info",
    }
    assert upstream.count("/packages/", method="GET") >= 4
    assert any(r.path.endswith(".metadata") for r in upstream.requests)


@pytest.mark.slow
def test_uv_installs_from_the_fake(upstream: FakeUpstream, tmp_path: Path) -> None:
    uv = Path(sys.executable).with_name("uv")
    target = tmp_path / "t"
    subprocess.run(
        [str(uv), "pip", "install", "--index-url", upstream.simple_url, "--target", str(target),
         "--python", sys.executable, "Zope.Interface_Thing"],
        env=_client_env(tmp_path),
        check=True,
    )  # fmt: skip
    assert _installed(target) == {
        "zope_interface_thing-5.0.dist-info",
        "alpha-2.0.dist-info",
        "beta-1.1.dist-info",
    }
    assert all(r.headers.get("Accept", "").startswith(V1_JSON) for r in upstream.requests
               if r.path.startswith("/simple/"))  # fmt: skip
