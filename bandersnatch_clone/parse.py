"""Pure parsers from upstream bodies (PEP 691 JSON, PyPI's JSON API, XML-RPC) to typed records."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import re
import xmlrpc.client
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urldefrag, urljoin
from xml.parsers.expat import ExpatError

from packaging.utils import NormalizedName

from bandersnatch_clone.errors import BadUpstreamData, UnsafePath, UpstreamUnavailable
from bandersnatch_clone.layout import normalize
from bandersnatch_clone.model import DistFile, ListedProject, ProjectDetail, ProjectStatus

log = logging.getLogger(__name__)

#: The newest ``api-version`` minor we understand: 1.4 is PEP 792 (project status markers).
SUPPORTED_MINOR = 4

# PEP 691: any hashlib algorithm that hashlib.new() takes without extra parameters (so no shake_*).
# We use the guaranteed set so that what is accepted does not depend on the local OpenSSL.
_HEX_DIGITS = {
    name: hashlib.new(name).digest_size * 2
    for name in hashlib.algorithms_guaranteed
    if not name.startswith("shake_")
}
_HEX = re.compile(r"[0-9a-f]+")
_API_VERSION = re.compile(r"(\d+)\.(\d+)")
# PEP 700: upload-time is "yyyy-mm-ddThh:mm:ss.ffffffZ", fraction optional, up to 6 digits.
_UPLOAD_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")
# The root listing's meta object when it is the document's first key (PyPI sorts keys, and
# "meta" < "projects"); it holds only scalars, so the object spans no braces.
_META_FIRST = re.compile(rb'\A\s*\{\s*"meta"\s*:\s*(\{[^{}]*\})')
_warned_versions: set[str] = set()


@dataclass(frozen=True, slots=True)
class LegacyProject:
    """PyPI's ``/pypi/<name>/json`` document, for metadata filters and the JSON API copies."""

    name: NormalizedName
    #: ``last_serial`` of the document (or ``X-PyPI-Last-Serial``).
    serial: int
    #: The ``info`` object, read-only at the top level.
    info: Mapping[str, object]
    #: The body exactly as received; the mirror writes these bytes as its JSON API copy.
    raw: bytes


@dataclass(frozen=True, slots=True)
class ChangelogEvent:
    """A row of XML-RPC ``changelog_since_serial``: [name, version, timestamp, action, serial]."""

    name: str
    #: None for project-level actions (ownership changes, project creation).
    version: str | None
    #: Seconds since the epoch, UTC.
    timestamp: int
    action: str
    serial: int


class XmlRpcFault(UpstreamUnavailable):
    """The XML-RPC endpoint answered with a fault instead of a result."""

    def __init__(self, url: str, code: int, fault: str) -> None:
        self.code = code
        self.fault = fault
        super().__init__(url, f"XML-RPC fault {code}: {fault}")


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Building millions of containers triggers full collections that free nothing; pausing the
    # collector roughly halves the time to parse a 700,000-project listing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load_object(body: bytes, url: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError
        raise BadUpstreamData(url, f"invalid JSON: {e}") from e
    if not isinstance(data, dict):
        # PEP 691: "All JSON responses will *always* be a JSON object".
        raise BadUpstreamData(url, "JSON body is not an object")
    return data


def _meta(data: Mapping[str, object], url: str) -> Mapping[str, object]:
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise BadUpstreamData(url, "meta is not an object")
    raw = meta.get("api-version", "1.0")  # PEP 629: no version means 1.0
    match = _API_VERSION.fullmatch(raw) if isinstance(raw, str) else None
    if match is None:
        raise BadUpstreamData(url, f"meta.api-version {raw!r} is not 'major.minor'")
    major, minor = int(match[1]), int(match[2])
    if major != 1:
        # PEP 629: "When encountering a major version greater than expected, clients MUST hard
        # fail with an appropriate error message for the user."
        raise BadUpstreamData(url, f"api-version {raw} is not supported (major version 1 only)")
    if minor > SUPPORTED_MINOR and raw not in _warned_versions:
        # PEP 629: on a newer minor version, clients SHOULD warn.
        _warned_versions.add(raw)
        log.warning("%s: api-version %s is newer than we know; new fields are ignored", url, raw)
    return meta


