"""bundle: the manifest's schema, the path rules that keep an import in the mirror, the order."""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import pytest

from bandersnatch_clone.bundle import (
    Entry,
    Manifest,
    Phase,
    apply_order,
    check_path,
    deletion_order,
    phase_of,
)
from bandersnatch_clone.errors import BundleError

SHA = "ab" * 32


@pytest.mark.parametrize(
    "path",
    [
        "web/packages/aa/bb/cc/alpha-1.0-py3-none-any.whl",
        "web/simple/alpha/index.v1_json",
        "web/json/alpha",
        "status",
        "ledger",
    ],
)
def test_paths_inside_the_mirror_are_taken(path: str) -> None:
    assert check_path(path) == PurePosixPath(path)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/etc/passwd",
        "../outside",
        "web/../../outside",
        "web/simple/../../status",
        "web/./simple",
        "web//simple",
        "web/simple/",
        "web\\..\\outside",
        "web/simple/a\x00b",
        "web/simple/a\nb",
        "web",
        ".lock",
        "todo",
        "config.toml",
        ".import/x",
    ],
)
def test_paths_that_could_leave_the_tree_are_refused(path: str) -> None:
    with pytest.raises(BundleError, match="refused"):
        check_path(path)


def test_a_state_file_cannot_be_deleted_by_a_bundle() -> None:
    with pytest.raises(BundleError, match="outside web/"):
        check_path("status", state_allowed=False)


def _manifest(**changes: object) -> bytes:
    doc: dict[str, object] = {
        "format": "bandersnatch-clone-bundle",
        "version": 1,
        "tool_version": "0.1.0",
        "created": "2024-01-01T00:00:00Z",
        "from_serial": 5,
        "to_serial": 9,
        "full": False,
        "entries": [
            {"path": "web/simple/a/index.html", "size": 3, "sha256": SHA},
            {"path": "status", "size": 2, "sha256": SHA},
        ],
        "deletions": ["web/simple/b/index.html"],
    }
    doc.update(changes)
    return json.dumps(doc).encode()


def test_manifest_round_trip() -> None:
    manifest = Manifest.from_bytes(_manifest())
    assert Manifest.from_bytes(manifest.to_bytes()) == manifest


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"format": "zip"}, "not a bandersnatch-clone bundle"),
        ({"version": 2}, "format version 2"),
        ({"from_serial": 9, "to_serial": 5}, "bad serial range"),
        ({"from_serial": -1}, "bad serial range"),
        ({"to_serial": "9"}, "bad serial range"),
        ({"entries": {}}, "not a list"),
        ({"entries": [{"path": "status", "size": 2, "sha256": "x"}]}, "bad size or sha256"),
        ({"entries": [{"path": "web/a", "size": 1, "sha256": SHA}]}, "no status"),
        ({"deletions": ["web/simple/a/index.html"]}, "named twice"),
        ({"deletions": ["ledger"]}, "outside web/"),
    ],
)
def test_bad_manifests_are_refused_naming_the_problem(
    changes: dict[str, object], problem: str
) -> None:
    with pytest.raises(BundleError, match=problem):
        Manifest.from_bytes(_manifest(**changes))


def test_not_json_is_refused() -> None:
    with pytest.raises(BundleError, match="not JSON"):
        Manifest.from_bytes(b"\x1f\x8b garbage")


def test_apply_order_is_files_pages_root_state_status() -> None:
    paths = [
        "status",
        "web/simple/index.html",
        "ledger",
        "web/simple/alpha/index.html",
        "web/packages/aa/bb/alpha.whl",
        "generation",
        "web/json/alpha",
    ]
    ordered = sorted((PurePosixPath(p) for p in paths), key=apply_order)
    assert [(p.as_posix(), phase_of(p)) for p in ordered] == [
        ("web/packages/aa/bb/alpha.whl", Phase.FILES),
        ("web/json/alpha", Phase.PAGES),
        ("web/simple/alpha/index.html", Phase.PAGES),
        ("web/simple/index.html", Phase.ROOT),
        ("generation", Phase.STATE),
        ("ledger", Phase.STATE),
        ("status", Phase.STATUS),
    ]


def test_deletions_take_pages_before_the_files_they_linked() -> None:
    paths = [PurePosixPath("web/packages/aa/x.whl"), PurePosixPath("web/simple/x/index.html")]
    assert sorted(paths, key=deletion_order) == paths[::-1]


def test_full_means_from_serial_zero() -> None:
    entries = (Entry(PurePosixPath("status"), 2, SHA),)
    full = Manifest(0, 9, entries, (), "0.1.0", "now")
    delta = Manifest(5, 9, entries, (), "0.1.0", "now")
    assert (full.full, delta.full) == (True, False)
