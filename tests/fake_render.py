"""Pure rendering of what the fake upstream says, shaped like PyPI (warehouse) renders it.

Simple API listing and project pages (PEP 503/629/592/658/691/700/714/740/792), the legacy JSON
API (``/pypi/<name>/json``) and the XML-RPC methods a mirror uses.
"""

from __future__ import annotations

import json
import xmlrpc.client
from collections.abc import Callable
from datetime import datetime
from html import escape
from typing import Any

from packaging.version import Version

from tests.fake_index import FakeFile, FakeIndex, FakeProject, FakeRelease

API_VERSION = "1.4"
TEXT_HTML = "text/html"
V1_HTML = "application/vnd.pypi.simple.v1+html"
V1_JSON = "application/vnd.pypi.simple.v1+json"
# PyPI's offers, in its order: on equal quality the earlier wins, so "*/*" gets text/html.
OFFERS = (TEXT_HTML, V1_HTML, V1_JSON)

JSONDict = dict[str, Any]


def negotiate(accept: str | None) -> str:
    """PEP 691 content negotiation the way warehouse does it (webob ``acceptable_offers``).

    Each offer takes the quality of the most specific media range matching it; the highest
    quality wins, ties go to the earlier offer. No header, or nothing acceptable: text/html.
    """
    if not accept:
        return TEXT_HTML
    ranges: list[tuple[str, float]] = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media:
            ranges.append((media.lower(), q))
    best: list[tuple[float, int, str]] = []
    for order, offer in enumerate(OFFERS):
        matches = [(_specificity(media, offer), q) for media, q in ranges]
        matches = [m for m in matches if m[0] > 0]
        if matches:
            q = max(matches)[1]
            if q > 0:
                best.append((-q, order, offer))
    return min(best)[2] if best else TEXT_HTML


def _specificity(media: str, offer: str) -> int:
    if media == offer:
        return 3
    if media == "*/*":
        return 1
    if media.endswith("/*") and offer.startswith(media[:-1]):
        return 2
    return 0


def iso(dt: datetime) -> str:
    # Exactly warehouse's ``upload_time.isoformat() + "Z"``: no fraction when microsecond == 0.
    return dt.isoformat() + "Z"


# -- listing -------------------------------------------------------------------------------
# Names passed the PEP 508 check in FakeIndex ([A-Za-z0-9._-]), so they need no escaping here;
# plain formatting keeps a 700,000-project listing fast to render.


def listing_json(projects: list[FakeProject], serial: int) -> bytes:
    rows = ",".join(f'{{"name":"{p.name}","_last-serial":{p.serial}}}' for p in projects)
    meta = f'{{"api-version":"{API_VERSION}","_last-serial":{serial}}}'
    return f'{{"meta":{meta},"projects":[{rows}]}}'.encode()


def listing_html(projects: list[FakeProject], serial: int) -> bytes:
    links = "".join(f'    <a href="/simple/{p.normalized}/">{p.name}</a>\n' for p in projects)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n  <head>\n'
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
        "    <title>Simple index</title>\n  </head>\n  <body>\n"
        f"{links}  </body>\n</html>\n"
    ).encode()


LISTING_RENDERERS: dict[str, Callable[[list[FakeProject], int], bytes]] = {
    TEXT_HTML: listing_html,
    V1_HTML: listing_html,
    V1_JSON: listing_json,
}


# -- project page --------------------------------------------------------------------------


def live_files(project: FakeProject) -> list[tuple[FakeRelease, FakeFile]]:
    """Files a page offers, in PyPI's order (version, filename). PEP 792: none if quarantined."""
    if project.status == "quarantined":
        return []
    return sorted(project.files(), key=lambda rf: (Version(rf[0].version), rf[1].filename))


def provenance_url(base_url: str, project: FakeProject, version: str, filename: str) -> str:
    return f"{base_url}/integrity/{project.normalized}/{version}/{filename}/provenance"


def project_detail(project: FakeProject, base_url: str, serial: int) -> JSONDict:
    """The PEP 691 JSON project page as a dict (HTML is rendered from the same dict)."""
    files = live_files(project)
    out: JSONDict = {
        "meta": {"api-version": API_VERSION, "_last-serial": serial},
        "name": project.normalized,
        # PyPI derives "versions" from the files: a release without files is not listed.
        "versions": sorted({r.version for r, _ in files}, key=Version),
        "alternate-locations": [],
        "files": [_file_detail(project, r, f, base_url) for r, f in files],
    }
    if project.status is not None:
        status: JSONDict = {"status": project.status}
        if project.status_reason:
            status["reason"] = project.status_reason
        out["project-status"] = status
    return out


def _file_detail(project: FakeProject, release: FakeRelease, f: FakeFile, base: str) -> JSONDict:
    d = f.digests()
    core = {"sha256": d.metadata_sha256} if d.metadata_sha256 else False
    # PEP 592/691: the reason string when there is one, else the bare boolean.
    yanked: str | bool = (
        release.yanked_reason if release.yanked and release.yanked_reason else (release.yanked)
    )
    return {
        "filename": f.filename,
        "url": base + f.path,
        "hashes": {"sha256": d.sha256},
        "requires-python": release.requires_python or None,
        "size": d.size,
        "upload-time": iso(f.upload_time),
        "yanked": yanked,
        "data-dist-info-metadata": core,
        "core-metadata": core,
        "provenance": (
            provenance_url(base, project, release.version, f.filename) if f.provenance else None
        ),
    }


def detail_json(detail: JSONDict) -> bytes:
    return json.dumps(detail).encode()


