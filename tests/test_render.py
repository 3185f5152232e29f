"""Tests for render.py: the pages are parsed back (html.parser, json) and compared with the PEPs."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from typing import Any

import pytest
from packaging.utils import NormalizedName

from bandersnatch_clone.model import DistFile, ProjectDetail, ProjectStatus
from bandersnatch_clone.render import (
    PAGE_TYPES,
    project_pages,
    render_project_html,
    render_project_json,
    render_root_html,
    render_root_json,
    root_pages,
    sort_versions,
)

SHA_SDIST = "a" * 64
SHA_WHEEL = "b" * 64
SHA_META = "c" * 64
# Something that breaks out of an attribute, a tag and an entity if any escaping is missed.
HOSTILE = "x\" onmouseover='y' <script>&amp;</script>"
# The page may only ever contain these tags: anything else came from unescaped input.
PAGE_TAGS = {"html", "head", "meta", "title", "body", "h1", "a", "br"}


@dataclass
class Page:
    """What an HTML page says, as a browser-grade parser reads it (entities decoded)."""

    tags: list[str] = field(default_factory=list)
    metas: dict[str, str | None] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    anchors: list[dict[str, str | None]] = field(default_factory=list)
    anchor_texts: list[str] = field(default_factory=list)


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._open: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.page.tags.append(tag)
        values = dict(attrs)
        if tag == "meta":
            self.page.metas[values["name"] or ""] = values["content"]
        if tag == "a":
            self.page.anchors.append(values)
        if tag in ("a", "title", "h1"):
            self._open, self._text = tag, []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open == "a":
            self.page.anchor_texts.append("".join(self._text))
        elif tag == self._open:
            self.page.texts[tag] = "".join(self._text)
        if tag == self._open:
            self._open = None


def parse(body: bytes) -> Page:
    parser = _PageParser()
    parser.feed(body.decode("utf-8"))
    parser.close()
    return parser.page


WHEEL = DistFile(
    filename="holygrail-1.0-py3-none-any.whl",
    url="../../packages/bb/bb/bbbb/holygrail-1.0-py3-none-any.whl",
    hashes={"sha256": SHA_WHEEL},
)
PROJECT = ProjectDetail(name=NormalizedName("holygrail"), serial=42, versions=("1.0",))


def make_file(**changes: Any) -> DistFile:
    return replace(WHEEL, **changes)


def make_detail(*files: DistFile, **changes: Any) -> ProjectDetail:
    return replace(PROJECT, files=files or (WHEEL,), **changes)


def anchor(file: DistFile) -> dict[str, str | None]:
    return parse(render_project_html(make_detail(file))).anchors[0]


def file_json(file: DistFile) -> dict[str, object]:
    files: list[dict[str, object]] = json.loads(render_project_json(make_detail(file)))["files"]
    return files[0]


# --- golden pages ---------------------------------------------------------------------------

GOLDEN_DETAIL = ProjectDetail(
    name=NormalizedName("holygrail"),
    serial=42,
    versions=("1.0", "0.9"),
    files=(
        DistFile(
            filename="holygrail-1.0.tar.gz",
            url="../../packages/aa/aa/aaaa/holygrail-1.0.tar.gz",
            hashes={"sha256": SHA_SDIST},
            requires_python=">=3.8",
            yanked="bad build",
            size=2048,
        ),
        DistFile(
            filename="holygrail-1.0-py3-none-any.whl",
            url="../../packages/bb/bb/bbbb/holygrail-1.0-py3-none-any.whl",
            hashes={"sha256": SHA_WHEEL},
            requires_python=">=3.8",
            size=1024,
            upload_time="2024-01-02T03:04:05.123456Z",
            core_metadata={"sha256": SHA_META},
            provenance="https://pypi.org/integrity/holygrail/1.0/w.whl/provenance",
        ),
    ),
)

GOLDEN_HTML = (
    "<!DOCTYPE html>\n"
    "<html>\n"
    "  <head>\n"
    '    <meta name="pypi:repository-version" content="1.4">\n'
    "    <title>Links for holygrail</title>\n"
    "  </head>\n"
    "  <body>\n"
    "    <h1>Links for holygrail</h1>\n"
    f'    <a href="../../packages/aa/aa/aaaa/holygrail-1.0.tar.gz#sha256={SHA_SDIST}"'
    ' data-requires-python="&gt;=3.8" data-yanked="bad build">holygrail-1.0.tar.gz</a><br>\n'
    f'    <a href="../../packages/bb/bb/bbbb/holygrail-1.0-py3-none-any.whl#sha256={SHA_WHEEL}"'
    f' data-requires-python="&gt;=3.8" data-core-metadata="sha256={SHA_META}"'
    f' data-dist-info-metadata="sha256={SHA_META}"'
    ' data-provenance="https://pypi.org/integrity/holygrail/1.0/w.whl/provenance">'
    "holygrail-1.0-py3-none-any.whl</a><br>\n"
    "  </body>\n"
    "</html>\n"
    "<!--SERIAL 42-->\n"
).encode()

GOLDEN_JSON = (
    '{"meta":{"api-version":"1.4","_last-serial":42},"name":"holygrail","versions":["0.9","1.0"],'
    '"files":['
    '{"filename":"holygrail-1.0.tar.gz","url":"../../packages/aa/aa/aaaa/holygrail-1.0.tar.gz",'
    f'"hashes":{{"sha256":"{SHA_SDIST}"}},"requires-python":">=3.8","yanked":"bad build",'
    '"core-metadata":false,"size":2048},'
    '{"filename":"holygrail-1.0-py3-none-any.whl",'
    '"url":"../../packages/bb/bb/bbbb/holygrail-1.0-py3-none-any.whl",'
    f'"hashes":{{"sha256":"{SHA_WHEEL}"}},"requires-python":">=3.8","yanked":false,'
    f'"core-metadata":{{"sha256":"{SHA_META}"}},"size":1024,'
    '"upload-time":"2024-01-02T03:04:05.123456Z",'
    '"provenance":"https://pypi.org/integrity/holygrail/1.0/w.whl/provenance"}'
    "]}"
).encode()


def test_golden_project_html() -> None:
    assert render_project_html(GOLDEN_DETAIL) == GOLDEN_HTML


def test_golden_project_json() -> None:
    assert render_project_json(GOLDEN_DETAIL) == GOLDEN_JSON


def test_v1_html_is_the_same_bytes_as_index_html() -> None:
    pages = project_pages(GOLDEN_DETAIL)
    assert pages["index.v1_html"] == pages["index.html"] == GOLDEN_HTML


def test_project_pages_json_is_the_json_page() -> None:
    assert project_pages(GOLDEN_DETAIL)["index.v1_json"] == GOLDEN_JSON


def test_rendering_is_deterministic() -> None:
    assert render_project_json(GOLDEN_DETAIL) == render_project_json(GOLDEN_DETAIL)


# --- page structure (parsed) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("probe", "expected"),
    [
        (lambda p: p.metas["pypi:repository-version"], "1.4"),
        (lambda p: p.texts["title"], "Links for holygrail"),
        (lambda p: p.texts["h1"], "Links for holygrail"),
        (lambda p: p.anchor_texts, ["holygrail-1.0.tar.gz", "holygrail-1.0-py3-none-any.whl"]),
        (lambda p: set(p.tags) <= PAGE_TAGS, True),
        (lambda p: "pypi:project-status" in p.metas, False),
    ],
    ids=["repository-version", "title", "h1", "one-anchor-per-file", "tags", "no-status"],
)
def test_project_html_structure(probe: Callable[[Page], object], expected: object) -> None:
    assert probe(parse(GOLDEN_HTML)) == expected


def test_html_starts_with_doctype() -> None:
    assert GOLDEN_HTML.startswith(b"<!DOCTYPE html>\n")


@pytest.mark.parametrize(
    ("probe", "expected"),
    [
        (lambda d: d["meta"], {"api-version": "1.4", "_last-serial": 42}),
        (lambda d: type(d["meta"]["_last-serial"]), int),
        (lambda d: d["name"], "holygrail"),
        (lambda d: [f["filename"] for f in d["files"]], [f.filename for f in GOLDEN_DETAIL.files]),
        (lambda d: "project-status" in d, False),
    ],
    ids=["meta", "serial-is-int", "name", "files-in-given-order", "no-status"],
)
def test_project_json_structure(probe: Callable[[Any], object], expected: object) -> None:
    assert probe(json.loads(GOLDEN_JSON)) == expected


# --- per-file attributes and keys -----------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "attribute", "expected"),
    [
        (make_file(), "href", f"{make_file().url}#sha256={SHA_WHEEL}"),
        (make_file(url="../x.whl#md5=00"), "href", f"../x.whl#sha256={SHA_WHEEL}"),
        (make_file(hashes={}), "href", make_file().url),
        (make_file(hashes={"sha512": "ee", "md5": "ff"}), "href", f"{make_file().url}#sha512=ee"),
        (make_file(), "data-requires-python", None),
        (make_file(requires_python=""), "data-requires-python", None),
        (make_file(requires_python=">=3.8,<4"), "data-requires-python", ">=3.8,<4"),
        (make_file(), "data-yanked", None),
        (make_file(yanked=""), "data-yanked", ""),
        (make_file(yanked="broken"), "data-yanked", "broken"),
        (make_file(), "data-core-metadata", None),
        (make_file(), "data-dist-info-metadata", None),
        (make_file(core_metadata={}), "data-core-metadata", "true"),
        (make_file(core_metadata={}), "data-dist-info-metadata", "true"),
        (make_file(core_metadata={"sha256": SHA_META}), "data-core-metadata", f"sha256={SHA_META}"),
        (
            make_file(core_metadata={"sha256": SHA_META}),
            "data-dist-info-metadata",
            f"sha256={SHA_META}",
        ),
        (make_file(core_metadata={"sha512": "dd"}), "data-core-metadata", "sha512=dd"),
        (make_file(), "data-provenance", None),
        (make_file(provenance="https://p.example/x"), "data-provenance", "https://p.example/x"),
    ],
    ids=[
        "href-sha256-fragment",
        "href-old-fragment-replaced",
        "href-no-hash-no-fragment",
        "href-strongest-other-hash",
        "requires-python-absent",
        "requires-python-empty-absent",
        "requires-python",
        "not-yanked",
        "yanked-without-reason",
        "yanked-with-reason",
        "core-metadata-absent",
        "dist-info-metadata-absent",
        "core-metadata-true",
        "dist-info-metadata-true",
        "core-metadata-hash",
        "dist-info-metadata-hash",
        "core-metadata-other-hash",
        "provenance-absent",
        "provenance",
    ],
)
def test_html_file_attribute(file: DistFile, attribute: str, expected: str | None) -> None:
    assert anchor(file).get(attribute) == expected


def test_yanked_without_reason_is_a_present_empty_attribute() -> None:
    assert b' data-yanked=""' in render_project_html(make_detail(make_file(yanked="")))


def test_requires_python_is_entity_encoded_in_the_raw_page() -> None:
    raw = render_project_html(make_detail(make_file(requires_python=">=3.8,<4")))
    assert b'data-requires-python="&gt;=3.8,&lt;4"' in raw


@pytest.mark.parametrize(
    ("file", "key", "expected"),
    [
        (make_file(), "hashes", {"sha256": SHA_WHEEL}),
        (make_file(hashes={}), "hashes", {}),
        (make_file(), "requires-python", "absent"),
        (make_file(requires_python=">=3.8"), "requires-python", ">=3.8"),
        (make_file(), "yanked", False),
        (make_file(yanked=""), "yanked", True),
        (make_file(yanked="broken"), "yanked", "broken"),
        (make_file(), "core-metadata", False),
        (make_file(core_metadata={}), "core-metadata", True),
        (make_file(core_metadata={"sha256": SHA_META}), "core-metadata", {"sha256": SHA_META}),
        (make_file(), "size", "absent"),
        (make_file(size=0), "size", 0),
        (make_file(), "upload-time", "absent"),
        (make_file(upload_time="2024-01-02T03:04:05Z"), "upload-time", "2024-01-02T03:04:05Z"),
        (make_file(), "provenance", "absent"),
        (make_file(provenance="https://p.example/x"), "provenance", "https://p.example/x"),
    ],
    ids=[
        "hashes",
        "hashes-empty-but-present",
        "requires-python-omitted",
        "requires-python",
        "not-yanked-false",
        "yanked-without-reason-true",
        "yanked-reason",
        "core-metadata-false",
        "core-metadata-true",
        "core-metadata-hashes",
        "size-omitted",
        "size-zero",
        "upload-time-omitted",
        "upload-time",
        "provenance-omitted",
        "provenance",
    ],
)
def test_json_file_key(file: DistFile, key: str, expected: object) -> None:
    assert file_json(file).get(key, "absent") == expected


@pytest.mark.parametrize(
    "file",
    [
        make_file(),
        make_file(core_metadata={}),
        make_file(core_metadata={"sha256": SHA_META}),
        make_file(yanked="", requires_python=">=3", size=1, provenance="https://p.example/x"),
    ],
    ids=["no-metadata", "metadata-true", "metadata-hash", "everything"],
)
def test_json_never_has_dist_info_metadata(file: DistFile) -> None:
    # PEP 714: any use of dist-info-metadata in JSON makes pip >= 22.3, < 23.2 hard fail.
    assert b"dist-info-metadata" not in render_project_json(make_detail(file))


# --- escaping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "read_back"),
    [
        (make_file(filename=HOSTILE), lambda p: p.anchor_texts[0]),
        (make_file(requires_python=HOSTILE), lambda p: p.anchors[0]["data-requires-python"]),
        (make_file(yanked=HOSTILE), lambda p: p.anchors[0]["data-yanked"]),
        (make_file(url=HOSTILE, hashes={}), lambda p: p.anchors[0]["href"]),
        (make_file(provenance=HOSTILE), lambda p: p.anchors[0]["data-provenance"]),
        (
            make_file(core_metadata={"sha256": HOSTILE}),
            lambda p: p.anchors[0]["data-core-metadata"],
        ),
    ],
    ids=["filename", "requires-python", "yank-reason", "url", "provenance", "metadata-hash"],
)
def test_hostile_text_reads_back_exactly(
    file: DistFile, read_back: Callable[[Page], str | None]
) -> None:
    value = read_back(parse(render_project_html(make_detail(file))))
    assert value in (HOSTILE, f"sha256={HOSTILE}")


@pytest.mark.parametrize(
    "detail",
    [
        make_detail(make_file(filename=HOSTILE)),
        make_detail(make_file(requires_python=HOSTILE)),
        make_detail(make_file(yanked=HOSTILE)),
        make_detail(make_file(url=HOSTILE)),
        make_detail(make_file(hashes={"sha256": HOSTILE})),
        make_detail(make_file(provenance=HOSTILE)),
        make_detail(make_file(core_metadata={"sha256": HOSTILE})),
        make_detail(name=NormalizedName(HOSTILE)),
        make_detail(status=ProjectStatus.ARCHIVED, status_reason=HOSTILE),
    ],
    ids=[
        "filename",
        "requires-python",
        "yank-reason",
        "url",
        "hash",
        "provenance",
        "metadata-hash",
        "name",
        "status-reason",
    ],
)
def test_nothing_unescaped_reaches_the_page(detail: ProjectDetail) -> None:
    raw = render_project_html(detail)
    assert not any(bad in raw for bad in (b"<script", b"'y'", b'x"', b"&amp;</"))


def test_hostile_input_adds_no_tags() -> None:
    detail = make_detail(
        make_file(filename=HOSTILE, requires_python=HOSTILE, yanked=HOSTILE, url=HOSTILE),
        name=NormalizedName(HOSTILE),
        status=ProjectStatus.DEPRECATED,
        status_reason=HOSTILE,
    )
    assert set(parse(render_project_html(detail)).tags) <= PAGE_TAGS


def test_hostile_json_round_trips() -> None:
    detail = make_detail(make_file(filename=HOSTILE, yanked=HOSTILE, requires_python=HOSTILE))
    assert file_json(detail.files[0]) == {
        "filename": HOSTILE,
        "url": make_file().url,
        "hashes": {"sha256": SHA_WHEEL},
        "requires-python": HOSTILE,
        "yanked": HOSTILE,
        "core-metadata": False,
    }


# --- unicode --------------------------------------------------------------------------------

UNICODE = "Zurückgezogen: ☃ 名前 \U0001f40d"


@pytest.mark.parametrize(
    "read_back",
    [
        lambda: parse(render_project_html(make_detail(make_file(yanked=UNICODE)))).anchors[0][
            "data-yanked"
        ],
        lambda: file_json(make_file(yanked=UNICODE))["yanked"],
        lambda: parse(render_project_html(make_detail(make_file(filename=UNICODE)))).anchor_texts[
            0
        ],
        lambda: json.loads(render_root_json([(UNICODE, 1)], 1))["projects"][0]["name"],
        lambda: parse(render_root_html([UNICODE])).anchor_texts[0],
    ],
    ids=["html-yank-reason", "json-yank-reason", "html-filename", "root-json", "root-html"],
)
def test_unicode_round_trips(read_back: Callable[[], object]) -> None:
    assert read_back() == UNICODE


def test_json_is_seven_bit() -> None:
    assert render_project_json(make_detail(make_file(yanked=UNICODE))).isascii()


def test_html_is_utf8() -> None:
    assert UNICODE.encode() in render_project_html(make_detail(make_file(yanked=UNICODE)))


@pytest.mark.parametrize(
    "render",
    [
        lambda: render_project_html(make_detail(make_file(yanked="\ud800"))),
        lambda: render_project_json(make_detail(make_file(yanked="\ud800"))),
        lambda: render_root_html(["\ud800"]),
        lambda: render_root_json([("\ud800", 1)], 1),
    ],
    ids=["project-html", "project-json", "root-html", "root-json"],
)
def test_lone_surrogate_does_not_fail_rendering(render: Callable[[], bytes]) -> None:
    assert isinstance(render(), bytes)


# --- versions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        (["2.0", "1.10", "2.0rc1", "1.0"], ["1.0", "1.10", "2.0rc1", "2.0"]),
        (["1.0.post1", "1.0", "1.0.dev0", "1.0a1"], ["1.0.dev0", "1.0a1", "1.0", "1.0.post1"]),
        (["1.0", "not-a-version", "0.1", "also bad"], ["0.1", "1.0", "not-a-version", "also bad"]),
        (["zz", "aa"], ["zz", "aa"]),
        (["1.0", "1.0.0"], ["1.0", "1.0.0"]),
        (["1.0.0", "1.0"], ["1.0.0", "1.0"]),
        (["1.0", "2.0", "1.0"], ["1.0", "2.0"]),
        ([], []),
    ],
    ids=[
        "pep440-order",
        "pre-dev-post",
        "invalid-last",
        "invalid-keep-input-order",
        "equal-versions-stable",
        "equal-versions-stable-reversed",
        "duplicates-dropped",
        "empty",
    ],
)
def test_sort_versions(versions: list[str], expected: list[str]) -> None:
    assert sort_versions(versions) == expected


def test_json_versions_are_sorted() -> None:
    detail = make_detail(versions=("2.0", "1.10", "bad", "2.0rc1", "1.0"))
    assert json.loads(render_project_json(detail))["versions"] == [
        "1.0",
        "1.10",
        "2.0rc1",
        "2.0",
        "bad",
    ]


# --- serials --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        lambda: json.loads(render_project_json(make_detail(serial=7)))["meta"]["_last-serial"],
        lambda: json.loads(render_root_json([("a", 5)], 7))["meta"]["_last-serial"],
        lambda: json.loads(render_root_json([("a", 7)], 9))["projects"][0]["_last-serial"],
    ],
    ids=["project", "root", "root-project"],
)
def test_last_serial_is_an_int(body: Callable[[], object]) -> None:
    value = body()
    assert (type(value), value) == (int, 7)


def test_serial_comment_in_html() -> None:
    assert render_project_html(make_detail(serial=7)).endswith(b"<!--SERIAL 7-->\n")


# --- project status (PEP 792) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (None, None, {}),
        (None, "ignored without a status", {}),
        (ProjectStatus.ACTIVE, None, {"pypi:project-status": "active"}),
        (ProjectStatus.ARCHIVED, None, {"pypi:project-status": "archived"}),
        (
            ProjectStatus.DEPRECATED,
            "use holygrail2",
            {"pypi:project-status": "deprecated", "pypi:project-status-reason": "use holygrail2"},
        ),
        (
            ProjectStatus.QUARANTINED,
            "the project is haunted",
            {
                "pypi:project-status": "quarantined",
                "pypi:project-status-reason": "the project is haunted",
            },
        ),
    ],
    ids=["absent", "reason-without-status", "active", "archived", "deprecated", "quarantined"],
)
def test_html_status_meta(
    status: ProjectStatus | None, reason: str | None, expected: dict[str, str]
) -> None:
    metas = parse(render_project_html(make_detail(status=status, status_reason=reason))).metas
    assert {k: v for k, v in metas.items() if k.startswith("pypi:project-status")} == expected


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (None, None, "absent"),
        (None, "ignored without a status", "absent"),
        (ProjectStatus.ACTIVE, None, {"status": "active"}),
        (ProjectStatus.ARCHIVED, "read only", {"status": "archived", "reason": "read only"}),
        (ProjectStatus.QUARANTINED, "haunted", {"status": "quarantined", "reason": "haunted"}),
    ],
    ids=["absent", "reason-without-status", "active", "archived", "quarantined"],
)
def test_json_project_status(
    status: ProjectStatus | None, reason: str | None, expected: object
) -> None:
    body = json.loads(render_project_json(make_detail(status=status, status_reason=reason)))
    assert body.get("project-status", "absent") == expected


@pytest.mark.parametrize(
    ("status", "count"),
    [
        (None, 2),
        (ProjectStatus.ACTIVE, 2),
        (ProjectStatus.ARCHIVED, 2),
        (ProjectStatus.DEPRECATED, 2),
        (ProjectStatus.QUARANTINED, 0),
    ],
    ids=["none", "active", "archived", "deprecated", "quarantined"],
)
def test_html_offers_files_unless_quarantined(status: ProjectStatus | None, count: int) -> None:
    detail = make_detail(make_file(), make_file(filename="b.whl"), status=status)
    assert len(parse(render_project_html(detail)).anchors) == count


@pytest.mark.parametrize(
    ("status", "count"),
    [(None, 2), (ProjectStatus.ARCHIVED, 2), (ProjectStatus.QUARANTINED, 0)],
    ids=["none", "archived", "quarantined"],
)
def test_json_offers_files_unless_quarantined(status: ProjectStatus | None, count: int) -> None:
    detail = make_detail(make_file(), make_file(filename="b.whl"), status=status)
    assert len(json.loads(render_project_json(detail))["files"]) == count


def test_quarantined_json_keeps_versions() -> None:
    detail = make_detail(status=ProjectStatus.QUARANTINED, versions=("1.0", "2.0"))
    assert json.loads(render_project_json(detail))["versions"] == ["1.0", "2.0"]


# --- root index -----------------------------------------------------------------------------

ROOT_NAMES = ["Zope.Interface", "Django", "holy_grail", "a"]


@pytest.mark.parametrize(
    ("probe", "expected"),
    [
        (lambda p: p.metas["pypi:repository-version"], "1.4"),
        (
            lambda p: [a["href"] for a in p.anchors],
            ["a/", "django/", "holy-grail/", "zope-interface/"],
        ),
        (lambda p: p.anchor_texts, ["a", "Django", "holy_grail", "Zope.Interface"]),
        (lambda p: set(p.tags) <= PAGE_TAGS, True),
    ],
    ids=["repository-version", "hrefs-normalised", "texts-are-names", "tags"],
)
def test_root_html(probe: Callable[[Page], object], expected: object) -> None:
    assert probe(parse(render_root_html(ROOT_NAMES))) == expected


def test_root_json() -> None:
    projects = [(name, serial) for serial, name in enumerate(ROOT_NAMES, start=10)]
    assert json.loads(render_root_json(projects, 99)) == {
        "meta": {"api-version": "1.4", "_last-serial": 99},
        "projects": [
            {"name": "a", "_last-serial": 13},
            {"name": "Django", "_last-serial": 11},
            {"name": "holy_grail", "_last-serial": 12},
            {"name": "Zope.Interface", "_last-serial": 10},
        ],
    }


TRICKY_NAMES = ["plain", 'q"uote', "back\\slash", "new\nline", "tab\t", "ünï", "\x00", "&<>'"]


def test_root_json_bytes_equal_json_dumps() -> None:
    # The root JSON is assembled by hand for speed; it must be exactly what json.dumps writes.
    projects = [(name, i) for i, name in enumerate(TRICKY_NAMES)]
    rows = sorted(projects, key=lambda p: p[0].lower().replace("_", "-").replace(".", "-"))
    expected = {
        "meta": {"api-version": "1.4", "_last-serial": 3},
        "projects": [{"name": name, "_last-serial": serial} for name, serial in rows],
    }
    assert render_root_json(projects, 3) == json.dumps(expected, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "names",
    [TRICKY_NAMES, [HOSTILE, "ok"], ["a\nb", "c"], []],
    ids=["tricky", "hostile", "newline-in-name", "empty"],
)
def test_root_html_one_anchor_per_name_reading_back_exactly(names: list[str]) -> None:
    assert sorted(parse(render_root_html(names)).anchor_texts) == sorted(names)


def test_root_html_hostile_name_adds_no_tags() -> None:
    assert set(parse(render_root_html([HOSTILE])).tags) <= PAGE_TAGS


@pytest.mark.parametrize(
    "render",
    [
        lambda: parse(render_root_html(["Foo", "foo", "FOO"])).anchor_texts,
        lambda: [
            p["name"] for p in json.loads(render_root_json([("Foo", 1), ("foo", 2)], 2))["projects"]
        ],
    ],
    ids=["html", "json"],
)
def test_root_keeps_the_first_of_names_that_normalise_alike(render: Callable[[], object]) -> None:
    assert render() == ["Foo"]


def test_root_pages_do_not_depend_on_caller_order() -> None:
    projects = [(f"Project_{i}", i) for i in range(200)]
    shuffled = projects[:]
    random.Random(4).shuffle(shuffled)
    assert root_pages(shuffled, 5) == root_pages(projects, 5)


def test_root_pages_match_the_single_renderers() -> None:
    projects = [(name, i) for i, name in enumerate(ROOT_NAMES)]
    html = render_root_html(name for name, _ in projects)
    expected = {"index.html": html, "index.v1_html": html}
    expected["index.v1_json"] = render_root_json(projects, 8)
    assert root_pages(projects, 8) == expected


def test_empty_root_json() -> None:
    expected = b'{"meta":{"api-version":"1.4","_last-serial":0},"projects":[]}'
    assert render_root_json([], 0) == expected


# --- content types --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page", "content_type"),
    [
        ("index.v1_json", "application/vnd.pypi.simple.v1+json"),
        ("index.v1_html", "application/vnd.pypi.simple.v1+html"),
        ("index.html", "text/html"),
    ],
)
def test_page_types(page: str, content_type: str) -> None:
    assert PAGE_TYPES[page] == content_type
