"""A small hand-made mirror tree (real wheels, an sdist, PEP 658 metadata) for the serving tests.

Also what the end-to-end tests share to run real programs on loopback: nginx over a tree with
examples/nginx.conf, polling a server until it answers, stopping it, and pip's command line.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
from packaging.utils import canonicalize_name

from bandersnatch_clone.layout import (
    HTML_PAGE,
    JSON_DIR,
    PACKAGES,
    PYPI_DIR,
    SIMPLE,
    V1_HTML_PAGE,
    V1_JSON_PAGE,
    WEB,
)

V1_JSON = "application/vnd.pypi.simple.v1+json"
V1_HTML = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
PIP_ACCEPT = f"{V1_JSON}, {V1_HTML}; q=0.1, text/html; q=0.01"
UV_ACCEPT = f"{V1_JSON}, {V1_HTML}; q=0.2, text/html; q=0.01"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"

#: (Accept header, the format the server must pick; None = nothing acceptable, so the default).
#: Both the Python server and examples/nginx.conf must agree with every row.
ACCEPT_CASES: list[tuple[str | None, str | None]] = [
    (PIP_ACCEPT, V1_JSON),
    (UV_ACCEPT, V1_JSON),
    (BROWSER_ACCEPT, TEXT_HTML),
    ("*/*", TEXT_HTML),
    (None, TEXT_HTML),
    ("", TEXT_HTML),
    ("   ", TEXT_HTML),
    (V1_JSON, V1_JSON),
    (V1_HTML, V1_HTML),
    ("text/html", TEXT_HTML),
    ("application/vnd.pypi.simple.latest+json", V1_JSON),
    ("application/vnd.pypi.simple.latest+html", V1_HTML),
    ("APPLICATION/VND.PYPI.SIMPLE.V1+JSON", V1_JSON),
    # q decides, whatever the order in the header
    (f"text/html;q=0.4, {V1_JSON};q=0.5", V1_JSON),
    (f"{V1_JSON};q=0.05, {V1_HTML};q=0.049", V1_JSON),
    (f"{V1_HTML};q=0.3, {V1_JSON};q=0.2, text/html;q=0.1", V1_HTML),
    (f"text/html; q=0.5, {V1_JSON} ; q=0.6", V1_JSON),
    (f"text/html;level=1;q=0.5, {V1_JSON};charset=utf-8;q=0.6", V1_JSON),
    # ties go to PyPI's order: text/html, then v1+html, then v1+json
    (f"{V1_JSON}, {V1_HTML}", V1_HTML),
    (f"{V1_JSON}, text/html", TEXT_HTML),
    (f"{V1_JSON};q=0.5, text/html;q=0.5", TEXT_HTML),
    # q=0 means "not this one", and the most specific range decides a format's q
    (f"{V1_JSON};q=0, */*", TEXT_HTML),
    ("text/html;q=0, */*", V1_HTML),
    ("text/html;q=0, application/*", V1_HTML),
    (f"text/html;q=0, {V1_HTML};q=0, */*;q=0.1", V1_JSON),
    (f"text/*;q=0.5, {V1_JSON};q=0.4", TEXT_HTML),
    (f"*/*;q=0.9, {V1_JSON};q=0.2", TEXT_HTML),
    ("application/*", V1_HTML),
    ("text/*", TEXT_HTML),
    # the first of two equally specific ranges counts
    (f"{V1_JSON};q=0.5, application/vnd.pypi.simple.latest+json, text/html;q=0.6", TEXT_HTML),
    # nothing acceptable: the caller picks a default (text/html, as PyPI does)
    ("application/json", None),
    ("garbage", None),
    ("text/plain, image/png", None),
    (f"{V1_JSON};q=0, {V1_HTML};q=0, text/html;q=0", None),
    ("*/*;q=0", None),
    # a malformed q voids its range (RFC 9110: at most three decimals, never above 1)
    (f"{V1_JSON};q=2, text/html;q=0.1", TEXT_HTML),
    (f"{V1_JSON};q=.5, text/html;q=0.1", TEXT_HTML),
    (f"{V1_JSON};q=0.1234, text/html;q=0.1", TEXT_HTML),
    (f"{V1_JSON};q=1.000, text/html", TEXT_HTML),
    (f"{V1_JSON};q=1.0, text/html;q=0.999", V1_JSON),
]

#: Bytes that live outside web/: no request may ever return them.
SECRET = b"top-secret: outside the web root"
#: One request target per trick for escaping web/ (percent-encoding, backslashes, NUL, symlinks).
TRAVERSALS = [
    "/packages/../status",
    "/packages/../../SECRET",
    "/packages/%2e%2e/status",
    "/packages/%2E%2E/%2E%2E/SECRET",
    "/packages/..%2f..%2fSECRET",
    "/packages/..%5c..%5cSECRET",
    "/packages/..\\..\\SECRET",
    "/packages/%2fetc%2fpasswd",
    "/packages//etc/passwd",
    "/packages/x%00y",
    "/simple/..%2f..%2fstatus",
    "/simple/..%2f..%2fSECRET/",
    "/simple/%2e%2e/",
    "/json/..%2f..%2fSECRET",
    "/pypi/..%2f..%2fSECRET/json",
    "/../SECRET",
    "/%2e%2e/SECRET",
    "/packages/zz/zz/escape/secret.whl",
    "/packages/zz/zz/escape-dir/SECRET",
]

_ZIP_TIME = (2024, 1, 2, 3, 4, 6)
_UPLOAD_TIME = "2024-01-02T03:04:06.000000Z"


@dataclass(frozen=True)
class TreeFile:
    """One distribution file in the tree, with its PEP 658 metadata if it is a wheel."""

    filename: str
    path: PurePosixPath  # relative to the mirror directory: web/packages/aa/bb/<rest>/<name>
    body: bytes
    metadata: bytes | None
    requires_python: str | None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    @property
    def url(self) -> str:
        """Absolute URL path on the server: ``/packages/...``."""
        return "/" + self.path.relative_to(WEB).as_posix()


@dataclass(frozen=True)
class TreeProject:
    name: str  # as uploaded ("Tiny_Thing")
    serial: int
    version: str
    files: tuple[TreeFile, ...]

    @property
    def normalized(self) -> str:
        return canonicalize_name(self.name)


@dataclass(frozen=True)
class MiniTree:
    directory: Path  # the mirror directory: status, web/
    projects: tuple[TreeProject, ...]

    @property
    def web(self) -> Path:
        return self.directory / WEB

    @property
    def serial(self) -> int:
        return max(p.serial for p in self.projects)

    def project(self, normalized: str) -> TreeProject:
        return next(p for p in self.projects if p.normalized == normalized)

    def read(self, rel: PurePosixPath | str) -> bytes:
        return (self.directory / rel).read_bytes()

    def page(self, normalized: str | None, filename: str) -> bytes:
        """A page's bytes: the root index for None, else the project's."""
        base = SIMPLE if normalized is None else SIMPLE / normalized
        return self.read(base / filename)


def core_metadata(name: str, version: str, requires_python: str | None) -> bytes:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    return ("\n".join(lines) + "\n").encode()


def build_wheel(name: str, version: str, requires_python: str | None) -> tuple[str, bytes, bytes]:
    """A valid pure-Python wheel: (filename, wheel bytes, its METADATA bytes)."""
    stem = canonicalize_name(name).replace("-", "_")
    dist_info = f"{stem}-{version}.dist-info"
    metadata = core_metadata(name, version, requires_python)
    members = {
        f"{stem}/__init__.py": f'"""{name}."""\n__version__ = "{version}"\n'.encode(),
        f"{dist_info}/METADATA": metadata,
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: minitree\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = [
        f"{path},sha256={_b64(hashlib.sha256(data).digest())},{len(data)}"
        for path, data in members.items()
    ]
    members[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in members.items():
            zf.writestr(zipfile.ZipInfo(path, _ZIP_TIME), data)
    return f"{stem}-{version}-py3-none-any.whl", out.getvalue(), metadata


def build_sdist(name: str, version: str) -> tuple[str, bytes]:
    stem = f"{canonicalize_name(name).replace('-', '_')}-{version}"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        data = core_metadata(name, version, None)
        info = tarfile.TarInfo(f"{stem}/PKG-INFO")
        info.size, info.mtime = len(data), 0
        tf.addfile(info, io.BytesIO(data))
    return f"{stem}.tar.gz", gzip.compress(raw.getvalue(), mtime=0)


def build_minitree(directory: Path) -> MiniTree:
    """Write a two-project mirror under ``directory`` and return what it holds."""
    projects = (
        _project("Tiny_Thing", "1.0", 42, ">=3.8", sdist=True),
        _project("other", "2.0", 17, None, sdist=False),
    )
    tree = MiniTree(directory, projects)
    for project in projects:
        for f in project.files:
            _write(directory / f.path, f.body)
            if f.metadata is not None:
                _write(directory / f"{f.path}.metadata", f.metadata)
        pages = SIMPLE / project.normalized
        _write(directory / pages / HTML_PAGE, _project_html(project, "html"))
        _write(directory / pages / V1_HTML_PAGE, _project_html(project, "v1_html"))
        _write(directory / pages / V1_JSON_PAGE, _json(_project_json(project)))
        api = _json(_api_json(project))
        _write(directory / JSON_DIR / project.normalized, api)
        _write(directory / PYPI_DIR / project.normalized / "json", api)
    _write(directory / SIMPLE / HTML_PAGE, _root_html(projects, "html"))
    _write(directory / SIMPLE / V1_HTML_PAGE, _root_html(projects, "v1_html"))
    root = {
        "meta": {"api-version": "1.1", "_last-serial": tree.serial},
        "projects": [{"name": p.name, "_last-serial": p.serial} for p in projects],
    }
    _write(directory / SIMPLE / V1_JSON_PAGE, _json(root))
    _write(directory / "status", f"{tree.serial}\n".encode())
    _write(directory / "SECRET", SECRET)
    # Symlinks that lead out of web/: a file and a directory.
    escape = directory / PACKAGES / "zz" / "zz"
    escape.mkdir(parents=True)
    (escape / "escape").mkdir()
    (escape / "escape" / "secret.whl").symlink_to(directory / "SECRET")
    (escape / "escape-dir").symlink_to(directory, target_is_directory=True)
    return tree


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def http_get(
    port: int, target: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> Reply:
    """One request with the target sent exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def _project(
    name: str, version: str, serial: int, requires_python: str | None, *, sdist: bool
) -> TreeProject:
    filename, body, metadata = build_wheel(name, version, requires_python)
    files = [_file(filename, body, metadata, requires_python)]
    if sdist:
        sdist_name, sdist_body = build_sdist(name, version)
        files.append(_file(sdist_name, sdist_body, None, requires_python))
    return TreeProject(name, serial, version, tuple(files))


