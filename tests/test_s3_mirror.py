"""The engine writing into S3 (SeaweedFS): the bucket must hold exactly the tree the filesystem
backend writes from the same upstream, object key for path and byte for byte, after a full sync,
after every kind of upstream change, and after a run killed with -9 and resumed.

The state (status, ledger, journal, lock) stays in the local directory; the bucket holds web/
plus copies of status and generation, written last.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sys
import time
from asyncio.subprocess import DEVNULL, PIPE
from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w

from bandersnatch_clone.config import Config, config_from_mapping
from bandersnatch_clone.storage.s3client import S3Client, items
from tests.fake_upstream import FakeIndex, FakeUpstream
from tests.mirror_helpers import make_config, mirror
from tests.s3server import BUCKET, S3Server, fresh_prefix
from tests.treecheck import tree_snapshot

CLI = [sys.executable, "-m", "bandersnatch_clone.cli"]
#: Files a killed run has placed in the bucket before the kill.
KILL_AFTER_FILES = 12


def s3_mapping(
    directory: Path, upstream: FakeUpstream, server: S3Server, prefix: str
) -> dict[str, object]:
    return {
        "mirror": {
            "directory": str(directory),
            "upstream": upstream.url,
            "metadata_workers": 4,
            "download_workers": 4,
            "json": True,
        },
        "storage": {"backend": "s3", "s3": server.table(prefix=prefix)},
    }


def s3_config(directory: Path, upstream: FakeUpstream, server: S3Server, prefix: str) -> Config:
    mapping = s3_mapping(directory, upstream, server, prefix)
    return config_from_mapping(mapping, directory.parent / "s3-config.toml")


async def bucket_keys(client: S3Client, prefix: str) -> dict[str, int]:
    """Key (below the prefix) -> size of every object under the prefix."""
    out: dict[str, int] = {}
    args: dict[str, object] = {"Bucket": BUCKET, "Prefix": prefix + "/"}
    while True:
        response = await client.list_objects_v2(**args)
        for entry in items(response, "Contents"):
            out[str(entry["Key"])[len(prefix) + 1 :]] = int(str(entry["Size"]))
        if not response.get("IsTruncated"):
            return out
        args["ContinuationToken"] = response["NextContinuationToken"]


async def bucket_snapshot(client: S3Client, prefix: str) -> dict[str, str]:
    """What `treecheck.tree_snapshot` gives for a directory, read from the bucket: path -> sha256
    of every object under web/, and the serial in status."""
    snap: dict[str, str] = {}
    for key in sorted(await bucket_keys(client, prefix)):
        response = await client.get_object(Bucket=BUCKET, Key=f"{prefix}/{key}")
        body = response["Body"]
        data: bytes = await body.read()  # type: ignore[attr-defined]
        body.close()  # type: ignore[attr-defined]
        if key.startswith("web/"):
            snap[key] = hashlib.sha256(data).hexdigest()
        elif key == "status":
            snap[key] = data.decode().strip()
    return snap


async def uploads_left(client: S3Client, prefix: str) -> int:
    response = await client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix + "/")
    return len(items(response, "Uploads"))


async def test_a_full_sync_writes_the_filesystem_tree_into_the_bucket(
    upstream: FakeUpstream, s3_server: S3Server, tmp_path: Path
) -> None:
    prefix = fresh_prefix()
    state = tmp_path / "s3-state"
    reference = tmp_path / "reference"
    outcome = await mirror(s3_config(state, upstream, s3_server, prefix))
    await mirror(make_config(reference, upstream, json=True))
    async with s3_server.client() as client:
        snapshot = await bucket_snapshot(client, prefix)
        keys = set(await bucket_keys(client, prefix))
    local = sorted(p.name for p in state.iterdir())
    assert (outcome.exit_code, snapshot) == (0, tree_snapshot(reference))
    # Only the tree and the two copies in the bucket; the state stays local, no web/ there.
    assert {k for k in keys if not k.startswith("web/")} == {"status", "generation"}
    assert ("web" in local, {"status", "ledger", "generation"} <= set(local)) == (False, True)


Mutation = Callable[[FakeIndex], object]

MUTATIONS: dict[str, Mutation] = {
    "touch": lambda index: index.touch(["alpha", "beta"]),
    "remove_file": lambda index: index.remove_file("alpha", "alpha-1.0.tar.gz"),
    "remove_release": lambda index: index.remove_release("beta", "1.0"),
    "yank": lambda index: index.yank("gamma", "1.0", "superseded"),
    "remove_project": lambda index: index.remove_project("delta"),
    "add_project": lambda index: index.add_project("Late_Comer", ["1.0", "1.1"]),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
async def test_an_incremental_sync_matches_the_filesystem(
    upstream: FakeUpstream, s3_server: S3Server, tmp_path: Path, mutation: str
) -> None:
    prefix = fresh_prefix()
    s3 = s3_config(tmp_path / "s3-state", upstream, s3_server, prefix)
    fs = make_config(tmp_path / "reference", upstream, json=True)
    await mirror(s3)
    await mirror(fs)
    MUTATIONS[mutation](upstream.index)
    outcomes = [(await mirror(s3)).exit_code, (await mirror(fs)).exit_code]
    async with s3_server.client() as client:
        snapshot = await bucket_snapshot(client, prefix)
    assert (outcomes, snapshot) == ([0, 0], tree_snapshot(tmp_path / "reference"))


async def test_a_run_killed_mid_sync_resumes_to_the_same_tree(
    s3_server: S3Server, tmp_path: Path
) -> None:
    index = FakeIndex.generate(60, files_per_project=2)
    index.add_small_projects()
    prefix = fresh_prefix()
    state = tmp_path / "s3-state"
    with FakeUpstream(index, latency=0.02) as upstream:
        config_file = tmp_path / "s3.toml"
        config_file.write_text(tomli_w.dumps(s3_mapping(state, upstream, s3_server, prefix)))
        async with s3_server.client() as client:
            proc = await asyncio.create_subprocess_exec(
                *CLI, "-c", str(config_file), "mirror", stdout=DEVNULL, stderr=PIPE
            )
            try:
                deadline = time.monotonic() + 60
                placed = 0
                # Bounded wait for the moment to kill: a dozen files in the bucket.
                while proc.returncode is None and time.monotonic() < deadline:
                    keys = await bucket_keys(client, prefix)
                    placed = sum(1 for k in keys if k.startswith("web/packages/"))
                    if placed >= KILL_AFTER_FILES:
                        break
                    await asyncio.sleep(0.02)
                if proc.returncode is None:
                    proc.send_signal(signal.SIGKILL)
            finally:
                _, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == -signal.SIGKILL, err.decode()
            after_kill = await bucket_keys(client, prefix)
            upstream.latency = 0.0
            resumed = await mirror(
                config_from_mapping(s3_mapping(state, upstream, s3_server, prefix), config_file)
            )
            snapshot = await bucket_snapshot(client, prefix)
            leftovers = (
                await uploads_left(client, prefix),
                ".lock" in await bucket_keys(client, prefix),
            )
        reference = tmp_path / "reference"
        await mirror(make_config(reference, upstream, json=True))
    # Killed mid-run: files placed, the root index and status not yet, the lock left behind
    # (the resumed run, on the same host and directory, takes it over at once).
    assert (placed >= KILL_AFTER_FILES, "status" in after_kill, ".lock" in after_kill) == (
        True,
        False,
        True,
    )
    assert (resumed.exit_code, snapshot, leftovers) == (0, tree_snapshot(reference), (0, False))
