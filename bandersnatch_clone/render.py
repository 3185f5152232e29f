"""Pure rendering of the simple index pages: PEP 503 HTML and PEP 691 JSON, as bytes."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from html import escape
from json.encoder import encode_basestring_ascii
from operator import lt

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from bandersnatch_clone.layout import HTML_PAGE, V1_HTML_PAGE, V1_JSON_PAGE
from bandersnatch_clone.model import DistFile, Hashes, ProjectDetail, ProjectStatus
from bandersnatch_clone.names import canonical_names, per_line

# PEP 629: the meta tag pypi:repository-version is "further constrained to ONLY be Major.Minor".
# 1.1 = PEP 700, 1.3 = PEP 740, 1.4 = PEP 792 ("This PEP defines version 1.4 of the index APIs").
# PEP 833 (draft) freezes the HTML form: after a JSON-only 1.5 "the HTML representation will
# retain" content="1.4", which is why HTML and JSON have a constant each.
HTML_REPOSITORY_VERSION = "1.4"
JSON_API_VERSION = "1.4"

# PEP 691 content types; "text/html" is "an alias for the application/vnd.pypi.simple.v1+html
# content type" for clients that predate PEP 691. Bare MIME types: a server may add a charset.
JSON_CONTENT_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_CONTENT_TYPE = "application/vnd.pypi.simple.v1+html"
LEGACY_HTML_CONTENT_TYPE = "text/html"
#: Page file name (in every project directory and at the root) -> the Content-Type it is served as.
PAGE_TYPES: Mapping[str, str] = {
    V1_JSON_PAGE: JSON_CONTENT_TYPE,
    V1_HTML_PAGE: HTML_CONTENT_TYPE,
    HTML_PAGE: LEGACY_HTML_CONTENT_TYPE,
}

# PEP 503: the fragment is "#<hashname>=<hashvalue>" and "The current recommendation is to use
# sha256"; the others are the hashlib algorithms the spec lists as guaranteed, strongest first.
_FRAGMENT_HASHES = ("sha256", "sha512", "sha384", "sha224", "sha1", "md5")


def _esc(text: str) -> str:
    """Escape for text and double-quoted attributes alike: & < > " ' all become references."""
    return escape(text, quote=True)


def _pick_hash(hashes: Hashes) -> tuple[str, str] | None:
    for name in _FRAGMENT_HASHES:
        value = hashes.get(name)
        if value:
            return name, value
    return None


def _offered_files(detail: ProjectDetail) -> tuple[DistFile, ...]:
    """The files a page may link to; none at all for a quarantined project.

    Enforced here, not by callers: PEP 792 ``quarantined``: "The index MUST NOT offer any
    distributions of the project for download." The PEP's own example pages, HTML and JSON,
    carry "no distribution links" while still listing the project's ``versions``.
    """
    if detail.status is ProjectStatus.QUARANTINED:
        return ()
    return detail.files


def _anchor(file: DistFile) -> str:
    # PEP 503: the text "MUST match the final path component (the filename) of the URL"; the URL
    # "SHOULD include a hash in the form of a URL fragment". Any fragment the link already has
    # is dropped so the page never carries two.
    href = file.url.split("#", 1)[0]
    picked = _pick_hash(file.hashes)
    if picked is not None:
        href = f"{href}#{picked[0]}={picked[1]}"
    attrs = [f'href="{_esc(href)}"']
    if file.requires_python:
        # PEP 503: "In the attribute value, < and > have to be HTML encoded as &lt; and &gt;".
        attrs.append(f'data-requires-python="{_esc(file.requires_python)}"')
    if file.yanked is not None:
        # PEP 592: data-yanked "may have no value, or may have an arbitrary string as a value";
        # "Mirrors MUST NOT mirror a yanked file without also mirroring the data-yanked attribute".
        attrs.append(f'data-yanked="{_esc(file.yanked)}"')
    if file.core_metadata is not None:
        # PEP 658: "<hashname>=<hashvalue>", or "MAY use true ... if a hash is unavailable".
        # PEP 714: HTML "MUST be emitted using the attribute name data-core-metadata" and "MAY
        # also be emitted using the data-dist-info-metadata, and if it does so it MUST match".
        meta = _pick_hash(file.core_metadata)
        value = _esc(f"{meta[0]}={meta[1]}") if meta is not None else "true"
        attrs.append(f'data-core-metadata="{value}" data-dist-info-metadata="{value}"')
    if file.provenance is not None:
        # PEP 740: the data-provenance attribute names where the file's provenance can be found.
        attrs.append(f'data-provenance="{_esc(file.provenance)}"')
    return f"    <a {' '.join(attrs)}>{_esc(file.filename)}</a><br>\n"


