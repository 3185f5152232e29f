"""Parsing upstream bodies: tables of PyPI-shaped documents in, typed records or errors out."""

from __future__ import annotations

import json
import logging
import xmlrpc.client
from typing import Any

import pytest

from bandersnatch_clone.errors import BadUpstreamData
from bandersnatch_clone.model import DistFile, ListedProject, ProjectStatus
from bandersnatch_clone.parse import (
    ChangelogEvent,
    XmlRpcFault,
    parse_changelog,
    parse_legacy_json,
    parse_listing_json,
    parse_packages_with_serial,
    parse_project_json,
    parse_xmlrpc,
    peek_listing_serial,
)

PAGE = "https://pypi.org/simple/holygrail/"
SHA = "dc6bc8e8851a1c590c8cc8f25915180fdcce116e268d1f37fa991d2686ea38de"
META_SHA = "524392d64a088e56a4232f50d6edb208dc03105394652acb72c6d5fa64c89f3e"
FILES = "https://files.pythonhosted.org/packages/6f/be/99dc"

# PEP 691's own example: api-version 1.0, no versions, no size.
V1_0: dict[str, Any] = {
    "meta": {"api-version": "1.0"},
    "name": "holygrail",
    "files": [
        {
            "filename": "holygrail-1.0.tar.gz",
            "url": "https://example.com/files/holygrail-1.0.tar.gz",
            "hashes": {"sha256": SHA, "blake2b": "ab" * 64},
            "requires-python": ">=3.7",
            "yanked": "Had a vulnerability",
        },
        {
            "filename": "holygrail-1.0-py3-none-any.whl",
            "url": "https://example.com/files/holygrail-1.0-py3-none-any.whl",
            "hashes": {"sha256": SHA},
            "requires-python": ">=3.7",
            "dist-info-metadata": True,
        },
    ],
}

# The shape docs.pypi.org shows for api-version 1.1 (both metadata keys, as PyPI sends them).
V1_1: dict[str, Any] = {
    "files": [
        {
            "core-metadata": {"sha256": META_SHA},
            "data-dist-info-metadata": {"sha256": META_SHA},
            "filename": "beautifulsoup4-4.12.3-py3-none-any.whl",
            "hashes": {"sha256": SHA},
            "requires-python": ">=3.6.0",
            "size": 147925,
            "upload-time": "2024-01-17T16:53:12.779164Z",
            "url": f"{FILES}/beautifulsoup4-4.12.3-py3-none-any.whl",
            "yanked": False,
        }
    ],
    "meta": {"_last-serial": 22406780, "api-version": "1.1"},
    "name": "beautifulsoup4",
    "versions": ["4.0.1", "4.12.3", "4.13.0b2"],
}

# api-version 1.4: PEP 740 provenance and PEP 792 project status.
V1_4: dict[str, Any] = {
    "files": [
        {
            "core-metadata": False,
            "filename": "sampleproject-4.0.0.tar.gz",
            "hashes": {"sha256": SHA},
            "provenance": "https://pypi.org/integrity/sampleproject/4.0.0/s.tar.gz/provenance",
            "requires-python": None,
            "size": 5760,
            "upload-time": "2024-11-06T22:37:10Z",
            "url": f"{FILES}/sampleproject-4.0.0.tar.gz",
            "yanked": False,
        }
    ],
    "meta": {"_last-serial": 25862117, "api-version": "1.4"},
    "name": "sampleproject",
    "project-status": {"status": "archived", "reason": "moved to sampleproject2"},
    "versions": ["4.0.0"],
}


def body(doc: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**doc, **changes}).encode()


def with_file(**changes: Any) -> bytes:
    """V1_4 with its one file changed (a value of None removes the key)."""
    entry = {**V1_4["files"][0], **changes}
    return body(V1_4, files=[{k: v for k, v in entry.items() if v is not None}])


# -- project pages -------------------------------------------------------------------------------


