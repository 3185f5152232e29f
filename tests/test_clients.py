"""Issue 3's acceptance, end to end: real pip, uv, nginx and CLI over a mirror synced for real.

One module-scoped mirror is synced by `bandersnatch_clone.mirror.run` from the fake upstream
(`FakeIndex.small()`), then served twice on 127.0.0.1: by nginx with examples/nginx.conf (only root
and port substituted) and by ``bandersnatch-clone serve`` started as a subprocess. Every client
test runs against both. nginx's access log (the example sends it to stdout) shows exactly what uv
fetches; a second mirror synced from ``serve`` must come out identical to the first.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w

from bandersnatch_clone.config import config_from_mapping
from bandersnatch_clone.layout import HTML_PAGE, V1_HTML_PAGE, V1_JSON_PAGE
from bandersnatch_clone.mirror import run
from tests.fake_upstream import FakeIndex, FakeUpstream
from tests.minitree import (
    BROWSER_ACCEPT,
    PIP_ACCEPT,
    TEXT_HTML,
    TRAVERSALS,
    UV_ACCEPT,
    V1_HTML,
    V1_JSON,
    Reply,
    Running,
    free_port,
    http_get,
    nginx_binary,
    pip_command,
    pip_download_args,
    pip_env,
    running_nginx,
    stop_process,
    wait_until_answering,
)
from tests.treecheck import check_tree, tree_snapshot

pytestmark = pytest.mark.slow

CONFIG_NAME = "bandersnatch-clone.toml"
PAGE_FOR = {TEXT_HTML: HTML_PAGE, V1_HTML: V1_HTML_PAGE, V1_JSON: V1_JSON_PAGE}
# What resolving "alpha" against FakeIndex.small() must pick: alpha 2.0 needs beta>=1.0, and
# beta's newest final release is 1.1 (2.0b1 is a pre-release, so no resolver takes it unasked).
ALPHA_WHEEL = "alpha-2.0-py3-none-any.whl"
BETA_WHEEL = "beta-1.1-py3-none-any.whl"
INSTALLED = {"alpha": "2.0", "beta": "1.1"}
# In nginx's default ("combined") access log format: the request line and the status.
_ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')
_CLIENT_TIMEOUT = 120


@dataclass(frozen=True)
class Mirror:
    """A mirror directory synced for real, with the config file that names it."""

    directory: Path
    config: Path

    @property
    def web(self) -> Path:
        return self.directory / "web"

    def file(self, filename: str) -> Path:
        """The distribution (or ``.metadata``) file of that name under web/packages/."""
        (found,) = self.web.glob(f"packages/*/*/*/{filename}")
        return found

    def url(self, filename: str) -> str:
        """The absolute URL path a server gives that file at: ``/packages/aa/bb/.../<name>``."""
        return "/" + self.file(filename).relative_to(self.web).as_posix()

    def outside_web(self) -> dict[str, bytes]:
        """Every non-empty file of the mirror directory outside web/ (status, ledger, config...)."""
        return {
            p.name: p.read_bytes()
            for p in self.directory.iterdir()
            if p.is_file() and p.stat().st_size > 0
        }


@dataclass(frozen=True)
class Server:
    """One of the two servers over the mirror: ``nginx`` or ``serve``."""

    name: str
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def index_url(self) -> str:
        return f"{self.base_url}/simple/"

    def get(self, target: str, headers: dict[str, str] | None = None) -> Reply:
        return http_get(self.port, target, headers)


def _write_config(directory: Path, upstream: str) -> tuple[Path, dict[str, dict[str, object]]]:
    """A config file for ``directory`` (kept inside it, so serving it would be a leak), and its
    contents. The JSON API copies are on, so that they are served and chained too."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_NAME
    mapping: dict[str, dict[str, object]] = {
        "mirror": {"directory": str(directory), "upstream": upstream, "json": True}
    }
    path.write_text(tomli_w.dumps(mapping))
    return path, mapping