def _file(name: str, body: bytes, metadata: bytes | None, requires_python: str | None) -> TreeFile:
    h = hashlib.sha256(body).hexdigest()
    return TreeFile(name, PACKAGES / h[:2] / h[2:4] / h[4:] / name, body, metadata, requires_python)


def _project_html(project: TreeProject, form: str) -> bytes:
    links = []
    for f in project.files:
        attrs = f'href="../..{f.url}#sha256={f.sha256}"'
        if f.requires_python:
            attrs += f' data-requires-python="{f.requires_python.replace(">", "&gt;")}"'
        if f.metadata is not None:
            digest = hashlib.sha256(f.metadata).hexdigest()
            attrs += f' data-dist-info-metadata="sha256={digest}"'
            attrs += f' data-core-metadata="sha256={digest}"'
        links.append(f"    <a {attrs}>{f.filename}</a><br />")
    return _html(f"Links for {project.name}", links, form)


def _root_html(projects: tuple[TreeProject, ...], form: str) -> bytes:
    links = [f'    <a href="{p.normalized}/">{p.name}</a>' for p in projects]
    return _html("Simple index", links, form)


def _html(title: str, lines: list[str], form: str) -> bytes:
    head = '<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" '
    head += f'content="1.1">\n    <title>{title}</title>\n  </head>\n  <body>\n'
    head += f"    <h1>{title}</h1>\n"
    # The comment tells the two HTML forms apart in tests (the real pages are identical).
    return (head + "\n".join(lines) + f"\n  </body>\n</html>\n<!-- form: {form} -->\n").encode()