def test_api_1_0_page() -> None:
    detail = parse_project_json(body(V1_0), PAGE, header_serial=17)
    assert detail.files[0] == DistFile(
        filename="holygrail-1.0.tar.gz",
        url="https://example.com/files/holygrail-1.0.tar.gz",
        hashes={"sha256": SHA, "blake2b": "ab" * 64},
        requires_python=">=3.7",
        yanked="Had a vulnerability",
    )


@pytest.mark.parametrize(
    ("doc", "field", "expected"),
    [
        (V1_0, "serial", 17),
        (V1_0, "versions", ()),
        (V1_0, "status", None),
        (V1_1, "name", "beautifulsoup4"),
        (V1_1, "serial", 22406780),
        (V1_1, "versions", ("4.0.1", "4.12.3", "4.13.0b2")),
        (V1_4, "status", ProjectStatus.ARCHIVED),
        (V1_4, "status_reason", "moved to sampleproject2"),
    ],
)
def test_page_fields(doc: dict[str, Any], field: str, expected: object) -> None:
    assert getattr(parse_project_json(body(doc), PAGE, header_serial=17), field) == expected


@pytest.mark.parametrize(
    ("doc", "field", "expected"),
    [
        (V1_0, "size", None),
        (V1_0, "upload_time", None),
        (V1_1, "size", 147925),
        (V1_1, "upload_time", "2024-01-17T16:53:12.779164Z"),
        (V1_1, "core_metadata", {"sha256": META_SHA}),
        (V1_1, "yanked", None),
        (V1_4, "requires_python", None),
        (V1_4, "core_metadata", None),
        (V1_4, "provenance", "https://pypi.org/integrity/sampleproject/4.0.0/s.tar.gz/provenance"),
    ],
)
def test_file_fields(doc: dict[str, Any], field: str, expected: object) -> None:
    detail = parse_project_json(body(doc), PAGE, header_serial=17)
    assert getattr(detail.files[0], field) == expected


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"core-metadata": {"SHA256": META_SHA.upper()}}, {"sha256": META_SHA}),
        ({"core-metadata": True}, {}),
        ({"core-metadata": False, "dist-info-metadata": True}, None),  # PEP 714: new key wins
        ({"core-metadata": None, "dist-info-metadata": {"sha256": META_SHA}}, {"sha256": META_SHA}),
        ({"core-metadata": None, "dist-info-metadata": True}, {}),
        ({"core-metadata": None, "dist-info-metadata": False}, None),
        ({"core-metadata": None}, None),
    ],
)
def test_core_metadata_and_its_old_name(changes: dict[str, Any], expected: object) -> None:
    assert parse_project_json(with_file(**changes), PAGE).files[0].core_metadata == expected


@pytest.mark.parametrize(
    ("yanked", "expected"),
    [(False, None), (None, None), ("", None), (True, ""), ("broken wheel", "broken wheel")],
)
def test_yanked_forms(yanked: object, expected: str | None) -> None:
    assert parse_project_json(with_file(yanked=yanked), PAGE).files[0].yanked == expected


@pytest.mark.parametrize(
    ("hashes", "expected"),
    [
        ({"SHA256": SHA.upper()}, {"sha256": SHA}),
        ({"sha256": SHA, "blake2b_256": "ab" * 32, "whirlpool": "00"}, {"sha256": SHA}),
        ({"md5": "0" * 32, "sha512": "f" * 128}, {"md5": "0" * 32, "sha512": "f" * 128}),
        ({}, {}),
    ],
)
def test_hashes_are_lowercase_and_known(hashes: dict[str, str], expected: dict[str, str]) -> None:
    assert parse_project_json(with_file(hashes=hashes), PAGE).files[0].hashes == expected