def render_project_html(detail: ProjectDetail) -> bytes:
    """The PEP 503 project page (``index.html`` and ``index.v1_html`` carry the same bytes)."""
    name = _esc(detail.name)
    head = [
        "<!DOCTYPE html>\n<html>\n  <head>\n",
        f'    <meta name="pypi:repository-version" content="{HTML_REPOSITORY_VERSION}">\n',
    ]
    if detail.status is not None:
        # PEP 792: the page "SHOULD add an appropriate pypi:project-status meta tag" and "MAY
        # include a pypi:project-status-reason meta tag, with a content of free-form text".
        status = _esc(detail.status.value)
        head.append(f'    <meta name="pypi:project-status" content="{status}">\n')
        if detail.status_reason is not None:
            reason = _esc(detail.status_reason)
            head.append(f'    <meta name="pypi:project-status-reason" content="{reason}">\n')
    head.append(f"    <title>Links for {name}</title>\n  </head>\n  <body>\n")
    head.append(f"    <h1>Links for {name}</h1>\n")
    body = [_anchor(f) for f in _offered_files(detail)]
    tail = f"  </body>\n</html>\n<!--SERIAL {int(detail.serial)}-->\n"
    # "replace": a lone surrogate from upstream becomes "?" rather than failing the whole page.
    return "".join([*head, *body, tail]).encode("utf-8", "replace")


def _file_json(file: DistFile) -> dict[str, object]:
    entry: dict[str, object] = {
        "filename": file.filename,
        "url": file.url,
        # PEP 691: "The hashes dictionary MUST be present, even if no hashes are available".
        "hashes": dict(sorted(file.hashes.items())),
    }
    if file.requires_python:
        entry["requires-python"] = file.requires_python
    # PEP 691: yanked is "a boolean ... or a non empty, but otherwise arbitrary, string".
    entry["yanked"] = False if file.yanked is None else (file.yanked or True)
    # PEP 714: "MUST be emitted using the key core-metadata". The legacy dist-info-metadata key is
    # never written: any use of it "in the JSON representation would cause pip to hard fail".
    # PEP 658/691: "either a boolean ... or a dictionary mapping hash names to a hex ... digest".
    meta = file.core_metadata
    entry["core-metadata"] = False if meta is None else (dict(sorted(meta.items())) or True)
    if file.size is not None:
        entry["size"] = file.size  # PEP 700: "MUST contain an integer which is the file size"
    if file.upload_time is not None:
        entry["upload-time"] = file.upload_time  # PEP 700: "yyyy-mm-ddThh:mm:ss.ffffffZ"
    if file.provenance is not None:
        entry["provenance"] = file.provenance  # PEP 740
    return entry


def sort_versions(versions: Iterable[str]) -> list[str]:
    """PEP 440 order, duplicates dropped; strings that are not versions follow, in input order.

    PEP 700: versions is "logically a set, and as such may not contain duplicates"; legacy strings
    "cannot be assumed to be orderable", so they are kept but never compared.
    """
    valid: list[tuple[Version, str]] = []
    invalid: list[str] = []
    for text in dict.fromkeys(versions):
        try:
            valid.append((Version(text), text))
        except InvalidVersion:
            invalid.append(text)
    valid.sort(key=lambda pair: pair[0])  # stable: equal versions ("1.0", "1.0.0") keep order
    return [text for _, text in valid] + invalid