def _serial(value: object, header_serial: int | None, url: str) -> int:
    # The serial inside the body describes that very body; a header may be missing (static
    # mirrors) or added by another layer. So the body wins and the header is the fallback.
    if value is None:
        value = header_serial
    if value is None:
        raise BadUpstreamData(url, "no serial: neither _last-serial nor X-PyPI-Last-Serial")
    serial = as_serial(value)
    if serial is None:
        raise BadUpstreamData(url, f"serial {value!r} is not a non-negative integer")
    return serial


def as_serial(value: object) -> int | None:
    """A serial as an int, or None. PyPI sends an int; some proxies in front of it send the
    same number as a string of digits (seen: api-version 1.1 pages with ``"_last-serial":
    "26356948"``), which is taken as meant."""
    if type(value) is int:
        return value if value >= 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def normalized_name(value: object, url: str) -> NormalizedName:
    """A valid project name from the upstream, PEP 503-normalised; else `BadUpstreamData`."""
    if not isinstance(value, str):
        raise BadUpstreamData(url, "project name missing or not a string")
    try:
        return normalize(value)
    except UnsafePath as e:
        raise BadUpstreamData(url, f"invalid project name {value!r}") from e


def _opt_str(data: Mapping[str, object], key: str, url: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise BadUpstreamData(url, f"{key} is not a string: {value!r}")
    return value


def _hashes(value: object, url: str, what: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadUpstreamData(url, f"{what} is not an object")
    hashes: dict[str, str] = {}
    for name, digest in value.items():
        # PEP 691: hash names "SHOULD always be normalized to be lowercase".
        name = name.lower()
        length = _HEX_DIGITS.get(name)
        if length is None:
            continue  # not a hashlib algorithm: nobody can check it, so nobody needs it
        if not isinstance(digest, str):
            raise BadUpstreamData(url, f"{what}: {name} digest is not a string")
        digest = digest.lower()
        if len(digest) != length or not _HEX.fullmatch(digest):
            raise BadUpstreamData(url, f"{what}: {name} is not a {length}-digit hex digest")
        hashes[name] = digest
    return hashes


def _yanked(value: object, url: str) -> str | None:
    # PEP 691: a boolean, or "a non empty, but otherwise arbitrary, string" giving the reason;
    # only a truthy value means yanked.
    if value is None or isinstance(value, bool | str):
        return None if not value else "" if value is True else str(value)
    raise BadUpstreamData(url, f"yanked is neither a boolean nor a string: {value!r}")


def _core_metadata(entry: Mapping[str, object], url: str) -> Mapping[str, str] | None:
    # PEP 714: clients MUST read "core-metadata" when present and MAY fall back to PEP 658's
    # "dist-info-metadata" only when it is absent (presence, not truthiness, decides).
    key = "core-metadata" if "core-metadata" in entry else "dist-info-metadata"
    value = entry.get(key)
    if value is None or isinstance(value, bool):
        return {} if value else None
    return _hashes(value, url, key)


def _file(entry: object, url: str) -> DistFile:
    if not isinstance(entry, dict):
        raise BadUpstreamData(url, "a files entry is not an object")
    filename, href = entry.get("filename"), entry.get("url")
    if not isinstance(filename, str) or not filename:
        raise BadUpstreamData(url, "a file has no filename")
    if not isinstance(href, str) or not href:
        raise BadUpstreamData(url, f"{filename}: no url")
    if "hashes" not in entry:  # PEP 691: "The hashes dictionary MUST be present"
        raise BadUpstreamData(url, f"{filename}: no hashes")
    size = entry.get("size")
    if size is not None and (type(size) is not int or size < 0):
        raise BadUpstreamData(url, f"{filename}: size {size!r} is not a non-negative integer")
    upload_time = _opt_str(entry, "upload-time", url)
    if upload_time is not None and not _UPLOAD_TIME.fullmatch(upload_time):
        # A malformed optional field is dropped, not fatal: the file itself is still good, and
        # passing the text on would hand clients (uv --exclude-newer) something they reject.
        log.warning("%s: %s: dropping malformed upload-time %r", url, filename, upload_time)
        upload_time = None
    provenance = _opt_str(entry, "provenance", url)
    return DistFile(
        filename=filename,
        # A mirror of a mirror serves relative links (../../packages/...): resolve them.
        url=urldefrag(urljoin(url, href)).url,
        hashes=_hashes(entry["hashes"], url, f"{filename}: hashes"),
        requires_python=_opt_str(entry, "requires-python", url),
        yanked=_yanked(entry.get("yanked"), url),
        size=size,
        upload_time=upload_time,
        core_metadata=_core_metadata(entry, url),
        provenance=urljoin(url, provenance) if provenance else None,
    )


def _status(value: object, url: str) -> tuple[ProjectStatus | None, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise BadUpstreamData(url, "project-status is not an object")
    # PEP 792's prose says "state", its example and PyPI say "status"; the spec errata settled
    # on "status". Reading "state" as a fallback costs nothing.
    status = value.get("status", value.get("state"))
    reason = _opt_str(value, "reason", url)
    if status is None:
        return None, None
    if not isinstance(status, str):
        raise BadUpstreamData(url, f"project-status.status {status!r} is not a string")
    try:
        return ProjectStatus(status), reason
    except ValueError:
        # PEP 792 lets later standards add markers. A marker we do not know carries no rule we
        # could follow, and the file list already says what the index offers: keep the files,
        # drop the marker (as if absent, i.e. "active").
        log.warning("%s: unknown project-status %r ignored", url, status)
        return None, None


def parse_project_json(body: bytes, url: str, header_serial: int | None = None) -> ProjectDetail:
    """A PEP 691 project page (``/simple/<name>/``, api-version 1.x) as a `ProjectDetail`.

    `url` is the page's final URL: file links are resolved against it. The serial is
    ``meta._last-serial``, else `header_serial` (``X-PyPI-Last-Serial``); neither is an error.
    """
    data = _load_object(body, url)
    meta = _meta(data, url)
    files = data.get("files")
    if not isinstance(files, list):
        raise BadUpstreamData(url, "files missing or not a list")
    parsed = tuple(_file(entry, url) for entry in files)
    if len({f.filename for f in parsed}) != len(parsed):
        raise BadUpstreamData(url, "the same filename is listed twice")
    versions = data.get("versions", [])  # PEP 700, absent before api-version 1.1
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        raise BadUpstreamData(url, "versions is not a list of strings")
    status, reason = _status(data.get("project-status"), url)
    return ProjectDetail(
        name=normalized_name(data.get("name"), url),
        serial=_serial(meta.get("_last-serial"), header_serial, url),
        files=parsed,
        versions=tuple(versions),
        status=status,
        status_reason=reason,
    )


def parse_listing_json(
    body: bytes, url: str, header_serial: int | None = None
) -> tuple[int, list[ListedProject]]:
    """PyPI's PEP 691 root listing with its ``_last-serial`` extensions: (global serial, rows).

    Names are returned as listed (validated where they are used); every row needs a serial.
    """
    with _gc_paused():
        data = _load_object(body, url)
        serial = _serial(_meta(data, url).get("_last-serial"), header_serial, url)
        projects = data.get("projects")
        if not isinstance(projects, list):
            raise BadUpstreamData(url, "projects missing or not a list")
        try:
            rows = [ListedProject(p["name"], p["_last-serial"]) for p in projects]
        except (KeyError, TypeError) as e:
            raise BadUpstreamData(url, f"a listing row lacks name or _last-serial: {e!r}") from e
    for i, row in enumerate(rows):
        if type(row.serial) is not int:
            fixed = as_serial(row.serial)
            if fixed is None:
                raise BadUpstreamData(url, f"bad listing row {row!r}")
            rows[i] = row = ListedProject(row.name, fixed)
        if type(row.name) is not str or row.serial < 0:
            raise BadUpstreamData(url, f"bad listing row {row!r}")
        # An empty or otherwise invalid name is skipped (with a warning) at planning, like any
        # other name that is not a project name: one bad row must not stop every run.
    return serial, rows


def peek_listing_serial(body_prefix: bytes) -> int | None:
    """``meta._last-serial`` from the first bytes of a root listing, or None when unsure.

    Only answers when ``meta`` is the document's first key and holds an api-version 1.x.
    """
    match = _META_FIRST.match(body_prefix)
    if match is None:
        return None
    try:
        meta = json.loads(match[1])
    except ValueError:
        return None
    version = meta.get("api-version", "1.0")
    serial = meta.get("_last-serial")
    if not isinstance(version, str) or not version.startswith("1."):
        return None
    return as_serial(serial)


def parse_legacy_json(body: bytes, url: str, header_serial: int | None = None) -> LegacyProject:
    """PyPI's JSON API document (``/pypi/<name>/json``), lightly checked, raw bytes kept."""
    data = _load_object(body, url)
    info = data.get("info")
    if not isinstance(info, dict):
        raise BadUpstreamData(url, "info missing or not an object")
    if not isinstance(data.get("releases", {}), dict) or not isinstance(data.get("urls", []), list):
        raise BadUpstreamData(url, "releases is not an object or urls not a list")
    return LegacyProject(
        name=normalized_name(info.get("name"), url),
        serial=_serial(data.get("last_serial"), header_serial, url),
        info=MappingProxyType(info),
        raw=body,
    )


def parse_xmlrpc(body: bytes, url: str) -> object:
    """The single result of an XML-RPC method response; a fault raises `XmlRpcFault`."""
    try:
        params, _ = xmlrpc.client.loads(body)
    except xmlrpc.client.Fault as e:
        raise XmlRpcFault(url, int(e.faultCode), str(e.faultString)) from e
    except (ExpatError, xmlrpc.client.ResponseError, ValueError, TypeError, IndexError) as e:
        raise BadUpstreamData(url, f"invalid XML-RPC response: {e}") from e
    if len(params) != 1:
        raise BadUpstreamData(url, f"XML-RPC response has {len(params)} values, not 1")
    return params[0]


def parse_serial_result(value: object, url: str) -> int:
    """``changelog_last_serial()``: one non-negative integer."""
    return _serial(value, None, url)


def parse_changelog(value: object, url: str) -> list[ChangelogEvent]:
    """``changelog_since_serial(n)``: rows of ``[name, version, timestamp, action, serial]``."""
    if not isinstance(value, list):
        raise BadUpstreamData(url, "changelog is not an array")
    events = []
    for row in value:
        match row:
            case [str(name), str() | None as version, int(ts), str(action), int(serial)] if (
                type(ts) is int and type(serial) is int
            ):
                events.append(ChangelogEvent(name, version, ts, action, serial))
            case _:
                raise BadUpstreamData(url, f"bad changelog row {row!r}")
    return events


def parse_packages_with_serial(value: object, url: str) -> list[ListedProject]:
    """``list_packages_with_serial()``: a struct of name -> serial."""
    if not isinstance(value, dict):
        raise BadUpstreamData(url, "list_packages_with_serial result is not a struct")
    rows = [ListedProject(name, serial) for name, serial in value.items()]
    for row in rows:
        if type(row.serial) is not int or not row.name:
            raise BadUpstreamData(url, f"bad package row {row!r}")
    return rows