@pytest.mark.parametrize(
    ("page", "href", "expected"),
    [
        (
            "https://mirror.example/simple/demo/",
            "../../packages/aa/bb/demo-1.0.tar.gz#sha256=" + SHA,
            "https://mirror.example/packages/aa/bb/demo-1.0.tar.gz",
        ),
        (
            "https://mirror.example/pypi/simple/demo/",
            "/files/demo-1.0.tar.gz",
            "https://mirror.example/files/demo-1.0.tar.gz",
        ),
        (
            "https://mirror.example/simple/demo/",
            "https://files.example/p/demo-1.0.tar.gz",
            "https://files.example/p/demo-1.0.tar.gz",
        ),
    ],
)
def test_relative_urls_are_resolved_against_the_page(page: str, href: str, expected: str) -> None:
    assert parse_project_json(with_file(url=href), page).files[0].url == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"status": "quarantined"}, (ProjectStatus.QUARANTINED, None)),
        ({"status": "active"}, (ProjectStatus.ACTIVE, None)),
        ({"state": "deprecated", "reason": "use x"}, (ProjectStatus.DEPRECATED, "use x")),
        ({"status": "haunted", "reason": "boo"}, (None, None)),  # a future marker: ignored
        ({}, (None, None)),
    ],
)
def test_project_status(status: dict[str, str], expected: tuple[object, object]) -> None:
    detail = parse_project_json(body(V1_4, **{"project-status": status}), PAGE)
    assert (detail.status, detail.status_reason) == expected


def test_unknown_keys_are_ignored() -> None:
    doc = {**V1_4, "alternate-locations": [], "tracks": ["x"], "_private": {"a": 1}}
    assert parse_project_json(body(doc), PAGE).name == "sampleproject"


def test_body_serial_wins_over_the_header() -> None:
    assert parse_project_json(body(V1_4), PAGE, header_serial=1).serial == 25862117


def test_newer_minor_version_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    doc = body(V1_4, meta={"api-version": "1.77", "_last-serial": 1})
    with caplog.at_level(logging.WARNING):
        parse_project_json(doc, PAGE)
        parse_project_json(doc, PAGE)
    assert [r.message.count("1.77") for r in caplog.records] == [1]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"[]", "not an object"),
        (b"{not json", "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
        (b"[" * 100_000, "invalid JSON"),
        (body(V1_4, meta={"api-version": "2.0", "_last-serial": 1}), "api-version 2.0"),
        (body(V1_4, meta={"api-version": 1.0, "_last-serial": 1}), "api-version"),
        (body(V1_4, meta=[]), "meta"),
        (body(V1_0), "no serial"),
        (body(V1_4, meta={"_last-serial": "12x"}), "serial"),
        (body(V1_4, meta={"_last-serial": True}), "serial"),
        (body(V1_4, files=None), "files"),
        (body({k: v for k, v in V1_4.items() if k != "files"}), "files"),
        (body(V1_4, name=None), "name"),
        (body(V1_4, name="../etc"), "invalid project name"),
        (body(V1_4, versions="4.0.0"), "versions"),
        (body(V1_4, files=[V1_4["files"][0]] * 2), "twice"),
        (body(V1_4, files=["x"]), "not an object"),
        (body(V1_4, **{"project-status": "archived"}), "project-status"),
        (body(V1_4, **{"project-status": {"status": 3}}), "project-status"),
        (with_file(filename=""), "filename"),
        (with_file(url=42), "url"),
        (with_file(hashes=None), "hashes"),
        (with_file(hashes=["sha256"]), "hashes"),
        (with_file(hashes={"sha256": "xyz"}), "hex digest"),
        (with_file(hashes={"sha256": SHA[:-2]}), "hex digest"),
        (with_file(hashes={"sha256": 5}), "not a string"),
        (with_file(size=True), "size"),
        (with_file(size=-1), "size"),
        (with_file(size=1.5), "size"),
        (with_file(yanked=1), "yanked"),
        (with_file(**{"requires-python": 3}), "requires-python"),
        (with_file(**{"core-metadata": "yes"}), "core-metadata"),
    ],
)
def test_bad_pages_are_refused(raw: bytes, problem: str) -> None:
    with pytest.raises(BadUpstreamData, match=problem):
        parse_project_json(raw, PAGE, header_serial=None)


