"""Hostile upstream metadata: names and filenames that try to leave the tree, file URLs on other
hosts, enormous bodies, markup in every text field. Nothing is written outside the mirror
directory, nothing is fetched from anywhere but the upstream, every page escapes what it shows."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urldefrag, urljoin, urlsplit, urlunsplit

import pytest

from bandersnatch_clone.mirror import run
from tests.conftest import MakeUpstream
from tests.fake_upstream import FakeIndex, FakeUpstream, RawResponse
from tests.mirror_helpers import FAST_RETRY, make_config, mirror, project_page, write_config
from tests.test_crash_loop import MirrorServer
from tests.treecheck import check_tree

CLI = [sys.executable, "-m", "bandersnatch_clone.cli"]
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
MiB = 1024 * 1024
#: What the engine gives `Upstream(max_json_bytes=...)`: mirror.make_upstream leaves the default.
JSON_CAP = 64 * MiB


# -- helpers --------------------------------------------------------------------------------


def deep_mirror(tmp_path: Path) -> Path:
    """A mirror directory four levels below ``tmp_path``: escapes of up to four ``..`` still
    land inside ``tmp_path``, where `outside` sees them."""
    directory = tmp_path / "a" / "b" / "c" / "mirror"
    directory.parent.mkdir(parents=True)
    return directory


def outside(tmp_path: Path, directory: Path) -> set[str]:
    """Every path under ``tmp_path`` that is not inside the mirror ``directory``."""
    return {
        str(p.relative_to(tmp_path))
        for p in tmp_path.rglob("*")
        if p != directory and directory not in p.parents
    }


def all_names(directory: Path) -> Iterator[str]:
    for path in directory.rglob("*"):
        yield path.name


def page_body(name: str, serial: int, files: list[dict[str, Any]], **extra: Any) -> bytes:
    document = {
        "meta": {"api-version": "1.4", "_last-serial": serial},
        "name": name,
        "versions": extra.pop("versions", ["1.0"]),
        "files": files,
        **extra,
    }
    return json.dumps(document).encode()


def serve_page(
    upstream: FakeUpstream, name: str, files: list[dict[str, Any]], **extra: Any
) -> None:
    """Make ``/simple/<name>/`` answer with a hand-written PEP 691 page; the project must be in
    the index (so the listing names it), the page carries its serial."""
    serial = upstream.index.project(name).serial
    upstream.override(
        f"/simple/{name}/",
        RawResponse(
            page_body(name, serial, files, **extra),
            content_type=SIMPLE_JSON,
            headers={"X-PyPI-Last-Serial": str(serial)},
        ),
    )


def hosted_file(
    upstream: FakeUpstream, filename: str, data: bytes, **fields: Any
) -> dict[str, Any]:
    """A files entry for ``data`` served by the upstream under a URL ending in ``filename``
    (percent-encoded, as PyPI encodes it)."""
    digest = hashlib.sha256(data).hexdigest()
    folder = f"/packages/{digest[:2]}/{digest[2:4]}/{digest[4:]}"
    upstream.override(f"{folder}/{filename}", RawResponse(data))
    entry: dict[str, Any] = {
        "filename": filename,
        "url": f"{upstream.url}{folder}/{quote(filename, safe='')}",
        "hashes": {"sha256": digest},
        "size": len(data),
        "yanked": False,
        "core-metadata": False,
    }
    entry.update(fields)
    return entry


def new_project(upstream: FakeUpstream, name: str) -> None:
    upstream.index.add_project(name, [])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, b""


def client_url(page_url: str, href: str) -> str:
    """Where an installer fetches a link from, as pip does it (``_clean_link``): resolved against
    the page, the fragment dropped, each path segment unquoted then quoted again."""
    url, _ = urldefrag(urljoin(page_url, href))
    parts = urlsplit(url)
    path = "/".join(quote(unquote(segment)) for segment in parts.path.split("/"))
    return urlunsplit(parts._replace(path=path))


def broken_links(site: MirrorServer, name: str) -> list[str]:
    """Links of a project's pages (both forms) that a client cannot follow to the right bytes."""
    problems = []
    page_url = f"{site.url}/simple/{name}/"
    for accept in (SIMPLE_JSON, "text/html"):
        request = urllib.request.Request(page_url, headers={"Accept": accept})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        if accept == SIMPLE_JSON:
            links = [(f["url"], f["hashes"]["sha256"]) for f in json.loads(body)["files"]]
        else:
            hrefs = [anchor.get("href") or "" for anchor in Tags.parse(body).anchors]
            links = [(href.split("#")[0], href.partition("#sha256=")[2]) for href in hrefs]
        for href, sha256 in links:
            target = client_url(page_url, href)
            status, data = get(target)
            if status != 200 or hashlib.sha256(data).hexdigest() != sha256:
                problems.append(f"{accept}: {href!r} -> {target} HTTP {status}")
    return problems