def detail_html(detail: JSONDict) -> bytes:
    """PEP 503 page, as warehouse's ``api/simple/detail.html`` template writes it."""
    name = escape(detail["name"])
    head = [f'    <meta name="pypi:repository-version" content="{API_VERSION}">']
    status = detail.get("project-status")
    if status:
        head.append(f'    <meta name="pypi:project-status" content="{escape(status["status"])}">')
        if status.get("reason"):
            reason = escape(status["reason"])
            head.append(f'    <meta name="pypi:project-status-reason" content="{reason}">')
    links = []
    for f in detail["files"]:
        attrs = [f'href="{escape(f["url"])}#sha256={f["hashes"]["sha256"]}"']
        if f["requires-python"]:
            attrs.append(f'data-requires-python="{escape(f["requires-python"])}"')
        if f["yanked"] is not False:
            reason = f["yanked"] if isinstance(f["yanked"], str) else ""
            attrs.append(f'data-yanked="{escape(reason)}"')
        if f["core-metadata"]:
            sha = f["core-metadata"]["sha256"]
            attrs.append(f'data-dist-info-metadata="sha256={sha}"')
            attrs.append(f'data-core-metadata="sha256={sha}"')
        if f["provenance"]:
            attrs.append(f'data-provenance="{escape(f["provenance"])}"')
        links.append(f"    <a {' '.join(attrs)}>{escape(f['filename'])}</a><br />\n")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n  <head>\n'
        + "\n".join(head)
        + f"\n    <title>Links for {name}</title>\n  </head>\n  <body>\n"
        f"    <h1>Links for {name}</h1>\n" + "".join(links) + "  </body>\n</html>\n"
        f"<!--SERIAL {detail['meta']['_last-serial']}-->\n"
    ).encode()


# -- legacy JSON API -----------------------------------------------------------------------


def legacy_json(project: FakeProject, base_url: str, serial: int) -> JSONDict | None:
    """``/pypi/<name>/json``; None (a 404) when there is no release or it is quarantined."""
    if project.status == "quarantined" or not project.releases:
        return None
    ordered = sorted(project.releases.values(), key=lambda r: Version(r.version), reverse=True)
    # warehouse: ORDER BY yanked, is_prerelease, version DESC -> the newest final, unyanked.
    latest = min(ordered, key=lambda r: (r.yanked, Version(r.version).is_prerelease))
    releases = {
        r.version: [
            _legacy_file(project, r, f, base_url)
            for f in sorted(r.files.values(), key=lambda f: f.filename)
        ]
        for r in ordered
    }
    project_url = f"{base_url}/project/{project.name}/"
    info: JSONDict = {
        "author": "",
        "author_email": "",
        "bugtrack_url": None,
        "classifiers": [],
        "description": "",
        "description_content_type": None,
        "docs_url": None,
        "download_url": "",
        "downloads": {"last_day": -1, "last_month": -1, "last_week": -1},
        "dynamic": None,
        "home_page": "",
        "keywords": "",
        "license": "",
        "license_expression": None,
        "license_files": None,
        "maintainer": "",
        "maintainer_email": "",
        "name": project.name,
        "package_url": project_url,
        "platform": None,
        "project_url": project_url,
        "project_urls": None,
        "provides_extra": None,
        "release_url": f"{project_url}{latest.version}/",
        "requires_dist": list(latest.requires_dist) or None,
        "requires_python": latest.requires_python,
        "summary": latest.summary,
        "version": latest.version,
        "yanked": latest.yanked,
        "yanked_reason": latest.yanked_reason or None,
    }
    return {
        "info": info,
        "last_serial": serial,
        "releases": releases,
        "urls": releases[latest.version],
        "vulnerabilities": [],
    }


def _legacy_file(project: FakeProject, release: FakeRelease, f: FakeFile, base: str) -> JSONDict:
    d = f.digests()
    return {
        "comment_text": "",
        "digests": {"blake2b_256": d.blake2b_256, "md5": d.md5, "sha256": d.sha256},
        "downloads": -1,
        "filename": f.filename,
        "has_sig": False,
        "md5_digest": d.md5,
        "packagetype": "bdist_wheel" if f.kind == "wheel" else "sdist",
        "python_version": f.python_version,
        "requires_python": release.requires_python or None,
        "size": d.size,
        "upload_time": f.upload_time.strftime("%Y-%m-%dT%H:%M:%S"),
        "upload_time_iso_8601": iso(f.upload_time),
        "url": base + f.path,
        "yanked": release.yanked,
        "yanked_reason": release.yanked_reason or None,
    }


# -- XML-RPC -------------------------------------------------------------------------------


def xmlrpc_response(index: FakeIndex, body: bytes) -> bytes:
    """Answer one XML-RPC call; errors become Faults, as PyPI's (HTTP 200 with a fault body)."""
    try:
        params, method = xmlrpc.client.loads(body)
    except Exception as exc:  # any unparsable body is a parse-error fault
        return _fault(-32700, f"parse error: {exc}")
    methods: dict[str, Callable[..., Any]] = {
        "changelog_last_serial": lambda: index.serial,
        "changelog_since_serial": lambda serial: [list(r) for r in index.changelog_since(serial)],
        "list_packages_with_serial": lambda: {p.name: p.serial for p in index.listed()},
    }
    handler = methods.get(method or "")
    if handler is None:
        return _fault(-32601, f"method not found: {method}")
    try:
        result = handler(*params)
    except TypeError as exc:
        return _fault(-32602, f"invalid params: {exc}")
    return xmlrpc.client.dumps((result,), methodresponse=True, allow_none=True).encode()


def _fault(code: int, message: str) -> bytes:
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), allow_none=True).encode()