# -- the listing ---------------------------------------------------------------------------------

LISTING = (
    b'{"meta":{"_last-serial":24888689,"api-version":"1.1"},"projects":['
    b'{"_last-serial":3075854,"name":"0"},'
    b'{"_last-serial":1448421,"name":"0-._.-._.-._.-._.-._.-._.-0"}]}'
)


def test_listing() -> None:
    assert parse_listing_json(LISTING, "https://pypi.org/simple/") == (
        24888689,
        [ListedProject("0", 3075854), ListedProject("0-._.-._.-._.-._.-._.-._.-0", 1448421)],
    )


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"meta": {"api-version": "1.0"}, "projects": []}, "no serial"),
        ({"meta": {"_last-serial": 1}}, "projects"),
        ({"meta": {"_last-serial": 1}, "projects": [{"name": "a"}]}, "_last-serial"),
        ({"meta": {"_last-serial": 1}, "projects": [["a", 1]]}, "_last-serial"),
        ({"meta": {"_last-serial": 1}, "projects": [{"name": 1, "_last-serial": 1}]}, "row"),
        ({"meta": {"_last-serial": 1}, "projects": [{"name": "a", "_last-serial": "-1"}]}, "row"),
        ({"meta": {"_last-serial": 1, "api-version": "3.0"}, "projects": []}, "api-version"),
    ],
)
def test_bad_listings_are_refused(doc: dict[str, Any], problem: str) -> None:
    with pytest.raises(BadUpstreamData, match=problem):
        parse_listing_json(json.dumps(doc).encode(), "https://pypi.org/simple/")


def test_listing_serial_falls_back_to_the_header() -> None:
    raw = b'{"meta":{"api-version":"1.0"},"projects":[{"name":"a","_last-serial":3}]}'
    assert parse_listing_json(raw, "https://m.example/simple/", header_serial=9)[0] == 9


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (LISTING[:80], 24888689),
        (b'\n {"meta" : {"api-version": "1.4", "_last-serial": 7}, "projects": [', 7),
        (b'{"meta":{"_last-serial":7}', 7),
        (LISTING[:30], None),  # the meta object is cut off
        (b'{"projects":[], "meta":{"_last-serial":7}}', None),  # meta is not first
        (b'{"meta":{"x":{"_last-serial":7}},', None),  # nested: not PyPI's shape
        (b'{"meta":{"api-version":"2.0","_last-serial":7}}', None),
        (b'{"meta":{"api-version":"1.1","_last-serial":"7"}}', 7),
        (b'{"meta":{"api-version":"1.1","_last-serial":"seven"}}', None),
        (b'{"meta":{"api-version":"}","_last-serial":7}}', None),
        (b'{"meta":{"_last-serial":7,}}', None),
        (b"", None),
    ],
)
def test_peek_listing_serial(prefix: bytes, expected: int | None) -> None:
    assert peek_listing_serial(prefix) == expected


# -- PyPI's JSON API -----------------------------------------------------------------------------

LEGACY = {
    "info": {"name": "Sample_Project", "version": "4.0.0", "requires_python": ">=3.9"},
    "last_serial": 25862117,
    "releases": {"1.0": [], "4.0.0": [{"filename": "sampleproject-4.0.0.tar.gz"}]},
    "urls": [{"filename": "sampleproject-4.0.0.tar.gz"}],
    "vulnerabilities": [],
}


def test_legacy_json() -> None:
    raw = json.dumps(LEGACY).encode()
    legacy = parse_legacy_json(raw, "https://pypi.org/pypi/sample-project/json")
    assert (legacy.name, legacy.serial, legacy.info["version"], legacy.raw) == (
        "sample-project",
        25862117,
        "4.0.0",
        raw,
    )


