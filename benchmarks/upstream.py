"""The fake upstream in a process of its own, with an optional TLS port (bandersnatch's
``verify`` accepts only an https upstream), plus the harness's handle on it.

Run ``python -m benchmarks.upstream --projects N [--tls-cert C --tls-key K]``: it prints one JSON
line ``{"http": URL, "https": URL | null}`` and serves until SIGTERM. The app is the test suite's
`tests.fake_upstream.FakeUpstream`; only the listening sockets are added here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from aiohttp import web

from tests.fake_upstream import FakeIndex, FakeUpstream

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class RemoteFile:
    url: str
    sha256: str
    size: int


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl CLI), made once per cache."""
    cert, key = directory / "localhost.pem", directory / "localhost.key"
    if not cert.exists():
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "30",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
            ],
            check=True,
            capture_output=True,
        )
    return cert, key


class UpstreamProcess:
    """``with UpstreamProcess(projects=...) as up: up.url``: the standalone server, started and
    stopped by the harness, pinned to ``cpus`` so the measured clients get the others."""

    def __init__(
        self,
        *,
        projects: int,
        files_per_project: int = 2,
        file_size: int = 0,
        latency: float = 0.0,
        blob_cache_mb: int = 256,
        tls: tuple[Path, Path] | None = None,
        cpus: set[int] | None = None,
        log: Path,
    ) -> None:
        self.argv = [
            sys.executable,
            "-m",
            "benchmarks.upstream",
            "--projects",
            str(projects),
            "--files-per-project",
            str(files_per_project),
            "--file-size",
            str(file_size),
            "--latency",
            str(latency),
            "--blob-cache-mb",
            str(blob_cache_mb),
        ]
        if tls is not None:
            self.argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        self.cpus = cpus
        self.log = log
        self.url = self.https_url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        with self.log.open("ab") as err:
            self._proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
        if self.cpus:
            os.sched_setaffinity(self._proc.pid, self.cpus)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fake upstream did not start; see {self.log}")
        urls = json.loads(line)
        self.url, self.https_url = urls["http"], urls["https"] or ""
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def _get(self, path: str, accept: str = SIMPLE_JSON) -> Any:
        request = urllib.request.Request(self.url + path, headers={"Accept": accept})
        with urllib.request.urlopen(request, timeout=600) as resp:
            return json.load(resp)

    def project_names(self) -> list[str]:
        return [p["name"] for p in self._get("/simple/")["projects"]]

    def files(self, threads: int = 16) -> list[RemoteFile]:
        """Every file of every project, from the project pages (which also warms the server:
        it builds and hashes each file when its page is first asked for)."""

        def page(name: str) -> Iterator[RemoteFile]:
            for f in self._get(f"/simple/{name}/")["files"]:
                yield RemoteFile(f["url"], f["hashes"]["sha256"], f["size"])

        with ThreadPoolExecutor(threads) as pool:
            return [
                f
                for files in pool.map(lambda n: list(page(n)), self.project_names())
                for f in files
            ]

    def state(self) -> dict[str, int]:
        result: dict[str, int] = self._get("/_fake/state", "application/json")
        return result

    def touch(self, count: int, offset: int = 0) -> int:
        """``POST /_fake/touch``: a new release for ``count`` projects spread over the listing
        (another ``offset``, other projects); returns the new serial."""
        request = urllib.request.Request(
            self.url + "/_fake/touch",
            data=json.dumps({"count": count, "offset": offset}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=600) as resp:
            return int(json.load(resp)["serial"])


async def _serve(upstream: FakeUpstream, cert: str | None, key: str | None) -> None:
    runner = web.AppRunner(upstream.make_app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    http_port = runner.addresses[0][1]
    https_url = None
    if cert and key:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
        https_port = next(a[1] for a in runner.addresses if a[1] != http_port)
        https_url = f"https://127.0.0.1:{https_port}"
    print(json.dumps({"http": f"http://127.0.0.1:{http_port}", "https": https_url}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upstream")
    parser.add_argument("--projects", type=int, required=True)
    parser.add_argument("--files-per-project", type=int, default=2)
    parser.add_argument("--file-size", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--blob-cache-mb", type=int, default=256)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args(argv)
    index = FakeIndex.generate(
        args.projects,
        files_per_project=args.files_per_project,
        file_size=args.file_size,
        blob_cache_bytes=args.blob_cache_mb << 20,
    )
    upstream = FakeUpstream(index, latency=args.latency, record=False)
    asyncio.run(_serve(upstream, args.tls_cert, args.tls_key))
    # Freeing a 700,000-project index object by object takes minutes: skip it.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