def _dumps(document: object) -> bytes:
    # Compact and stable: fixed key order, no whitespace. ensure_ascii=True makes the body 7-bit,
    # so it is the same bytes whatever charset a server or proxy assumes, and a lone surrogate
    # from upstream is written as an escape instead of failing to encode.
    return json.dumps(document, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def render_project_json(detail: ProjectDetail) -> bytes:
    """The PEP 691 project page (``index.v1_json``), api-version 1.4."""
    document: dict[str, object] = {
        "meta": {"api-version": JSON_API_VERSION, "_last-serial": int(detail.serial)},
        "name": detail.name,
        # PEP 700: "An additional key, versions MUST be present at the top level".
        "versions": sort_versions(detail.versions),
        "files": [_file_json(f) for f in _offered_files(detail)],
    }
    if detail.status is not None:
        # PEP 792 example: "project-status": {"status": "quarantined", "reason": "..."}.
        status: dict[str, str] = {"status": detail.status.value}
        if detail.status_reason is not None:
            status["reason"] = detail.status_reason
        document["project-status"] = status
    return _dumps(document)


def project_pages(detail: ProjectDetail) -> dict[str, bytes]:
    """Every page file of one project directory: file name -> bytes."""
    html = render_project_html(detail)
    return {HTML_PAGE: html, V1_HTML_PAGE: html, V1_JSON_PAGE: render_project_json(detail)}


def _root_rows(projects: Iterable[tuple[str, int]]) -> tuple[list[str], list[str], list[int]]:
    """(normalised names, names, serials), sorted by normalised name, one row per project.

    Sorting here keeps the root pages byte-stable whatever order a caller iterates in, so an
    unchanged mirror never rewrites them; PEP 503 wants "a single anchor element per project",
    so of two names that normalise alike the first given wins.
    """
    pairs = list(projects)
    names = [name for name, _ in pairs]
    norms = canonical_names(names)
    serials = [int(serial) for _, serial in pairs]
    # Fast path: rows already strictly ascending (PyPI lists by normalised name) need no work.
    if all(map(lt, norms, norms[1:])):
        return norms, names, serials
    # Later keys overwrite earlier ones, so walking backwards leaves each name's first row.
    first = dict(zip(reversed(norms), range(len(norms) - 1, -1, -1), strict=True))
    order = [first[norm] for norm in sorted(first)]
    return [norms[i] for i in order], [names[i] for i in order], [serials[i] for i in order]


def _root_html(norms: list[str], names: list[str]) -> bytes:
    # PEP 503: "The text of the anchor tag MUST be the name of the project and the href attribute
    # MUST link to the URL for that particular project"; relative to /simple/ itself.
    hrefs, texts = per_line(_esc, norms), per_line(_esc, names)
    links = [f'    <a href="{href}/">{text}</a>\n' for href, text in zip(hrefs, texts, strict=True)]
    head = (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{HTML_REPOSITORY_VERSION}">\n'
        "    <title>Simple index</title>\n  </head>\n  <body>\n"
    )
    return "".join([head, *links, "  </body>\n</html>\n"]).encode("utf-8", "replace")


def _root_json(names: list[str], serials: list[int], serial: int) -> bytes:
    # The same bytes as _dumps({"meta": ..., "projects": [{"name": ..., "_last-serial": ...}]}),
    # without building 700,000 dicts first: encode_basestring_ascii is the string encoder
    # json.dumps itself uses when ensure_ascii=True, and an int's JSON form is its str().
    row = '{{"name":{},"_last-serial":{}}}'.format
    projects = ",".join(map(row, map(encode_basestring_ascii, names), serials))
    meta = _dumps({"api-version": JSON_API_VERSION, "_last-serial": int(serial)})
    return b'{"meta":%s,"projects":[%s]}' % (meta, projects.encode("ascii"))


def splice_root_json(
    old: bytes, changed: Iterable[tuple[str, str, int]], count: int, serial: int
) -> bytes | None:
    """The root JSON page `old` with rows replaced: (normalised name, name, new serial) each,
    and the global serial set; None when `old` is not `count` rows of what `_root_json` writes.

    At PyPI's size a run that moved 100 projects otherwise re-renders 700,000 rows. Here each
    moved row is found by binary search over the page's bytes (rows are sorted by normalised
    name; names hold no quotes or braces) and the page is rebuilt from the slices between them:
    no row is parsed but the few probed. Every replaced row must already name its project, so a
    page out of step with the ledger is detected (the caller then renders it whole); the bytes
    equal a full render's.
    """
    head, marker = b'{"meta":', b',"projects":['
    start = old.find(marker)
    if count == 0 or not old.startswith(head) or start < 0 or not old.endswith(b"}]}"):
        return None
    start += len(marker)
    if old.count(_ROW, start) != count:
        return None
    # The kept stretches go in as views: the join is the one copy of the page.
    view = memoryview(old)
    pieces: list[bytes | memoryview] = [
        head,
        _dumps({"api-version": JSON_API_VERSION, "_last-serial": int(serial)}),
    ]
    done = start - len(marker)
    for norm, name, row_serial in sorted(changed):
        at = _find_row(old, start, len(old), norm)
        encoded = encode_basestring_ascii(name).encode("ascii")
        wanted = _ROW + encoded + b","
        if at < done or not old.startswith(wanted, at):
            return None
        end = old.find(b"}", at)
        pieces += [view[done:at], b'%s"_last-serial":%d}' % (wanted, row_serial)]
        done = end + 1
    pieces.append(view[done:])
    return b"".join(pieces)


_ROW = b'{"name":'


def _find_row(page: bytes, lo: int, hi: int, norm: str) -> int:
    """Where the first row whose normalised name is not below `norm` starts (or -1).

    Rows starting before `lo` sort below `norm`, rows starting at `hi` or later do not.
    """
    while lo < hi:
        mid = (lo + hi) // 2
        at = page.find(_ROW, mid)  # the first row starting at or after mid
        if not mid <= at < hi:
            hi = mid
            continue
        name_at = at + len(_ROW) + 1
        name = page[name_at : page.find(b'"', name_at)].decode("ascii", "replace")
        if canonicalize_name(name) < norm:
            lo = at + 1
        else:
            hi = at
    return page.find(_ROW, lo)


def render_root_html(names: Iterable[str]) -> bytes:
    """The PEP 503 root page: one ``<a href="<normalised>/">name</a>`` per project."""
    norms, display, _ = _root_rows((name, 0) for name in names)
    return _root_html(norms, display)


def render_root_json(projects: Iterable[tuple[str, int]], serial: int) -> bytes:
    """The PEP 691 root page with every project's ``_last-serial`` (so others can mirror us)."""
    _, names, serials = _root_rows(projects)
    return _root_json(names, serials, serial)


def root_pages(projects: Iterable[tuple[str, int]], serial: int) -> dict[str, bytes]:
    """Every root page file: file name -> bytes (the projects are sorted once for all three)."""
    return root_pages_sorted(*_root_rows(projects), serial)


def root_pages_sorted(
    norms: list[str], names: list[str], serials: list[int], serial: int, *, html: bool = True
) -> dict[str, bytes]:
    """`root_pages` from rows already sorted by normalised name, one per project (the ledger's
    order); ``html=False`` leaves out the two HTML forms, which list names only."""
    pages = {V1_JSON_PAGE: _root_json(names, serials, serial)}
    if html:
        pages[HTML_PAGE] = pages[V1_HTML_PAGE] = _root_html(norms, names)
    return pages


def filter_legacy_json(raw: bytes, filenames: Collection[str]) -> bytes:
    """The JSON API document with only the files the filtered pages list.

    ``releases`` keeps a version only while one of its files survives (a release that had no
    files upstream stays as it was); ``urls`` (the latest release's files) is filtered alike.
    """
    keep = set(filenames)
    doc = json.loads(raw)
    releases = doc.get("releases")
    if isinstance(releases, dict):
        doc["releases"] = {
            version: [f for f in files if f.get("filename") in keep]
            for version, files in releases.items()
            if not files or any(f.get("filename") in keep for f in files)
        }
    if isinstance(doc.get("urls"), list):
        doc["urls"] = [f for f in doc["urls"] if f.get("filename") in keep]
    return json.dumps(doc, separators=(",", ":")).encode()