def test_legacy_info_is_read_only() -> None:
    legacy = parse_legacy_json(json.dumps(LEGACY).encode(), "u")
    with pytest.raises(TypeError):
        legacy.info["version"] = "5"  # type: ignore[index]


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({**LEGACY, "info": None}, "info"),
        ({**LEGACY, "info": {}}, "name"),
        ({**LEGACY, "releases": []}, "releases"),
        ({**LEGACY, "urls": {}}, "urls"),
        ({k: v for k, v in LEGACY.items() if k != "last_serial"}, "no serial"),
    ],
)
def test_bad_legacy_json_is_refused(doc: dict[str, Any], problem: str) -> None:
    with pytest.raises(BadUpstreamData, match=problem):
        parse_legacy_json(json.dumps(doc).encode(), "u")


# -- XML-RPC -------------------------------------------------------------------------------------


def response(value: Any) -> bytes:
    return xmlrpc.client.dumps((value,), methodresponse=True, allow_none=True).encode()


def test_changelog_rows() -> None:
    rows = [["demo", "1.0", 1701280908, "new release", 5], ["demo", None, 1701280909, "create", 6]]
    assert parse_changelog(parse_xmlrpc(response(rows), "u"), "u") == [
        ChangelogEvent("demo", "1.0", 1701280908, "new release", 5),
        ChangelogEvent("demo", None, 1701280909, "create", 6),
    ]


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1},
        [["demo", "1.0", 1, "new release"]],
        [["demo", "1.0", "1", "new release", 5]],
        [["demo", "1.0", 1, "new release", True]],
    ],
)
def test_bad_changelog_is_refused(value: object) -> None:
    with pytest.raises(BadUpstreamData):
        parse_changelog(parse_xmlrpc(response(value), "u"), "u")


def test_packages_with_serial() -> None:
    value = parse_xmlrpc(response({"0": 3075854, "Demo": 5}), "u")
    assert parse_packages_with_serial(value, "u") == [
        ListedProject("0", 3075854),
        ListedProject("Demo", 5),
    ]


@pytest.mark.parametrize("value", [[1, 2], {"a": "1"}, {"a": True}])
def test_bad_packages_are_refused(value: object) -> None:
    with pytest.raises(BadUpstreamData):
        parse_packages_with_serial(parse_xmlrpc(response(value), "u"), "u")


def test_fault_keeps_its_text() -> None:
    raw = xmlrpc.client.dumps(
        xmlrpc.client.Fault(-32500, "RuntimeError: nope"), methodresponse=True
    )
    with pytest.raises(XmlRpcFault) as info:
        parse_xmlrpc(raw.encode(), "u")
    assert (info.value.code, info.value.fault) == (-32500, "RuntimeError: nope")


@pytest.mark.parametrize(
    "raw",
    [b"<html>502</html>", b"not xml", b"<methodResponse><params></params></methodResponse>"],
)
def test_bad_xmlrpc_is_refused(raw: bytes) -> None:
    with pytest.raises(BadUpstreamData):
        parse_xmlrpc(raw, "u")


def test_malformed_upload_time_is_dropped_not_fatal() -> None:
    detail = parse_project_json(with_file(**{"upload-time": "yesterday"}), PAGE)
    assert [f.upload_time for f in detail.files] == [None]


def test_serials_sent_as_digit_strings_are_accepted() -> None:
    """Some proxies in front of PyPI send ``"_last-serial": "26356948"`` (api-version 1.1)."""
    listing = b'{"meta": {"_last-serial": "9"}, "projects": [{"name": "a", "_last-serial": "4"}]}'
    page = parse_project_json(body(V1_4, meta={"_last-serial": "12"}), PAGE)
    assert (parse_listing_json(listing, PAGE), page.serial) == ((9, [ListedProject("a", 4)]), 12)