class Tags(HTMLParser):
    """Every start tag of a page with its attributes, and the text of each anchor."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.anchors: list[dict[str, str | None]] = []
        self.anchor_text: list[str] = []
        self._in_anchor = False

    @classmethod
    def parse(cls, body: bytes) -> Tags:
        parser = cls()
        parser.feed(body.decode("utf-8"))
        parser.close()
        return parser

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "a":
            self.anchors.append(dict(attrs))
            self.anchor_text.append("")
            self._in_anchor = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._in_anchor = False

    def handle_data(self, data: str) -> None:
        if self._in_anchor:
            self.anchor_text[-1] += data

    def meta(self, name: str) -> str | None:
        for tag, attrs in self.tags:
            if tag == "meta" and attrs.get("name") == name:
                return attrs.get("content")
        return None


# -- names ------------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "../evil",
    "../../../../../../tmp/evil",
    "..",
    ".",
    "a/b",
    "a\\b",
    "/abs",
    "nul\x00name",
    "bell\x07",
    "esc\x1b[31mred",
    "new\nline",
    "<script>alert(1)</script>",
    " ",
]


def _listing_with(upstream: FakeUpstream, extra: list[str]) -> None:
    """The real listing plus rows for ``extra`` names (a real project's serial when the name
    spells one, else the newest serial)."""
    index = upstream.index
    rows = [{"name": p.name, "_last-serial": p.serial} for p in index.listed()]
    for name in extra:
        known = index.get(name) if name.isascii() and name.isalnum() else None
        rows.append({"name": name, "_last-serial": known.serial if known else index.serial})
    body = json.dumps(
        {"meta": {"api-version": "1.4", "_last-serial": index.serial}, "projects": rows}
    )
    upstream.override("/simple/", RawResponse(body.encode(), content_type=SIMPLE_JSON))


async def test_hostile_project_names_never_reach_the_disk(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = deep_mirror(tmp_path)
    # Duplicates of a real name too: three spellings of one project in one listing.
    _listing_with(upstream, [*HOSTILE_NAMES, "ALPHA", "Alpha"])
    before = outside(tmp_path, directory)
    outcome = await run(make_config(directory, upstream), retry=FAST_RETRY)
    project_dirs = {p.name for p in (directory / "web/simple").iterdir() if p.is_dir()}
    listed = {p.normalized for p in upstream.index.listed()}
    pages_fetched = {
        r.path.split("/")[2]
        for r in upstream.requests
        if r.path.startswith("/simple/") and r.path != "/simple/"
    }
    assert outside(tmp_path, directory) == before
    # Not project names (PEP 508): skipped with a warning, never asked for, never written.
    assert (outcome.exit_code, outcome.result.failed) == (0, {})
    assert pages_fetched == listed
    assert project_dirs == listed
    assert check_tree(directory) == []


def test_hostile_project_names_do_not_reach_the_terminal_raw(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    _listing_with(upstream, ["esc\x1b]0;owned\x07", "nul\x00name", "cr\rover"])
    config = write_config(tmp_path / "m.toml", tmp_path / "mirror", upstream)
    result = subprocess.run(
        [*CLI, "-c", str(config), "mirror"], capture_output=True, timeout=60, check=False
    )
    controls = sorted({chr(b) for b in result.stderr if b < 0x20 and b not in b"\n\t"})
    assert (result.returncode, controls) == (0, [])


# -- filenames ------------------------------------------------------------------------------

#: Filenames (and file URLs) that try to leave web/packages: every one must be refused.
ESCAPING_FILES = [
    # Seven levels up from web/packages/<aa>/<bb>/<rest>/ is inside tmp_path: `outside` sees it.
    ("../" * 7 + "escape1.whl", None),
    ("a/b.whl", None),
    ("a\\b.whl", None),
    ("nul\x00.whl", None),
    ("ctl\x1b.whl", None),
    ("..", None),
    # A plain filename, but a URL whose path climbs out of /packages/.
    ("escape2.whl", "/packages/" + "../" * 4 + "escape2.whl"),
    ("escape3.whl", "/packages/" + "%2E%2E/" * 4 + "escape3.whl"),
    ("escape4.whl", "/packages/aa/" + "..%2F" * 4 + "escape4.whl"),
]


async def test_filenames_that_leave_the_tree_are_refused(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = deep_mirror(tmp_path)
    new_project(upstream, "evil")
    files = []
    for filename, path in ESCAPING_FILES:
        entry = hosted_file(upstream, filename, b"payload " + filename.encode())
        if path is not None:
            entry["url"] = upstream.url + path
        files.append(entry)
    good = hosted_file(upstream, "evil-1.0-py3-none-any.whl", b"a good wheel")
    serve_page(upstream, "evil", [*files, good])
    before = outside(tmp_path, directory)
    outcome = await mirror(make_config(directory, upstream))
    page = project_page(directory, "evil")
    names = set(all_names(directory))
    assert outside(tmp_path, directory) == before
    assert [f["filename"] for f in page["files"]] == ["evil-1.0-py3-none-any.whl"]
    assert not any(n.startswith(("escape", "payload")) or not n.isprintable() for n in names)
    assert (outcome.exit_code, check_tree(directory)) == (0, [])


#: Filenames that are legal path segments but mean something in a URL or in HTML.
AWKWARD_FILENAMES = [
    "space in-1.0.tar.gz",
    "plus+local-1.0.tar.gz",
    "quote'and\"-1.0.tar.gz",
    "amp&lt;-1.0.tar.gz",
    "unicod\u00e9-1.0.tar.gz",
    "<img src=x onerror=alert(1)>-1.0.tar.gz",
    "pct%41-1.0.tar.gz",
    "hash#frag-1.0.tar.gz",
    "query?x=1-1.0.tar.gz",
]


@pytest.mark.parametrize("filename", AWKWARD_FILENAMES)
async def test_awkward_filenames_are_linked_so_clients_find_them(
    upstream: FakeUpstream, tmp_path: Path, filename: str
) -> None:
    directory = tmp_path / "mirror"
    new_project(upstream, "awkward")
    serve_page(upstream, "awkward", [hosted_file(upstream, filename, b"awkward bytes")])
    outcome = await mirror(make_config(directory, upstream))
    page = project_page(directory, "awkward")
    with MirrorServer(directory / "web") as site:
        broken = await asyncio.to_thread(broken_links, site, "awkward")
    assert (outcome.exit_code, [f["filename"] for f in page["files"]]) == (0, [filename])
    assert broken == []


async def test_percent_encoded_links_pass_the_tree_checker(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    new_project(upstream, "awkward")
    serve_page(upstream, "awkward", [hosted_file(upstream, AWKWARD_FILENAMES[0], b"bytes")])
    outcome = await mirror(make_config(directory, upstream))
    assert (outcome.exit_code, check_tree(directory)) == (0, [])


# -- hosts ----------------------------------------------------------------------------------


@pytest.fixture
def elsewhere() -> Iterator[FakeUpstream]:
    """Another server on another loopback address (another host): must never be asked."""
    server = FakeUpstream(FakeIndex(), host="127.0.0.2").start()
    yield server
    server.stop()


def _foreign_urls(upstream: FakeUpstream, elsewhere: FakeUpstream) -> dict[str, str]:
    path = "/packages/aa/bb/cc/foreign-1.0.tar.gz"
    return {
        "other-host": f"{elsewhere.url}{path}",
        "scheme-relative": f"//127.0.0.2:{elsewhere.port}{path}",
        "other-name-same-server": f"http://localhost:{upstream.port}{path}",
        "userinfo": f"http://127.0.0.1:{upstream.port}@127.0.0.2:{elsewhere.port}{path}",
        "file": "file:///etc/passwd",
        "ftp": f"ftp://127.0.0.1{path}",
        "javascript": "javascript:alert(1)",
        "data": "data:application/octet-stream;base64,AAAA",
    }


async def test_file_urls_on_other_hosts_are_never_fetched(
    upstream: FakeUpstream, elsewhere: FakeUpstream, tmp_path: Path
) -> None:
    directory = deep_mirror(tmp_path)
    urls = _foreign_urls(upstream, elsewhere)
    for i, url in enumerate(urls.values()):
        name = f"foreign{i}"
        new_project(upstream, name)
        entry = hosted_file(upstream, "foreign-1.0.tar.gz", b"foreign bytes")
        serve_page(upstream, name, [{**entry, "url": url}])
    # A file on the upstream that redirects to the other host.
    new_project(upstream, "redirected")
    entry = hosted_file(upstream, "redirected-1.0.tar.gz", b"redirected")
    upstream.override(
        unquote(entry["url"].removeprefix(upstream.url)),
        RawResponse(
            status=302, headers={"Location": f"{elsewhere.url}/packages/aa/bb/cc/x.tar.gz"}
        ),
    )
    serve_page(upstream, "redirected", [entry])
    before = outside(tmp_path, directory)
    outcome = await mirror(make_config(directory, upstream))
    refused = {f"foreign{i}" for i in range(len(urls))} | {"redirected"}
    assert elsewhere.total == 0
    assert set(outcome.result.failed) == refused
    assert outside(tmp_path, directory) == before
    assert check_tree(directory) == []


async def test_file_urls_on_another_port_of_the_upstream_host_are_never_fetched(
    upstream: FakeUpstream, make_upstream: MakeUpstream, tmp_path: Path
) -> None:
    other_port = make_upstream(FakeIndex())
    new_project(upstream, "porty")
    entry = hosted_file(upstream, "porty-1.0.tar.gz", b"porty")
    serve_page(
        upstream, "porty", [{**entry, "url": other_port.url + "/packages/x/porty-1.0.tar.gz"}]
    )
    outcome = await mirror(make_config(tmp_path / "mirror", upstream))
    assert (other_port.total, sorted(outcome.result.failed)) == (0, ["porty"])


# -- sizes ----------------------------------------------------------------------------------


def _padded_page(name: str, serial: int, padding: int) -> RawResponse:
    """A valid page padded with ``padding`` bytes of JSON whitespace: only its size is wrong."""
    head = page_body(name, serial, [])[:-1] + b","
    tail = b'"padding":true}'
    return RawResponse(
        head,
        content_type=SIMPLE_JSON,
        filler=b" " * MiB,
        repeat=padding // MiB,
        suffix=tail,
        length=None,
    )


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
async def test_enormous_project_pages_are_refused_at_the_cap(
    upstream: FakeUpstream, tmp_path: Path, declared: bool
) -> None:
    directory = tmp_path / "mirror"
    new_project(upstream, "huge")
    serial = upstream.index.project("huge").serial
    raw = _padded_page("huge", serial, 2 * JSON_CAP)
    if declared:
        raw = RawResponse(raw.prefix, content_type=SIMPLE_JSON, filler=raw.filler,
                          repeat=raw.repeat, suffix=raw.suffix)  # fmt: skip
    upstream.override("/simple/huge/", raw)
    outcome = await mirror(make_config(directory, upstream))
    sent = upstream.sent.get("/simple/huge/", 0)
    assert sorted(outcome.result.failed) == ["huge"]
    assert "exceeds" in outcome.result.failed["huge"]
    # The mirror hung up at the cap instead of reading on (socket and transport buffers on
    # loopback take up to some tens of MiB more).
    assert sent < JSON_CAP + 32 * MiB
    assert check_tree(directory) == []


async def test_a_file_body_far_larger_than_advertised_is_cut_off(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    new_project(upstream, "bloat")
    entry = hosted_file(upstream, "bloat-1.0.tar.gz", b"small")
    path = unquote(entry["url"].removeprefix(upstream.url))
    bloat = RawResponse(filler=b"\0" * MiB, repeat=128, length=None)
    upstream.override(path, bloat)
    serve_page(upstream, "bloat", [entry])
    outcome = await mirror(make_config(directory, upstream))
    sent = upstream.sent.get(path, 0)
    temp_files = list((directory / ".tmp").glob("*")) if (directory / ".tmp").exists() else []
    assert sorted(outcome.result.failed) == ["bloat"]
    # Cut off at the advertised size; loopback buffers take some tens of MiB more at most.
    assert (sent < 48 * MiB, temp_files) == (True, [])


# -- markup -----------------------------------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"
FIELDS = {
    "yanked": f'"><{SCRIPT}',
    "requires-python": f">=3.8{SCRIPT}",
    "status-reason": f"</title>{SCRIPT}<title>",
    "filename": "x\"'><svg onload=alert(1)>&amp;-1.0.tar.gz",
}
PAGE_TAGS = {"html", "head", "meta", "title", "body", "h1", "a", "br"}
ANCHOR_ATTRIBUTES = {
    "href",
    "data-requires-python",
    "data-yanked",
    "data-core-metadata",
    "data-dist-info-metadata",
    "data-provenance",
}


async def test_markup_in_every_text_field_is_escaped_and_round_trips(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    directory = tmp_path / "mirror"
    new_project(upstream, "markup")
    entry = hosted_file(
        upstream,
        FIELDS["filename"],
        b"markup bytes",
        yanked=FIELDS["yanked"],
        **{
            "requires-python": FIELDS["requires-python"],
            "upload-time": SCRIPT,
            "provenance": f"{upstream.url}/integrity/{SCRIPT}",
        },
    )
    entry["hashes"][SCRIPT] = "00"
    serve_page(
        upstream,
        "markup",
        [entry],
        versions=[SCRIPT, "1.0"],
        **{"project-status": {"status": "deprecated", "reason": FIELDS["status-reason"]}},
    )
    outcome = await mirror(make_config(directory, upstream))
    html = Tags.parse((directory / "web/simple/markup/index.html").read_bytes())
    page = project_page(directory, "markup")
    (anchor,) = html.anchors
    (f,) = page["files"]
    assert outcome.exit_code == 0
    assert {tag for tag, _ in html.tags} <= PAGE_TAGS
    assert set(anchor) <= ANCHOR_ATTRIBUTES
    assert (
        anchor.get("data-yanked"),
        anchor.get("data-requires-python"),
        html.meta("pypi:project-status-reason"),
        html.anchor_text,
        unquote((anchor.get("href") or "").split("#")[0].rsplit("/", 1)[1]),
        anchor.get("data-provenance"),
    ) == (
        FIELDS["yanked"],
        FIELDS["requires-python"],
        FIELDS["status-reason"],
        [FIELDS["filename"]],
        FIELDS["filename"],
        entry["provenance"],
    )
    assert (
        f["yanked"],
        f["requires-python"],
        page["project-status"]["reason"],
        f["filename"],
        "upload-time" in f,
        set(f["hashes"]),
        page["versions"],
    ) == (
        FIELDS["yanked"],
        FIELDS["requires-python"],
        FIELDS["status-reason"],
        FIELDS["filename"],
        False,
        {"sha256"},
        ["1.0", SCRIPT],
    )
