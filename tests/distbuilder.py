"""Real, small, deterministic wheels and sdists built in memory for tests and benchmarks.

Same inputs give the same bytes (fixed timestamps, sorted members, gzip mtime 0), so hashes are
stable across runs and a file can be rebuilt on demand instead of kept in memory.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import random
import re
import tarfile
import zipfile
from collections.abc import Iterable, Sequence

from packaging.utils import canonicalize_name
from packaging.version import Version

#: Every member of every archive carries this time (2024-01-02 03:04:06; ZIP needs even seconds).
FIXED_DATE_TIME = (2024, 1, 2, 3, 4, 6)
FIXED_MTIME = 1704164646
#: Pseudo-random padding repeats a block this large (fast to make, still unique per file).
_PAD_BLOCK = 1 << 16


def escape_name(name: str) -> str:
    """Wheel/sdist filename form: PEP 503 normalised, with ``_`` for runs of ``-_.``.

    Binary distribution format spec: "replace any runs of - _ . with a single _".
    """
    return canonicalize_name(name).replace("-", "_")


def normalize_version(version: str) -> str:
    """PEP 440 normal form, as filenames must use (``1.0.0-beta1`` -> ``1.0.0b1``)."""
    return str(Version(version))


def build_metadata(
    name: str,
    version: str,
    *,
    requires_dist: Iterable[str] = (),
    requires_python: str | None = None,
    summary: str = "",
) -> bytes:
    """Core metadata (METADATA / PKG-INFO), Metadata-Version 2.1."""
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {normalize_version(version)}",
        f"Summary: {summary}",
    ]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines.extend(f"Requires-Dist: {req}" for req in requires_dist)
    return ("\n".join(lines) + "\n").encode("utf-8")


def padding(seed: str, size: int) -> bytes:
    """``size`` deterministic pseudo-random bytes: a seeded 64 KiB block, repeated."""
    if size <= 0:
        return b""
    block = random.Random(seed).randbytes(min(size, _PAD_BLOCK))
    reps = -(-size // len(block))
    return (block * reps)[:size]


def _record_hash(data: bytes) -> str:
    # Wheel spec: "urlsafe_b64encode_nopad(digest)".
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _zip_member(zf: zipfile.ZipFile, path: str, data: bytes, *, stored: bool = False) -> None:
    info = zipfile.ZipInfo(path, date_time=FIXED_DATE_TIME)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def wheel_filename(name: str, version: str, tag: str = "py3-none-any") -> str:
    return f"{escape_name(name)}-{normalize_version(version)}-{tag}.whl"


def sdist_filename(name: str, version: str) -> str:
    # Source distribution format spec: "{name}-{version}.tar.gz", name normalised with "_".
    return f"{escape_name(name)}-{normalize_version(version)}.tar.gz"


def build_wheel(
    name: str,
    version: str,
    *,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = None,
    summary: str = "",
    tag: str = "py3-none-any",
    extra_size: int = 0,
) -> tuple[str, bytes, bytes]:
    """A real wheel: (filename, wheel bytes, METADATA bytes identical to the one inside)."""
    dist = escape_name(name)
    ver = normalize_version(version)
    dist_info = f"{dist}-{ver}.dist-info"
    metadata = build_metadata(
        name,
        version,
        requires_dist=requires_dist,
        requires_python=requires_python,
        summary=summary,
    )
    purelib = "true" if tag.split("-")[1] == "none" else "false"
    wheel_meta = (
        "Wheel-Version: 1.0\n"
        "Generator: bandersnatch-clone-tests (1.0)\n"
        f"Root-Is-Purelib: {purelib}\n" + "".join(f"Tag: {t}\n" for t in _expand_tag(tag))
    ).encode("ascii")
    members: list[tuple[str, bytes, bool]] = [
        (f"{dist}/__init__.py", f'__version__ = "{ver}"\n'.encode("ascii"), False)
    ]
    if extra_size > 0:
        members.append((f"{dist}/_padding.bin", padding(f"{dist}-{ver}-{tag}", extra_size), True))
    members += [
        (f"{dist_info}/METADATA", metadata, False),
        (f"{dist_info}/WHEEL", wheel_meta, False),
    ]
    record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d, _ in members)
    record += f"{dist_info}/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data, stored in members:
            _zip_member(zf, path, data, stored=stored)
        _zip_member(zf, f"{dist_info}/RECORD", record.encode("utf-8"))
    return wheel_filename(name, version, tag), buf.getvalue(), metadata


def _expand_tag(tag: str) -> list[str]:
    # Compressed tag sets ("py2.py3-none-any") expand to one Tag line per combination.
    py, abi, plat = tag.split("-")
    return [f"{p}-{a}-{x}" for p in py.split(".") for a in abi.split(".") for x in plat.split(".")]


def build_sdist(
    name: str,
    version: str,
    *,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = None,
    summary: str = "",
    extra_size: int = 0,
) -> tuple[str, bytes]:
    """A real sdist (.tar.gz with PKG-INFO and a setuptools pyproject.toml): (filename, bytes)."""
    dist = escape_name(name)
    ver = normalize_version(version)
    root = f"{dist}-{ver}"
    pkg_info = build_metadata(
        name,
        version,
        requires_dist=requires_dist,
        requires_python=requires_python,
        summary=summary,
    )
    deps = ", ".join(_toml_str(r) for r in requires_dist)
    pyproject = (
        "[build-system]\n"
        'requires = ["setuptools>=61"]\n'
        'build-backend = "setuptools.build_meta"\n\n'
        "[project]\n"
        f"name = {_toml_str(name)}\n"
        f"version = {_toml_str(ver)}\n"
        f"description = {_toml_str(summary)}\n"
        f"dependencies = [{deps}]\n"
        + (f"requires-python = {_toml_str(requires_python)}\n" if requires_python else "")
    ).encode("utf-8")
    members = [
        (f"{root}/PKG-INFO", pkg_info),
        (f"{root}/pyproject.toml", pyproject),
        (f"{root}/src/{dist}/__init__.py", f'__version__ = "{ver}"\n'.encode("ascii")),
    ]
    if extra_size > 0:
        members.append((f"{root}/src/{dist}/_padding.bin", padding(f"{root}-sdist", extra_size)))
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path, data in sorted(members):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = FIXED_MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tf.addfile(info, io.BytesIO(data))
    gz_buf = io.BytesIO()
    # mtime=0 and no filename in the gzip header: byte-identical output every time.
    level = 0 if extra_size > 0 else 9  # stored blocks: padding is incompressible anyway
    with gzip.GzipFile(filename="", fileobj=gz_buf, mode="wb", compresslevel=level, mtime=0) as gz:
        gz.write(tar_buf.getvalue())
    return sdist_filename(name, version), gz_buf.getvalue()


_TOML_ESCAPES = re.compile(r'["\\\x00-\x1f]')


def _toml_str(value: str) -> str:
    return '"' + _TOML_ESCAPES.sub(lambda m: f"\\u{ord(m.group()):04x}", value) + '"'
