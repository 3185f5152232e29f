"""examples/nginx-s3.conf run by the real nginx in front of SeaweedFS, over a bucket that
`mirror` wrote: negotiation, exact types whatever the store stored, caching, 404s, safety, pip.

The example is used as shipped, with only its three placeholders substituted. The bucket is
`PUBLIC_BUCKET`, which SeaweedFS lets anonymous clients read (nginx sends no credentials).
"""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from bandersnatch_clone.config import config_from_mapping
from bandersnatch_clone.storage.s3 import open_s3
from tests.fake_upstream import FakeIndex, FakeUpstream
from tests.minitree import (
    ACCEPT_CASES,
    PIP_ACCEPT,
    TEXT_HTML,
    TRAVERSALS,
    V1_HTML,
    V1_JSON,
    Reply,
    free_port,
    http_get,
    nginx_binary,
    pip_command,
    pip_env,
    stop_process,
    wait_until_answering,
)
from tests.mirror_helpers import make_config, mirror
from tests.s3server import PUBLIC_BUCKET, S3Server, run_sync

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NGINX_S3 = EXAMPLES / "nginx-s3.conf"
PREFIX = "pypi"
PAGES = {TEXT_HTML: "index.html", V1_HTML: "index.v1_html", V1_JSON: "index.v1_json"}
PAGE_CACHE = "max-age=600"
FILE_CACHE = "max-age=365000000, immutable"
SECRET = b"top-secret: in the bucket, outside web/"
# What resolving "alpha" against FakeIndex.small() installs (alpha 2.0 needs beta>=1.0).
INSTALLED = {"alpha": "2.0", "beta": "1.1"}


@dataclass(frozen=True)
class Proxy:
    port: int
    reference: Path  # the same upstream mirrored to a directory: the bytes to expect

    def get(self, target: str, headers: dict[str, str] | None = None, method: str = "GET") -> Reply:
        return http_get(self.port, target, headers, method)

    def read(self, path: str) -> bytes:
        return (self.reference / path).read_bytes()

    def file(self, name: str) -> PurePosixPath:
        """``/packages/...`` URL of a file of that name."""
        found = next((self.reference / "web/packages").rglob(name))
        return PurePosixPath("/") / found.relative_to(self.reference / "web")


@contextmanager
def running_nginx_s3(binary: str, endpoint: str, run_dir: Path) -> Iterator[int]:
    """nginx with examples/nginx-s3.conf, placeholders substituted; yields its port."""
    run_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    values = {
        "__LISTEN__": f"127.0.0.1:{port}",
        "__S3__": endpoint.removeprefix("http://"),
        "__BUCKET_PATH__": f"/{PUBLIC_BUCKET}/{PREFIX}",
    }
    conf = NGINX_S3.read_text()
    for placeholder, value in values.items():
        assert placeholder in conf
        conf = conf.replace(placeholder, value)
    (run_dir / "nginx.conf").write_text(conf)
    directives = f"daemon off; pid {run_dir / 'nginx.pid'};"
    if os.geteuid() == 0:
        directives += f" user {pwd.getpwuid(os.getuid()).pw_name};"
    log = run_dir / "output.log"
    argv = [binary, "-p", f"{run_dir}/", "-e", str(run_dir / "error.log")]
    argv += ["-c", str(run_dir / "nginx.conf"), "-g", directives]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        wait_until_answering(proc, port, log, "nginx")
        yield port
    finally:
        stop_process(proc)


async def _sync(server: S3Server, upstream: FakeUpstream, base: Path) -> None:
    table = {**server.table(bucket=PUBLIC_BUCKET, prefix=PREFIX)}
    data = {
        "mirror": {"directory": str(base / "s3-state"), "upstream": upstream.url, "json": True},
        "storage": {"backend": "s3", "s3": table},
    }
    s3 = config_from_mapping(data, base / "s3.toml")
    for config in (s3, make_config(base / "reference", upstream, json=True)):
        assert (await mirror(config)).exit_code == 0
    # Something outside web/ that must never be served.
    async with open_s3(server.options(bucket=PUBLIC_BUCKET, prefix=PREFIX), owner="t") as tree:
        await tree.write_bytes(PurePosixPath("SECRET"), SECRET)


