"""`export` and `status` on the S3 backend (SeaweedFS): bundles written from a bucket mirror and
imported into an empty filesystem mirror rebuild the tree the filesystem backend writes from the
same upstream; an object whose bytes differ from its recorded sha256 fails the export; `status`
shows the serial the bucket publishes and flags when it is not the local one.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
import tomli_w

from bandersnatch_clone.cli import main
from bandersnatch_clone.config import Config, load_config
from bandersnatch_clone.state import read_status
from bandersnatch_clone.storage.s3client import items
from tests.airgap_helpers import mirror_state, offline_config
from tests.fake_index import FakeIndex
from tests.fake_upstream import FakeUpstream
from tests.mirror_helpers import make_config, mirror
from tests.s3server import BUCKET, S3Server, fresh_prefix
from tests.test_s3_mirror import s3_mapping
from tests.treecheck import check_tree


async def cli(*argv: str) -> int:
    """The CLI in a thread: it runs its own event loop."""
    return await asyncio.to_thread(main, list(argv))


async def cli_output(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = await cli(*argv)
    return code, capsys.readouterr().out


def s3_config_file(
    directory: Path, upstream: FakeUpstream, server: S3Server, prefix: str, path: Path
) -> Path:
    path.write_text(tomli_w.dumps(s3_mapping(directory, upstream, server, prefix)))
    return path


def _second(index: FakeIndex) -> None:
    index.touch(["alpha"])
    index.remove_project("gamma")  # pages, JSON copies and files: deletions in the bundle
    index.add_project("newproj", ["1.0"])


async def test_bundles_from_a_bucket_rebuild_the_filesystem_tree(
    upstream: FakeUpstream, s3_server: S3Server, tmp_path: Path
) -> None:
    a_file = s3_config_file(
        tmp_path / "a", upstream, s3_server, fresh_prefix(), tmp_path / "a.toml"
    )
    a = load_config(a_file)
    reference = make_config(tmp_path / "reference", upstream, json=True)
    b = tmp_path / "b"
    b_file = offline_config(tmp_path / "b.toml", b)
    states: list[tuple[dict[str, str], dict[str, str]]] = []
    codes: list[int] = []
    for step, since in ((None, "--since=0"), (_second, "--since-last")):
        if step is not None:
            step(upstream.index)
        codes += [(await mirror(a)).exit_code, (await mirror(reference)).exit_code]
        bundle = tmp_path / f"bundle-{len(states)}.tar.gz"
        codes.append(await cli("-c", str(a_file), "export", since, str(bundle)))
        codes.append(await cli("-c", str(b_file), "import", str(bundle)))
        states.append((mirror_state(b), mirror_state(reference.mirror.directory)))
    assert codes == [0] * 8
    assert [left == right for left, right in states] == [True, True]
    assert (check_tree(b), read_status(b)) == ([], read_status(a.mirror.directory))


async def test_an_object_that_is_not_what_it_records_fails_the_export(
    upstream: FakeUpstream,
    s3_server: S3Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = fresh_prefix()
    config_file = s3_config_file(tmp_path / "a", upstream, s3_server, prefix, tmp_path / "a.toml")
    assert (await mirror(load_config(config_file))).exit_code == 0
    async with s3_server.client() as client:
        listing = await client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/web/packages/")
        keys = [str(o["Key"]) for o in items(listing, "Contents")]
        (key,) = [k for k in keys if k.endswith("-0.1.tar.gz")]
        head = await client.head_object(Bucket=BUCKET, Key=key)
        body = b"x" * int(str(head["ContentLength"]))
        # Same size, the good digest kept: only hashing the bytes on their way out can tell.
        await client.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata=head["Metadata"])
    bundle = tmp_path / "bundle.tar.gz"
    code = await cli("-c", str(config_file), "export", "--since=0", str(bundle))
    err = capsys.readouterr().err
    left = await asyncio.to_thread(os.listdir, tmp_path)  # no bundle, not even a partial one
    assert (code, "export again" in err, sorted(left)) == (1, True, ["a", "a.toml"])


# -- status --------------------------------------------------------------------------------


async def test_status_shows_the_serial_the_bucket_publishes(
    upstream: FakeUpstream,
    s3_server: S3Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = fresh_prefix()
    config_file = s3_config_file(tmp_path / "a", upstream, s3_server, prefix, tmp_path / "a.toml")
    before = await cli_output(capsys, "-c", str(config_file), "--json", "status")
    config: Config = load_config(config_file)
    assert (await mirror(config)).exit_code == 0
    serial = read_status(config.mirror.directory)
    after = await cli_output(capsys, "-c", str(config_file), "--json", "status")
    async with s3_server.client() as client:
        # A state directory that no longer describes the bucket (another one wrote it since).
        await client.put_object(Bucket=BUCKET, Key=f"{prefix}/status", Body=b"%d\n" % (serial + 5))
    text = await cli_output(capsys, "-c", str(config_file), "status")
    assert (before[0], json.loads(before[1])["published"]) == (0, {"serial": None, "in_step": True})
    assert (after[0], json.loads(after[1])["published"]) == (0, {"serial": serial, "in_step": True})
    line = next(x for x in text[1].splitlines() if x.startswith("published:"))
    assert (text[0], f"{serial + 5}, AHEAD of the local serial {serial}" in line) == (0, True)
