"""layout: names and URLs to paths, and refusal of anything that would leave the tree."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from bandersnatch_clone import layout
from bandersnatch_clone.errors import UnsafePath

SHA = "a" * 64


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Django", "django"),
        ("Zope.Interface_Thing", "zope-interface-thing"),
        ("a__b--c..d", "a-b-c-d"),
        ("x", "x"),
    ],
)
def test_normalize(name: str, expected: str) -> None:
    assert layout.normalize(name) == expected


@pytest.mark.parametrize("name", ["", "..", "../etc", "a/b", "a\\b", "a\x00b", "-lead", "sp ace"])
def test_normalize_refuses_invalid_names(name: str) -> None:
    with pytest.raises(UnsafePath):
        layout.normalize(name)


@pytest.mark.parametrize(
    ("url", "filename", "expected"),
    [
        (
            "https://files.pythonhosted.org/packages/ab/cd/ef01/foo-1.0-py3-none-any.whl",
            "foo-1.0-py3-none-any.whl",
            "web/packages/ab/cd/ef01/foo-1.0-py3-none-any.whl",
        ),
        (
            "http://127.0.0.1:8000/mirror/packages/ab/cd/ef/foo-1.0.tar.gz",
            "foo-1.0.tar.gz",
            "web/packages/ab/cd/ef/foo-1.0.tar.gz",
        ),
        (
            "http://example.test/files/foo-1.0.tar.gz",
            "foo-1.0.tar.gz",
            f"web/packages/aa/aa/{'a' * 60}/foo-1.0.tar.gz",
        ),
        (
            "https://files.pythonhosted.org/packages/ab/cd/ef/foo%2B1.0.tar.gz",
            "foo+1.0.tar.gz",
            "web/packages/ab/cd/ef/foo+1.0.tar.gz",
        ),
    ],
)
def test_file_path(url: str, filename: str, expected: str) -> None:
    assert layout.file_path(url, filename, SHA) == PurePosixPath(expected)


@pytest.mark.parametrize(
    ("url", "filename"),
    [
        ("https://h/packages/../../status/x.whl", "x.whl"),
        ("https://h/packages/ab/%2e%2e/%2e%2e/x.whl", "x.whl"),
        ("https://h/packages/ab/cd/x.whl", "../x.whl"),
        ("https://h/packages/ab/cd/x.whl", "y.whl"),
        ("https://h/packages/ab/c%5Cd/x.whl", "x.whl"),
        ("https://h/packages/ab/c%00d/x.whl", "x.whl"),
        ("https://h/packages/x.whl", "x.whl"),
        ("https://h/files/x.whl", "x.whl"),
    ],
)
def test_file_path_refuses_escapes(url: str, filename: str) -> None:
    with pytest.raises(UnsafePath):
        layout.file_path(url, filename, None)


@pytest.mark.parametrize(
    ("root_uri", "expected"),
    [
        (None, "../../packages/ab/cd/f.whl"),
        ("https://mirror.example/", "https://mirror.example/packages/ab/cd/f.whl"),
    ],
)
def test_page_link(root_uri: str | None, expected: str) -> None:
    assert layout.page_link(PurePosixPath("web/packages/ab/cd/f.whl"), root_uri) == expected


def test_linked_paths_reads_back_local_links_only() -> None:
    page = (
        b'{"files": [{"url": "../../packages/ab/cd/f.whl#sha256=00", "core-metadata": {"sha256":'
        b' "1"}}, {"url": "../../packages/ab/cd/g.tar.gz", "core-metadata": false},'
        b' {"url": "https://files.example/packages/ab/cd/h.whl"}]}'
    )
    assert layout.linked_paths(page, None) == [
        PurePosixPath("web/packages/ab/cd/f.whl"),
        PurePosixPath("web/packages/ab/cd/f.whl.metadata"),
        PurePosixPath("web/packages/ab/cd/g.tar.gz"),
    ]


def test_linked_paths_with_root_uri() -> None:
    page = b'{"files": [{"url": "https://m.example/packages/ab/cd/f.whl"}]}'
    assert layout.linked_paths(page, "https://m.example") == [
        PurePosixPath("web/packages/ab/cd/f.whl")
    ]