def _cli() -> list[str]:
    """The installed ``bandersnatch-clone`` entry point of this interpreter's environment."""
    script = Path(sys.executable).with_name("bandersnatch-clone")
    if not script.exists():
        pytest.fail(f"{script} is missing: install the project (pip install -e .[test])")
    return [str(script)]


def _uv() -> str | None:
    beside = Path(sys.executable).with_name("uv")
    return str(beside) if beside.exists() else shutil.which("uv")


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=_CLIENT_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return result


def _client_env() -> dict[str, str]:
    """No proxy, no pip or uv settings from the environment or config files, no cache: the
    clients see one index (the one on their command line, on loopback) and nothing else."""
    env = {k: v for k, v in pip_env().items() if not k.startswith(("PIP_", "UV_"))}
    env["PIP_CONFIG_FILE"] = "/dev/null"
    env["UV_NO_CONFIG"] = "1"
    env["UV_NO_CACHE"] = "1"
    env["UV_PYTHON"] = sys.executable
    env["UV_PYTHON_DOWNLOADS"] = "never"
    return env


# --- the mirror and its two servers -------------------------------------------------------------


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Mirror:
    directory = tmp_path_factory.mktemp("clients") / "mirror"
    with FakeUpstream(FakeIndex.small()) as upstream:
        config_file, mapping = _write_config(directory, upstream.url)
        outcome = asyncio.run(run(config_from_mapping(mapping, config_file)))
    json_copy = (directory / "web" / "json" / "alpha").is_file()
    assert (outcome.exit_code, check_tree(directory), json_copy) == (0, [], True)
    return Mirror(directory, config_file)


@pytest.fixture(scope="module")
def nginx(mirror: Mirror) -> Iterator[Server]:
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (Debian/Ubuntu: apt-get install nginx-light)")
    with running_nginx(binary, mirror.web, mirror.directory.parent / "nginx") as running:
        yield Server("nginx", running.port, running.log)


@pytest.fixture(scope="module")
def serve(mirror: Mirror) -> Iterator[Server]:
    """``bandersnatch-clone -c CONFIG serve --bind 127.0.0.1:PORT``, stopped with Ctrl-C."""
    running = Running(free_port(), mirror.directory.parent / "serve.log")
    argv = [*_cli(), "-c", str(mirror.config), "serve", "--bind", f"127.0.0.1:{running.port}"]
    with running.log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=pip_env()
        )
    try:
        wait_until_answering(proc, running.port, running.log, "bandersnatch-clone serve")
        yield Server("serve", running.port, running.log)
    finally:
        stop_process(proc, signal.SIGINT)
    # Ctrl-C is how an operator stops it: a clean exit, not a traceback.
    assert proc.returncode == 0, running.log.read_text(errors="replace")


@pytest.fixture(scope="module", params=["nginx", "serve"])
def server(request: pytest.FixtureRequest) -> Server:
    found: Server = request.getfixturevalue(request.param)
    return found


@pytest.fixture(scope="module")
def uv() -> str:
    found = _uv()
    if found is None:
        pytest.skip("uv is not installed (it is in the test extra: pip install -e .[test])")
    return found


# --- pip ----------------------------------------------------------------------------------------


def test_pip_download(server: Server, mirror: Mirror, tmp_path: Path) -> None:
    _run(pip_download_args(server.index_url, "alpha", tmp_path), _client_env(), tmp_path)
    got = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert got == {ALPHA_WHEEL: mirror.file(ALPHA_WHEEL).read_bytes()}


def test_pip_install_takes_the_dependency_too(server: Server, tmp_path: Path) -> None:
    target = tmp_path / "target"
    argv = pip_command("install", server.index_url, "--target", str(target), "alpha")
    _run(argv, _client_env(), tmp_path)
    dist_infos = {p.name for p in target.glob("*.dist-info")}
    assert dist_infos == {f"{name}-{version}.dist-info" for name, version in INSTALLED.items()}


# --- uv -----------------------------------------------------------------------------------------