def _file_json(f: TreeFile) -> dict[str, object]:
    entry: dict[str, object] = {
        "filename": f.filename,
        "url": f"../..{f.url}",
        "hashes": {"sha256": f.sha256},
        "size": len(f.body),
        "upload-time": _UPLOAD_TIME,
        "yanked": False,
    }
    if f.requires_python:
        entry["requires-python"] = f.requires_python
    meta: object = False
    if f.metadata is not None:
        meta = {"sha256": hashlib.sha256(f.metadata).hexdigest()}
    entry["core-metadata"] = entry["dist-info-metadata"] = meta
    return entry


def _project_json(project: TreeProject) -> dict[str, object]:
    return {
        "meta": {"api-version": "1.1", "_last-serial": project.serial},
        "name": project.normalized,
        "versions": [project.version],
        "files": [_file_json(f) for f in project.files],
    }


def _api_json(project: TreeProject) -> dict[str, object]:
    urls = [
        {
            "filename": f.filename,
            "url": f.url,
            "digests": {"sha256": f.sha256},
            "size": len(f.body),
            "packagetype": "bdist_wheel" if f.filename.endswith(".whl") else "sdist",
            "requires_python": f.requires_python,
            "upload_time_iso_8601": _UPLOAD_TIME,
            "yanked": False,
            "yanked_reason": None,
        }
        for f in project.files
    ]
    return {
        "info": {"name": project.name, "version": project.version},
        "last_serial": project.serial,
        "releases": {project.version: urls},
        "urls": urls,
    }


