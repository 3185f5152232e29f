"""Helpers for the air-gap tests: whole-mirror state, offline configs, bundles taken apart."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from bandersnatch_clone.bundle import MANIFEST_DIGEST, MANIFEST_NAME
from tests.treecheck import sha256_of, tree_snapshot

#: State files a bundle carries besides web/ and status (`tree_snapshot` has those two).
STATE_FILES = ("generation", "ledger", "filters.state")


def mirror_state(directory: Path) -> dict[str, str]:
    """Path -> sha256 of every file under web/ and of the state files, plus the status serial:
    two equal states, two mirrors a client and `status` cannot tell apart."""
    state = tree_snapshot(directory)
    for name in STATE_FILES:
        if (directory / name).is_file():
            state[name] = sha256_of(directory / name)
    return state


def offline_config(path: Path, directory: Path) -> Path:
    """The config of an offline mirror: a directory and nothing else (it never syncs)."""
    path.write_text(f'[mirror]\ndirectory = "{directory}"\n')
    return path


def root_names(directory: Path) -> set[str]:
    doc = json.loads((directory / "web/simple/index.v1_json").read_bytes())
    return {p["name"] for p in doc["projects"]}


def unlisted_pages(directory: Path) -> list[str]:
    """Projects the root index names whose JSON page is missing (a client would get a 404)."""
    doc = json.loads((directory / "web/simple/index.v1_json").read_bytes())
    return sorted(
        p["name"]
        for p in doc["projects"]
        if not (directory / "web/simple" / canonicalize_name(p["name"]) / "index.v1_json").is_file()
    )


@dataclass
class Member:
    """One member of a bundle, taken apart so a test can alter it."""

    info: tarfile.TarInfo
    data: bytes


def read_members(bundle: Path) -> list[Member]:
    raw = bundle.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    members = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for info in tar.getmembers():
            f = tar.extractfile(info)
            members.append(Member(info, f.read() if f is not None else b""))
    return members


def write_members(bundle: Path, members: list[Member], *, reseal: bool = True) -> Path:
    """A plain tar of `members`; ``reseal`` gives the manifest member a matching checksum."""
    with tarfile.open(bundle, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = m.info
            if info.name == MANIFEST_NAME and reseal:
                info.pax_headers = {MANIFEST_DIGEST: hashlib.sha256(m.data).hexdigest()}
            info.size = len(m.data)
            tar.addfile(info, io.BytesIO(m.data) if info.isfile() else None)
    return bundle


def edit_manifest(members: list[Member], edit: Callable[[dict[str, object]], None]) -> None:
    manifest = members[0]
    assert manifest.info.name == MANIFEST_NAME
    doc = json.loads(manifest.data)
    edit(doc)
    manifest.data = json.dumps(doc).encode()


def raw_tar_offsets(bundle: Path) -> tuple[bytes, dict[str, int]]:
    """The bundle as plain tar bytes, and each member's data offset in them."""
    raw = bundle.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        return raw, {info.name: info.offset_data for info in tar.getmembers()}