def _uv_venv(uv: str, tmp_path: Path) -> Path:
    """A throwaway venv made by ``uv venv`` (no pip in it); its python."""
    _run([uv, "venv", str(tmp_path / "venv")], _client_env(), tmp_path)
    return tmp_path / "venv" / "bin" / "python"


def _uv_install(uv: str, python: Path, index_url: str, cwd: Path) -> None:
    argv = [uv, "pip", "install", "--python", str(python), "--index-url", index_url, "alpha"]
    _run(argv, _client_env(), cwd)


# Every distribution the venv's python sees, as {name: version}.
_LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m, json;"
    "print(json.dumps({d.name: d.version for d in m.distributions()}))"
)


def test_uv_install_takes_the_dependency_too(server: Server, uv: str, tmp_path: Path) -> None:
    python = _uv_venv(uv, tmp_path)
    _uv_install(uv, python, server.index_url, tmp_path)
    result = _run([str(python), "-c", _LIST_DISTRIBUTIONS], _client_env(), tmp_path)
    assert json.loads(result.stdout) == INSTALLED


# --- negotiation, 404, conditional and Range requests, safety ------------------------------------


@pytest.mark.parametrize("project", [None, "alpha", "zope-interface-thing"])
@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (PIP_ACCEPT, V1_JSON),
        (UV_ACCEPT, V1_JSON),
        (BROWSER_ACCEPT, TEXT_HTML),
        (None, TEXT_HTML),
        (f"{V1_JSON};q=0.1, {V1_HTML}", V1_HTML),
        (f"text/html;q=0.5, {V1_JSON};q=0.6", V1_JSON),
        (f"{V1_HTML};q=0.3, {V1_JSON};q=0.2, text/html;q=0.1", V1_HTML),
        (f"{V1_JSON};q=0, */*", TEXT_HTML),
        ("text/html;q=0, application/*", V1_HTML),
        ("application/vnd.pypi.simple.latest+json", V1_JSON),
    ],
)
def test_page_negotiation(
    server: Server, mirror: Mirror, project: str | None, accept: str | None, media_type: str
) -> None:
    url = "/simple/" if project is None else f"/simple/{project}/"
    reply = server.get(url, {} if accept is None else {"Accept": accept})
    page = mirror.web / url.strip("/") / PAGE_FOR[media_type]
    got = (reply.status, reply.headers["Content-Type"], reply.body)
    assert got == (200, media_type, page.read_bytes())


def test_pip_gets_pep691_json_it_can_read(server: Server) -> None:
    reply = server.get("/simple/alpha/", {"Accept": PIP_ACCEPT})
    doc = json.loads(reply.body)
    got = (doc["name"], doc["versions"], doc["meta"]["api-version"], len(doc["files"]))
    assert got == ("alpha", ["1.0", "2.0"], "1.4", 4)


@pytest.mark.parametrize("accept", [PIP_ACCEPT, BROWSER_ACCEPT])
def test_missing_project_is_404(server: Server, accept: str) -> None:
    assert server.get("/simple/not-mirrored/", {"Accept": accept}).status == 404


def test_file_if_none_match_gives_304(server: Server, mirror: Mirror) -> None:
    url = mirror.url(BETA_WHEEL)
    etag = server.get(url).headers["ETag"]
    reply = server.get(url, {"If-None-Match": etag})
    assert (reply.status, reply.body) == (304, b"")


def test_file_range(server: Server, mirror: Mirror) -> None:
    body = mirror.file(ALPHA_WHEEL).read_bytes()
    reply = server.get(mirror.url(ALPHA_WHEEL), {"Range": "bytes=10-29"})
    got = (reply.status, reply.headers["Content-Range"], reply.body)
    assert got == (206, f"bytes 10-29/{len(body)}", body[10:30])


