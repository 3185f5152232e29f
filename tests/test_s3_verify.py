"""verify and delete on the S3 backend (SeaweedFS): problems planted in the bucket are found, a
repair brings the bucket back to exactly the tree the filesystem backend writes, and a delete
leaves the bucket as a delete leaves the directory.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w

from bandersnatch_clone.cli import main
from bandersnatch_clone.config import Config
from bandersnatch_clone.delete import run_delete
from bandersnatch_clone.scan import parse_page
from bandersnatch_clone.storage.s3client import S3Client, metadata
from bandersnatch_clone.verify import run_verify
from bandersnatch_clone.verify_records import PROGRESS_FILE, VerifySummary
from tests.fake_upstream import FakeUpstream
from tests.mirror_helpers import make_config, mirror
from tests.s3server import BUCKET, S3Server, fresh_prefix
from tests.test_s3_mirror import bucket_keys, bucket_snapshot, s3_config, s3_mapping
from tests.treecheck import tree_snapshot

Found = set[tuple[str, str]]


@dataclass
class Bucket:
    """An S3 mirror of `FakeIndex.small()` (with JSON API copies), and a way into its objects."""

    config: Config
    prefix: str
    client: S3Client

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}"

    async def find(self, filename: str) -> str:
        """The tree path (``web/packages/...``) of the file of that name."""
        (path,) = [k for k in await bucket_keys(self.client, self.prefix) if k.endswith(filename)]
        return path

    async def read(self, path: str) -> tuple[bytes, dict[str, str]]:
        """An object's bytes and user metadata."""
        response = await self.client.get_object(Bucket=BUCKET, Key=self.key(path))
        body = response["Body"]
        data: bytes = await body.read()  # type: ignore[attr-defined]
        body.close()  # type: ignore[attr-defined]
        return data, dict(metadata(response))

    async def put(self, path: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        """Overwrite an object as another tool would: with the metadata given, or none."""
        await self.client.put_object(
            Bucket=BUCKET, Key=self.key(path), Body=data, Metadata=metadata or {}
        )

    async def remove(self, path: str) -> None:
        await self.client.delete_object(Bucket=BUCKET, Key=self.key(path))

    async def snapshot(self) -> dict[str, str]:
        return await bucket_snapshot(self.client, self.prefix)


@pytest.fixture
async def bucket(
    upstream: FakeUpstream, s3_server: S3Server, tmp_path: Path
) -> AsyncIterator[Bucket]:
    prefix = fresh_prefix()
    config = s3_config(tmp_path / "s3-state", upstream, s3_server, prefix)
    assert (await mirror(config)).exit_code == 0
    async with s3_server.client() as client:
        yield Bucket(config, prefix, client)


@pytest.fixture
async def reference(upstream: FakeUpstream, tmp_path: Path) -> Config:
    """The same upstream mirrored by the filesystem backend."""
    config = make_config(tmp_path / "reference", upstream, json=True)
    assert (await mirror(config)).exit_code == 0
    return config


def found(summary: VerifySummary) -> Found:
    return {(p.kind.value, p.path) for p in summary.problems}


def flip(data: bytes) -> bytes:
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0x01
    return bytes(changed)


async def plant_corrupt_keeping_digest(b: Bucket) -> Found:
    """Same size, the sha256 metadata of the good bytes kept: only hashing can tell."""
    path = await b.find("alpha-2.0.tar.gz")
    data, metadata = await b.read(path)
    await b.put(path, flip(data), metadata)
    return {("corrupt", path)}


async def plant_corrupt_dropping_digest(b: Bucket) -> Found:
    path = await b.find("delta-0.1.tar.gz")
    data, _ = await b.read(path)
    await b.put(path, data + b"\0")
    return {("corrupt", path)}


async def plant_foreign_digest(b: Bucket) -> Found:
    """Same size, overwritten by a tool that recorded the digest of its own bytes."""
    path = await b.find("iota-1.0.tar.gz")
    data, _ = await b.read(path)
    other = flip(data)
    await b.put(path, other, {"sha256": hashlib.sha256(other).hexdigest()})
    return {("corrupt", path)}


async def plant_missing(b: Bucket) -> Found:
    path = await b.find("beta-1.0.tar.gz")
    await b.remove(path)
    return {("missing", path), ("dangling", "web/simple/beta")}


async def plant_missing_metadata(b: Bucket) -> Found:
    path = await b.find("gamma-1.0-py3-none-any.whl.metadata")
    await b.remove(path)
    return {("missing", path), ("dangling", "web/simple/gamma")}


async def plant_orphan(b: Bucket) -> Found:
    path = "web/packages/zz/yy/x01/stray-1.0.tar.gz"
    await b.put(path, b"not linked")
    return {("orphan", path)}


async def plant_page_garbled(b: Bucket) -> Found:
    """A broken JSON page: its links are unknown, so what it linked shows up as orphans."""
    page = "web/simple/kappa/index.v1_json"
    data, _ = await b.read(page)
    await b.put(page, b'{"files": [')
    return {("bad-page", page), *(("orphan", link.path) for link in parse_page(data, None)[1])}


async def plant_html_page_missing(b: Bucket) -> Found:
    await b.remove("web/simple/theta/index.html")
    return {("bad-page", "web/simple/theta/index.html")}


async def plant_root_page_missing(b: Bucket) -> Found:
    await b.remove("web/simple/index.v1_html")
    return {("bad-page", "web/simple/index.v1_html")}


PLANTS: list[Callable[[Bucket], Awaitable[Found]]] = [
    plant_corrupt_keeping_digest,
    plant_corrupt_dropping_digest,
    plant_foreign_digest,
    plant_missing,
    plant_missing_metadata,
    plant_orphan,
    plant_page_garbled,
    plant_html_page_missing,
    plant_root_page_missing,
]


async def test_a_fresh_bucket_verifies_clean_in_both_modes(bucket: Bucket) -> None:
    full = await run_verify(bucket.config)
    quick = await run_verify(bucket.config, quick=True)
    assert (full[0], found(full[1]), quick[0], found(quick[1])) == (0, set(), 0, set())
    # Every linked file was downloaded and hashed by the full pass, none by the quick one.
    assert (full[1].files_checked, full[1].bytes_hashed > 0, quick[1].bytes_hashed) == (50, True, 0)


async def test_verify_finds_every_planted_problem_and_repair_gives_the_filesystem_tree(
    bucket: Bucket, reference: Config
) -> None:
    expected: Found = set()
    for plant in PLANTS:
        expected |= await plant(bucket)
    code, summary = await run_verify(bucket.config)
    assert (code, found(summary)) == (1, expected)
    # --quick downloads nothing: a same-size corruption under the good digest goes unseen.
    code, quick = await run_verify(bucket.config, quick=True)
    unseen = {("corrupt", await bucket.find("alpha-2.0.tar.gz"))}
    assert (code, found(quick), quick.bytes_hashed) == (1, expected - unseen, 0)
    code, repaired = await run_verify(bucket.config, repair=True, delete_orphans=True)
    assert (code, [p for p in repaired.problems if not p.fixed]) == (0, [])
    code, again = await run_verify(bucket.config)
    assert (code, found(again)) == (0, set())
    assert await bucket.snapshot() == tree_snapshot(reference.mirror.directory)


async def test_dry_run_changes_nothing_in_the_bucket(bucket: Bucket) -> None:
    for plant in (plant_missing, plant_corrupt_dropping_digest, plant_orphan):
        await plant(bucket)
    before = await bucket.snapshot()
    code, summary = await run_verify(bucket.config, repair=True, delete_orphans=True, dry_run=True)
    assert code == 1
    assert {p.action for p in summary.problems} == {"would repair", "would delete"}
    assert await bucket.snapshot() == before
    assert not (bucket.config.mirror.directory / PROGRESS_FILE).exists()


async def test_delete_orphans_removes_only_the_orphans(bucket: Bucket) -> None:
    before = await bucket.snapshot()
    planted = await plant_orphan(bucket)
    code, summary = await run_verify(bucket.config, delete_orphans=True, quick=True)
    assert (code, found(summary), {p.action for p in summary.problems}) == (0, planted, {"deleted"})
    assert await bucket.snapshot() == before


async def test_an_interrupted_verify_of_a_bucket_resumes(bucket: Bucket) -> None:
    corrupt = await plant_corrupt_keeping_digest(bucket)
    code, first = await run_verify(bucket.config, limit=4)
    code2, rest = await run_verify(bucket.config)
    assert (code, first.complete, found(first)) == (1, False, corrupt)
    assert (code2, rest.complete, rest.projects_skipped, found(rest)) == (1, True, 3, corrupt)


async def test_the_cli_verifies_a_bucket(
    bucket: Bucket, upstream: FakeUpstream, s3_server: S3Server, tmp_path: Path
) -> None:
    await plant_missing(bucket)
    config_file = tmp_path / "s3.toml"
    mapping = s3_mapping(bucket.config.mirror.directory, upstream, s3_server, bucket.prefix)
    config_file.write_text(tomli_w.dumps(mapping))
    codes = [
        await asyncio.to_thread(main, ["-c", str(config_file), *args])
        for args in (["verify"], ["verify", "--repair"])
    ]
    assert codes == [1, 0]


# -- delete ----------------------------------------------------------------------------------


async def test_delete_leaves_the_bucket_as_it_leaves_a_directory(
    bucket: Bucket, reference: Config
) -> None:
    before = await bucket.snapshot()
    code, summary = await run_delete(bucket.config, ["Zope.Interface_Thing", "no-such-thing"])
    await run_delete(reference, ["Zope.Interface_Thing"])
    after = await bucket.snapshot()
    assert (code, summary.deleted, summary.files_removed) == (1, ("zope-interface-thing",), 8)
    assert after == tree_snapshot(reference.mirror.directory)
    assert {k for k in before if "zope" in k} - set(after) == {k for k in before if "zope" in k}
    assert (await run_verify(bucket.config, quick=True))[0] == 0


async def test_delete_dry_run_leaves_the_bucket_alone(bucket: Bucket) -> None:
    before = await bucket.snapshot()
    code, summary = await run_delete(bucket.config, ["alpha"], dry_run=True)
    assert (code, summary.deleted, await bucket.snapshot()) == (0, ("alpha",), before)
