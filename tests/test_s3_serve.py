"""`serve` from an S3 bucket (SeaweedFS): the same answers as `serve` from a directory mirrored
from the same upstream (pages, negotiation, files, Range, serials), ETag and 304 from the sha256
each object carries, and pip installing through ``bandersnatch-clone serve`` on a bucket mirror.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from bandersnatch_clone.cli import main
from bandersnatch_clone.config import load_config
from bandersnatch_clone.serve import make_app
from bandersnatch_clone.serve_store import StoreTree, byte_range
from tests.fake_upstream import FakeIndex, FakeUpstream
from tests.minitree import (
    PIP_ACCEPT,
    TEXT_HTML,
    UV_ACCEPT,
    V1_HTML,
    V1_JSON,
    Running,
    free_port,
    pip_command,
    pip_env,
    stop_process,
    wait_until_answering,
)
from tests.mirror_helpers import make_config, mirror
from tests.s3server import S3Server, fresh_prefix, run_sync
from tests.test_s3_mirror import s3_mapping

Client = TestClient[web.Request, web.Application]
WHEEL = "alpha-2.0-py3-none-any.whl"
#: Headers a client acts on; the rest (Date, Server, ETag's form) may differ between servers.
COMPARED = (
    "Content-Type",
    "Cache-Control",
    "Vary",
    "X-PyPI-Last-Serial",
    "Content-Range",
    "Content-Length",
    "Location",
)


@dataclass(frozen=True)
class Mirrors:
    """One upstream mirrored twice: into a directory and into a bucket prefix."""

    directory: Path
    prefix: str
    s3_config: Path

    def file_url(self, filename: str) -> str:
        (found,) = (self.directory / "web").glob(f"packages/*/*/*/{filename}")
        return "/" + found.relative_to(self.directory / "web").as_posix()


@pytest.fixture(scope="module")
def mirrors(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Mirrors:
    base = tmp_path_factory.mktemp("s3-serve")
    prefix = fresh_prefix()
    with FakeUpstream(FakeIndex.small()) as upstream:
        mapping = s3_mapping(base / "s3-state", upstream, s3_server, prefix)
        config_file = base / "s3.toml"
        config_file.write_text(tomli_w.dumps(mapping))
        codes = [
            run_sync(mirror(load_config(config_file))).exit_code,
            run_sync(mirror(make_config(base / "reference", upstream, json=True))).exit_code,
        ]
    assert codes == [0, 0]
    return Mirrors(base / "reference", prefix, config_file)


@pytest.fixture
async def clients(
    mirrors: Mirrors, s3_server: S3Server, aiohttp_client: AiohttpClient
) -> AsyncIterator[tuple[Client, Client]]:
    """(serve from the directory, serve from the bucket)."""
    async with s3_server.storage(prefix=mirrors.prefix) as storage:
        local = await aiohttp_client(make_app(mirrors.directory / "web"))
        store = await aiohttp_client(make_app(StoreTree(storage)))
        yield local, store


async def _answer(
    client: Client, url: str, headers: dict[str, str], method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    async with client.request(method, url, headers=headers, allow_redirects=False) as resp:
        seen = {k: resp.headers[k] for k in COMPARED if k in resp.headers}
        return resp.status, seen, await resp.read()


REQUESTS: list[tuple[str, dict[str, str]]] = [
    ("/simple/", {"Accept": PIP_ACCEPT}),
    ("/simple/", {"Accept": V1_HTML}),
    ("/simple/", {}),
    ("/simple/alpha/", {"Accept": UV_ACCEPT}),
    ("/simple/alpha/", {"Accept": TEXT_HTML}),
    ("/simple/zope-interface-thing/", {"Accept": V1_JSON}),
    ("/simple/Zope.Interface_Thing/", {}),
    ("/simple/not-mirrored/", {}),
    ("/pypi/alpha/json", {}),
    ("/json/beta", {}),
    ("/json/not-mirrored", {}),
    ("{wheel}", {}),
    ("{wheel}.metadata", {}),
    ("{wheel}", {"Range": "bytes=10-29"}),
    ("{wheel}", {"Range": "bytes=-22"}),
    ("{wheel}", {"Range": "bytes=100-"}),
    ("/packages/aa/bb/cc/missing-1.0.tar.gz", {}),
    ("/status", {}),
]


@pytest.mark.parametrize(("url", "headers"), REQUESTS)
async def test_the_bucket_is_served_as_the_directory_is(
    mirrors: Mirrors, clients: tuple[Client, Client], url: str, headers: dict[str, str]
) -> None:
    url = url.replace("{wheel}", mirrors.file_url(WHEEL))
    local, store = clients
    assert await _answer(store, url, headers) == await _answer(local, url, headers)


async def test_head_gives_the_length_and_no_body(
    mirrors: Mirrors, clients: tuple[Client, Client]
) -> None:
    local, store = clients
    url = mirrors.file_url(WHEEL)
    answer = await _answer(store, url, {}, "HEAD")
    assert (answer, answer[1]["Content-Length"] != "0") == (
        await _answer(local, url, {}, "HEAD"),
        True,
    )


@pytest.mark.parametrize("url", ["/simple/alpha/", "{wheel}"])
async def test_etag_is_the_recorded_sha256_and_gives_304(
    mirrors: Mirrors, clients: tuple[Client, Client], url: str
) -> None:
    url = url.replace("{wheel}", mirrors.file_url(WHEEL))
    _, store = clients
    async with store.get(url, headers={"Accept": PIP_ACCEPT}) as resp:
        etag = resp.headers["ETag"]
    headers = {"Accept": PIP_ACCEPT, "If-None-Match": etag}
    async with store.get(url, headers=headers) as resp:
        got = (resp.status, await resp.read(), resp.headers["Cache-Control"])
    assert (len(etag), got[:2]) == (66, (304, b""))


async def test_an_unsatisfiable_range_is_416(
    mirrors: Mirrors, clients: tuple[Client, Client]
) -> None:
    _, store = clients
    async with store.get(mirrors.file_url(WHEEL), headers={"Range": "bytes=99999999-"}) as resp:
        got = (resp.status, resp.headers.get("Content-Range"))
    size = (mirrors.directory / "web" / mirrors.file_url(WHEEL)[1:]).stat().st_size
    assert got == (416, f"bytes */{size}")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 10)),
        ("bytes=10-", (10, 100)),
        ("bytes=-22", (78, 100)),
        ("bytes=-500", (0, 100)),
        ("bytes=90-500", (90, 100)),
        ("bytes=100-", False),
        ("bytes=1000-", False),
        ("bytes=-0", False),
        ("bytes=0-1,5-6", None),
        ("bytes=9-3", None),
        ("items=0-9", None),
        ("bytes=-", None),
    ],
)
def test_byte_range(header: str | None, expected: tuple[int, int] | bool | None) -> None:
    assert byte_range(header, 100) == expected


@pytest.mark.slow
def test_pip_installs_through_serve_on_a_bucket_mirror(mirrors: Mirrors, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("bandersnatch-clone")
    running = Running(free_port(), tmp_path / "serve.log")
    argv = [str(script), "-c", str(mirrors.s3_config), "serve", "--bind"]
    with running.log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, f"127.0.0.1:{running.port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=pip_env(),
        )
    try:
        wait_until_answering(proc, running.port, running.log, "bandersnatch-clone serve")
        target = tmp_path / "target"
        index = f"http://127.0.0.1:{running.port}/simple/"
        result = subprocess.run(
            pip_command("install", index, "--target", str(target), "alpha"),
            env=pip_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        stop_process(proc, signal.SIGINT)
    installed = sorted(p.name for p in target.glob("*.dist-info"))
    assert (result.returncode, installed) == (0, ["alpha-2.0.dist-info", "beta-1.1.dist-info"]), (
        result.stderr
    )
    assert proc.returncode == 0, running.log.read_text(errors="replace")


async def test_serve_refuses_a_bucket_with_no_mirror(s3_server: S3Server, tmp_path: Path) -> None:
    with FakeUpstream(FakeIndex.small()) as upstream:
        mapping = s3_mapping(tmp_path / "state", upstream, s3_server, fresh_prefix())
    config_file = tmp_path / "empty.toml"
    config_file.write_text(tomli_w.dumps(mapping))
    code = await asyncio.to_thread(main, ["-c", str(config_file), "serve", "--bind", "127.0.0.1:0"])
    assert code == 2