@pytest.fixture(scope="module")
def proxy(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (Debian/Ubuntu: apt-get install nginx-light)")
    base = tmp_path_factory.mktemp("nginx-s3")
    with FakeUpstream(FakeIndex.small()) as upstream:
        run_sync(_sync(s3_server, upstream, base))
    with running_nginx_s3(binary, s3_server.endpoint, base / "run") as port:
        yield Proxy(port, base / "reference")


# --- negotiation --------------------------------------------------------------------------------


@pytest.mark.parametrize("project", [None, "alpha"])
@pytest.mark.parametrize(("accept", "expected"), ACCEPT_CASES)
def test_page_negotiation(
    proxy: Proxy, project: str | None, accept: str | None, expected: str | None
) -> None:
    media_type = expected or TEXT_HTML
    url = "/simple/" if project is None else f"/simple/{project}/"
    reply = proxy.get(url, {} if accept is None else {"Accept": accept})
    page = "web/simple/" + ("" if project is None else f"{project}/") + PAGES[media_type]
    assert (reply.status, reply.headers["Content-Type"], reply.body) == (
        200,
        media_type,
        proxy.read(page),
    )


def test_pip_gets_json_with_its_caching(proxy: Proxy) -> None:
    reply = proxy.get("/simple/alpha/", {"Accept": PIP_ACCEPT})
    vary = {v.strip() for h in reply.headers.get_all("Vary", []) for v in h.split(",")}
    got = (reply.headers["Content-Type"], "Accept" in vary, reply.headers["Cache-Control"])
    assert got == (V1_JSON, True, PAGE_CACHE)


def _negotiation(config: str) -> str:
    """An nginx config's PEP 691 negotiation: its comment block to the $pep691_page map."""
    start = config.index("    # PEP 691 content negotiation")
    end = config.index("\n    }\n", config.index("$pep691_page {")) + len("\n    }\n")
    return config[start:end]


def test_the_configs_negotiate_alike() -> None:
    """nginx-s3.conf carries nginx.conf's negotiation maps unchanged."""
    plain, s3 = (_negotiation((EXAMPLES / n).read_text()) for n in ("nginx.conf", "nginx-s3.conf"))
    assert (len(plain) > 5000, plain) == (True, s3)


def test_redirect_to_the_normal_form(proxy: Proxy) -> None:
    reply = proxy.get("/simple/Zope.Interface_Thing")
    while reply.status == 301 and reply.headers["Location"] != "/simple/zope-interface-thing/":
        reply = proxy.get(reply.headers["Location"])
    assert (reply.status, reply.headers["Location"]) == (301, "/simple/zope-interface-thing/")


# --- files and the JSON API ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("alpha-2.0-py3-none-any.whl", "application/octet-stream"),
        # SeaweedFS stored application/gzip for it: the config's type wins.
        ("alpha-2.0.tar.gz", "application/octet-stream"),
        ("alpha-2.0-py3-none-any.whl.metadata", "text/plain; charset=utf-8"),
    ],
)
def test_files_go_out_with_exact_types_uncompressed(
    proxy: Proxy, name: str, content_type: str
) -> None:
    url = proxy.file(name)
    reply = proxy.get(str(url), {"Accept-Encoding": "gzip"})
    got = (
        reply.status,
        reply.headers["Content-Type"],
        reply.headers["Cache-Control"],
        reply.headers["Content-Encoding"],
        reply.body,
    )
    body = proxy.read(f"web{url}")
    assert got == (200, content_type, FILE_CACHE, None, body)


def test_file_range_and_conditional_requests(proxy: Proxy) -> None:
    url = str(proxy.file("alpha-2.0-py3-none-any.whl"))
    body = proxy.read(f"web{url}")
    ranged = proxy.get(url, {"Range": "bytes=10-29"})
    etag = proxy.get(url).headers["ETag"]
    again = proxy.get(url, {"If-None-Match": etag})
    assert (ranged.status, ranged.body, again.status) == (206, body[10:30], 304)


@pytest.mark.parametrize("url", ["/pypi/alpha/json", "/json/alpha"])
def test_json_api(proxy: Proxy, url: str) -> None:
    reply = proxy.get(url)
    got = (reply.headers["Content-Type"], reply.headers["Cache-Control"], reply.body)
    assert got == ("application/json", PAGE_CACHE, proxy.read("web/json/alpha"))


# --- 404s and safety ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/simple/not-mirrored/",
        "/pypi/not-mirrored/json",
        "/json/not-mirrored",
        "/packages/aa/bb/cc/missing-1.0.tar.gz",
        "/packages/",
        "/simple/alpha/index.html",
        "/status",
        "/SECRET",
        "/",
    ],
)
def test_not_found_says_what(proxy: Proxy, url: str) -> None:
    reply = proxy.get(url)
    got = (reply.status, reply.headers["Content-Type"], f"Not found: {url}".encode() in reply.body)
    assert got == (404, "text/plain; charset=utf-8", True)


def test_a_folder_is_not_a_file(proxy: Proxy) -> None:
    folder = proxy.file("alpha-2.0-py3-none-any.whl").parent
    statuses = [proxy.get(f"{folder}/").status, proxy.get(str(folder)).status]
    assert statuses == [404, 404]


@pytest.mark.parametrize("target", [*TRAVERSALS, "/packages/../SECRET", "/packages/%2e%2e/SECRET"])
def test_nothing_outside_web_is_served(proxy: Proxy, target: str) -> None:
    reply = proxy.get(target)
    assert (reply.status in (400, 404), SECRET in reply.body) == (True, False)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_read_only(proxy: Proxy, method: str) -> None:
    url = str(proxy.file("alpha-2.0-py3-none-any.whl"))
    statuses = [proxy.get(u, method=method).status for u in ("/simple/alpha/", url)]
    assert (statuses, proxy.get(url).status) == ([405, 405], 200)


# --- a real client ------------------------------------------------------------------------------


def test_pip_installs_a_project_and_its_dependency(proxy: Proxy, tmp_path: Path) -> None:
    target = tmp_path / "target"
    index = f"http://127.0.0.1:{proxy.port}/simple/"
    env = {k: v for k, v in pip_env().items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    result = subprocess.run(
        pip_command("install", index, "--target", str(target), "alpha"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    dist_infos = {p.name for p in target.glob("*.dist-info")}
    assert dist_infos == {f"{name}-{version}.dist-info" for name, version in INSTALLED.items()}