@pytest.mark.parametrize("target", [t.replace("SECRET", CONFIG_NAME) for t in TRAVERSALS])
def test_nothing_outside_web_is_served(server: Server, mirror: Mirror, target: str) -> None:
    reply = server.get(target)
    # A short file ("72\n", the status) could occur in any body by chance: it leaks if it is the
    # body; a longer one (the config, the ledger) leaks if it is anywhere in it.
    leaked = sorted(
        name
        for name, data in mirror.outside_web().items()
        if (data in reply.body if len(data) >= 16 else reply.body.strip() == data.strip())
    )
    assert (reply.status in (400, 404), leaked) == (True, [])


# --- what uv fetches (counted in nginx's access log) -------------------------------------------


def _access_log(server: Server, start: int) -> list[tuple[str, str, int]]:
    """(method, target, status) of every request nginx logged after byte ``start`` of its log.

    A marker request is sent last and awaited, so every earlier request's line is in the log.
    """
    marker = f"/simple/?log-mark={uuid.uuid4().hex}"
    assert server.get(marker).status == 200
    deadline = time.monotonic() + 10
    while marker not in (text := server.log.read_bytes()[start:].decode(errors="replace")):
        if time.monotonic() > deadline:
            pytest.fail(f"nginx did not log {marker}:\n{text}")
        time.sleep(0.02)
    lines = text[: text.index(marker)].splitlines()
    return sorted(
        (m["method"], m["target"], int(m["status"]))
        for m in map(_ACCESS_LINE.search, lines)
        if m is not None
    )


def _pages_and_metadata(mirror: Mirror) -> list[tuple[str, str, int]]:
    return [
        ("GET", "/simple/alpha/", 200),
        ("GET", "/simple/beta/", 200),
        ("GET", mirror.url(f"{ALPHA_WHEEL}.metadata"), 200),
        ("GET", mirror.url(f"{BETA_WHEEL}.metadata"), 200),
    ]


def test_uv_resolves_from_metadata_files_alone(
    nginx: Server, mirror: Mirror, uv: str, tmp_path: Path
) -> None:
    # PEP 658: the pages announce each wheel's core metadata, so resolving needs two pages and two
    # .metadata files: no wheel, no sdist, no Range request into a wheel (which would be a 206).
    (tmp_path / "requirements.in").write_text("alpha\n")
    start = nginx.log.stat().st_size
    argv = [uv, "pip", "compile", "--no-header", "--no-annotate", "--index-url", nginx.index_url]
    result = _run([*argv, "requirements.in"], _client_env(), tmp_path)
    assert (result.stdout.split(), _access_log(nginx, start)) == (
        [f"{name}=={version}" for name, version in INSTALLED.items()],
        sorted(_pages_and_metadata(mirror)),
    )


def test_uv_install_downloads_only_the_wheels_it_installs(
    nginx: Server, mirror: Mirror, uv: str, tmp_path: Path
) -> None:
    # The venv is made first, so that only `uv pip install` is in the log: it resolves from the
    # .metadata files as above, then downloads alpha 2.0 and beta 1.1 in full; alpha 1.0, beta 1.0
    # and beta 2.0b1 are never downloaded.
    python = _uv_venv(uv, tmp_path)
    start = nginx.log.stat().st_size
    _uv_install(uv, python, nginx.index_url, tmp_path)
    wheels = [("GET", mirror.url(name), 200) for name in (ALPHA_WHEEL, BETA_WHEEL)]
    assert _access_log(nginx, start) == sorted(_pages_and_metadata(mirror) + wheels)


# --- a mirror of the mirror ---------------------------------------------------------------------


def test_mirror_of_the_mirror_is_identical(serve: Server, mirror: Mirror, tmp_path: Path) -> None:
    # Pages link files relatively and carry each project's serial, and the root JSON lists every
    # project with its serial: a second instance pointed at `serve` rebuilds the same bytes, down
    # to the status file. Nothing may legitimately differ.
    config, _ = _write_config(tmp_path / "second", serve.base_url)
    _run([*_cli(), "-c", str(config), "mirror"], pip_env(), tmp_path)
    second = config.parent
    assert (tree_snapshot(second), check_tree(second)) == (tree_snapshot(mirror.directory), [])
