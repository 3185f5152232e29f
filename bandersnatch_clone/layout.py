"""Pure mapping from names and URLs to paths in the mirror tree, with path safety.

Every path here is a `PurePosixPath` relative to the mirror directory. Nothing that comes from the
upstream (names, filenames, URLs) reaches the disk without passing through these functions.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from packaging.utils import NormalizedName, canonicalize_name

from bandersnatch_clone.errors import UnsafePath

WEB = PurePosixPath("web")
SIMPLE = WEB / "simple"
PACKAGES = WEB / "packages"
JSON_DIR = WEB / "json"
PYPI_DIR = WEB / "pypi"

#: Page file names inside a project directory (and for the root index).
HTML_PAGE = "index.html"
V1_HTML_PAGE = "index.v1_html"
V1_JSON_PAGE = "index.v1_json"

#: The Content-Type each page file must go out with (PEP 691; pip and uv refuse any other).
PAGE_TYPES = {
    HTML_PAGE: "text/html",
    V1_HTML_PAGE: "application/vnd.pypi.simple.v1+html",
    V1_JSON_PAGE: "application/vnd.pypi.simple.v1+json",
}
#: PEP 658 core metadata is a UTF-8 text file.
METADATA_TYPE = "text/plain; charset=utf-8"
#: PyPI's caching: pages change with every sync, files never (their path holds their hash).
PAGE_CACHE = "max-age=600"
FILE_CACHE = "max-age=365000000, immutable"

# PEP 508 / core metadata: a valid project name.
VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
# Anything a filename or path segment must never contain: separators, NUL and control chars.
_BAD_SEGMENT = re.compile(r"[/\\\x00-\x1f\x7f]")


def normalize(name: str) -> NormalizedName:
    """PEP 503 normalised name, refusing names that are not valid project names."""
    if not VALID_NAME.match(name):
        raise UnsafePath(name, "invalid project name")
    return canonicalize_name(name)


def check_segment(segment: str) -> str:
    """A single path segment that is safe to join: no separators, no dot-names, no controls."""
    if segment in ("", ".", "..") or _BAD_SEGMENT.search(segment):
        raise UnsafePath(segment, "unsafe path segment")
    return segment


def project_dir(name: NormalizedName) -> PurePosixPath:
    return SIMPLE / check_segment(name)


def json_paths(name: NormalizedName) -> tuple[PurePosixPath, PurePosixPath]:
    """The JSON API copies of a project: ``web/json/<name>`` and ``web/pypi/<name>/json``."""
    check_segment(name)
    return JSON_DIR / name, PYPI_DIR / name / "json"


def file_path(url: str, filename: str, sha256: str | None) -> PurePosixPath:
    """Where a distribution file lives: the upstream URL's path below ``packages/``.

    ``https://files.pythonhosted.org/packages/aa/bb/cc/n.whl`` -> ``web/packages/aa/bb/cc/n.whl``.
    URLs without a ``/packages/`` component fall back to ``packages/<h[:2]>/<h[2:4]>/<h[4:]>/name``
    built from the sha256. The result is always below ``web/packages/`` or `UnsafePath` is raised.
    """
    check_segment(filename)
    path = unquote(urlsplit(url).path)
    marker = "/packages/"
    idx = path.rfind(marker)
    if idx >= 0:
        parts = path[idx + len(marker) :].split("/")
        if len(parts) < 2:
            raise UnsafePath(url, "file URL too short")
        if parts[-1] != filename:
            raise UnsafePath(url, f"file URL does not end in its filename {filename!r}")
        return PACKAGES.joinpath(*(check_segment(p) for p in parts))
    if not sha256 or not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise UnsafePath(url, "file URL has no /packages/ path and no sha256 to place it by")
    return PACKAGES / sha256[:2] / sha256[2:4] / sha256[4:] / filename


def metadata_path(path: PurePosixPath) -> PurePosixPath:
    """PEP 658: the core metadata of a file sits at ``<file>.metadata``."""
    return path.with_name(path.name + ".metadata")


def page_link(path: PurePosixPath, root_uri: str | None) -> str:
    """The href a project page carries for a file under ``web/packages``.

    Relative (``../../packages/...``) unless ``root_uri`` is set, then absolute from it.
    """
    # Percent-encode each segment: a filename may hold '%', '#', '?' or spaces, which would
    # otherwise change what a client fetches. RFC 3986 sub-delims such as '+' stay as they are.
    rel = "/".join(quote(part, safe="!$&'()*+,;=:@") for part in path.relative_to(WEB).parts)
    if root_uri:
        return f"{root_uri.rstrip('/')}/{rel}"
    return f"../../{rel}"


def link_to_path(href: str) -> PurePosixPath | None:
    """Inverse of `page_link` for relative links: ``../../packages/x`` -> ``web/packages/x``.

    Returns None for links that do not point into this tree's ``packages/``.
    """
    href = href.split("#", 1)[0]
    prefix = "../../packages/"
    if href.startswith(prefix):
        parts = href[len(prefix) :].split("/")
        try:
            return PACKAGES.joinpath(*(check_segment(unquote(p)) for p in parts))
        except UnsafePath:
            return None
    return None


def linked_paths(page_json: bytes, root_uri: str | None) -> list[PurePosixPath]:
    """Local files (and their ``.metadata``) that a project's PEP 691 JSON page written by this
    mirror links to; links elsewhere (an index-only mirror's upstream URLs) are not ours."""
    try:
        files = json.loads(page_json).get("files", [])
    except (ValueError, AttributeError):
        return []
    prefix = f"{root_uri.rstrip('/')}/" if root_uri else None
    paths: list[PurePosixPath] = []
    for f in files:
        href = f.get("url", "") if isinstance(f, dict) else ""
        if prefix and href.startswith(prefix):
            href = "../../" + href[len(prefix) :]
        path = link_to_path(href)
        if path is not None:
            paths.append(path)
            if f.get("core-metadata"):
                paths.append(metadata_path(path))
    return paths


def content_type(path: PurePosixPath) -> str:
    """The Content-Type of a tree path, for backends that store one with each object (an object
    store serves it as is) and for servers: the same answers as examples/nginx.conf gives."""
    if path.parent.is_relative_to(SIMPLE) and path.name in PAGE_TYPES:
        return PAGE_TYPES[path.name]
    if path.is_relative_to(PACKAGES):
        # Archives go out as opaque bytes, so no client un-gzips a .tar.gz on the way.
        return METADATA_TYPE if path.name.endswith(".metadata") else "application/octet-stream"
    if path.parent == JSON_DIR or (path.is_relative_to(PYPI_DIR) and path.name == "json"):
        return "application/json"
    if not path.is_relative_to(WEB):
        return "text/plain"  # status, generation
    return "application/octet-stream"


def cache_control(path: PurePosixPath) -> str | None:
    """The Cache-Control a server (or a CDN in front of an object store) should send for a tree
    path: files for good, pages for ten minutes; None outside web/ (state, not for clients)."""
    if path.is_relative_to(PACKAGES):
        return FILE_CACHE
    if path.is_relative_to(WEB):
        return PAGE_CACHE
    return None