def _json(doc: object) -> bytes:
    return json.dumps(doc, indent=1).encode()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def pip_command(subcommand: str, index_url: str, *args: str) -> list[str]:
    """``pip <subcommand>`` against ``index_url`` only, wheels only, with no cache and no config."""
    return [
        sys.executable,
        "-m",
        "pip",
        subcommand,
        "--isolated",  # ignores PIP_* variables and config files
        "--disable-pip-version-check",
        "--no-cache-dir",
        "--only-binary=:all:",
        "--index-url",
        index_url,
        *args,
    ]


def pip_download_args(index_url: str, project: str, dest: Path) -> list[str]:
    """``pip download`` of one wheel from ``index_url`` only, with no cache and no config."""
    return pip_command("download", index_url, "--no-deps", "--dest", str(dest), project)


def pip_env() -> dict[str, str]:
    """The environment without proxy settings, so pip talks to loopback only."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["NO_PROXY"] = "127.0.0.1"
    return env


# --- real servers on loopback -------------------------------------------------------------------

#: The nginx config under test, used as shipped with only its two placeholders substituted.
NGINX_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "nginx.conf"


@dataclass(frozen=True)
class Running:
    """A server process listening on 127.0.0.1:port; its stdout and stderr go to ``log``."""

    port: int
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


def wait_until_answering(proc: subprocess.Popen[bytes], port: int, log: Path, what: str) -> None:
    """Poll ``GET /simple/`` until the server answers anything at all; fail at a deadline."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            http_get(port, "/simple/")
            return
        except (OSError, http.client.HTTPException):
            time.sleep(0.05)
    pytest.fail(f"{what} did not answer on {port}:\n{log.read_text(errors='replace')}")


def stop_process(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    """Send ``sig`` (nginx: SIGTERM is a fast shutdown that waits for its workers) and reap."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def running_nginx(binary: str, web_root: Path, run_dir: Path) -> Iterator[Running]:
    """nginx with examples/nginx.conf over ``web_root``, from its start until it answers to its end.

    What an unprivileged run needs besides goes on nginx's command line: ``-p`` (prefix, for the
    example's relative temp directories), ``-e`` (error log) and ``-g`` (``daemon off``, the pid
    file and, when the tests run as root, ``user`` so that workers can read the tree in tmp_path).
    The example's access log goes to stdout, so to ``Running.log``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    template = NGINX_EXAMPLE.read_text()
    assert (template.count("__ROOT__"), template.count("__LISTEN__")) >= (1, 1)
    port = free_port()
    conf = template.replace("__ROOT__", str(web_root)).replace("__LISTEN__", f"127.0.0.1:{port}")
    (run_dir / "nginx.conf").write_text(conf)
    directives = f"daemon off; pid {run_dir / 'nginx.pid'};"
    if os.geteuid() == 0:
        directives += f" user {pwd.getpwuid(os.getuid()).pw_name};"
    log = run_dir / "output.log"
    argv = [
        binary,
        "-p",
        f"{run_dir}/",
        "-e",
        str(run_dir / "error.log"),
        "-c",
        str(run_dir / "nginx.conf"),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "-g", directives],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_until_answering(proc, port, log, "nginx")
        yield Running(port, log)
    finally:
        stop_process(proc)
