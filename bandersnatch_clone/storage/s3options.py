"""The ``[storage.s3]`` table, checked into `S3Options`; every error names file, key, problem.

Pure: importable (and testable) without aiobotocore, so a config is checked the same way
whether or not the extra is installed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, cast
from urllib.parse import urlsplit

from bandersnatch_clone.errors import ConfigError

AddressingStyle = Literal["auto", "path", "virtual"]

# S3's bucket naming rules (lowercase letters, digits, dots and hyphens; 3 to 63 characters;
# starts and ends with a letter or digit).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
#: Arguments of PutObject that CreateMultipartUpload takes too, so every object gets them.
#: (SSE-C is not among them: it would have to go with every read as well.)
PUT_ARGS = (
    "ACL",
    "BucketKeyEnabled",
    "ExpectedBucketOwner",
    "GrantFullControl",
    "GrantRead",
    "GrantReadACP",
    "GrantWriteACP",
    "ObjectLockLegalHoldStatus",
    "ObjectLockMode",
    "SSEKMSEncryptionContext",
    "SSEKMSKeyId",
    "ServerSideEncryption",
    "StorageClass",
    "Tagging",
)


@dataclass(frozen=True, slots=True)
class S3Options:
    """Where in which object store the tree goes, and how to talk to it."""

    bucket: str
    #: Folder inside the bucket, without slashes at either end; "" = the bucket's root.
    prefix: str = ""
    #: The store's URL; None = AWS S3 (the region's endpoint).
    endpoint_url: str | None = None
    region: str | None = None
    #: Both None: the usual AWS chain (environment, shared files, instance or task role).
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    addressing_style: AddressingStyle = "auto"
    #: Extra PutObject/CreateMultipartUpload arguments (server-side encryption, storage class).
    put_extra_args: Mapping[str, str | bool] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    #: Seconds after its last heartbeat that a run's bucket lock counts as abandoned.
    lock_ttl: float = 300.0
    #: Use If-None-Match / If-Match for the lock (an answer of 501 falls back by itself); False
    #: for a store that accepts those headers but ignores them.
    conditional_writes: bool = True

    @classmethod
    def from_table(cls, file: str, table: Mapping[str, object]) -> S3Options:
        return _parse(file, table)


_KEYS = (
    "bucket",
    "prefix",
    "endpoint_url",
    "region",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "addressing_style",
    "put_extra_args",
    "lock_ttl",
    "conditional_writes",
)


def _key(name: str) -> str:
    return f"storage.s3.{name}"


def _string(file: str, table: Mapping[str, object], name: str) -> str | None:
    value = table.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(file, _key(name), f"expected a string, got {type(value).__name__}")
    return value or None


def _parse(file: str, table: Mapping[str, object]) -> S3Options:
    for name in table:
        if name not in _KEYS:
            close = difflib.get_close_matches(name, _KEYS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(file, _key(name), f"unknown key{hint}")
    bucket = _string(file, table, "bucket")
    if bucket is None:
        raise ConfigError(file, _key("bucket"), "missing required key")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(
            file,
            _key("bucket"),
            f"not a valid bucket name: {bucket!r} (3 to 63 lowercase letters, digits, "
            "dots and hyphens)",
        )
    prefix = (_string(file, table, "prefix") or "").strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ConfigError(file, _key("prefix"), f"empty, '.' or '..' folder in {prefix!r}")
    endpoint = _string(file, table, "endpoint_url")
    if endpoint is not None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ConfigError(
                file, _key("endpoint_url"), f"expected an http:// or https:// URL, got {endpoint!r}"
            )
        endpoint = endpoint.rstrip("/")
    key_id = _string(file, table, "access_key_id")
    secret = _string(file, table, "secret_access_key")
    if (key_id is None) != (secret is None):
        given, missing = "access_key_id", "secret_access_key"
        if key_id is None:
            given, missing = missing, given
        raise ConfigError(
            file,
            _key(missing),
            f"{given} is set but {missing} is not: give both, or neither (the AWS chain)",
        )
    style = _string(file, table, "addressing_style") or "auto"
    if style not in ("auto", "path", "virtual"):
        raise ConfigError(
            file, _key("addressing_style"), f"expected 'auto', 'path' or 'virtual', got {style!r}"
        )
    ttl = table.get("lock_ttl", 300.0)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 10 <= ttl <= 86400:
        raise ConfigError(file, _key("lock_ttl"), f"expected seconds in 10..86400, got {ttl!r}")
    conditional = table.get("conditional_writes", True)
    if not isinstance(conditional, bool):
        raise ConfigError(
            file, _key("conditional_writes"), f"expected true or false, got {conditional!r}"
        )
    return S3Options(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=endpoint,
        region=_string(file, table, "region"),
        access_key_id=key_id,
        secret_access_key=secret,
        session_token=_string(file, table, "session_token"),
        addressing_style=cast(AddressingStyle, style),
        put_extra_args=_put_args(file, table.get("put_extra_args", {})),
        lock_ttl=float(ttl),
        conditional_writes=conditional,
    )


def _put_args(file: str, value: object) -> Mapping[str, str | bool]:
    if not isinstance(value, Mapping):
        raise ConfigError(file, _key("put_extra_args"), "expected a table")
    out: dict[str, str | bool] = {}
    for name, arg in cast(Mapping[str, object], value).items():
        where = f"put_extra_args.{name}"
        if name not in PUT_ARGS:
            allowed = ", ".join(PUT_ARGS)
            raise ConfigError(file, _key(where), f"not an argument we pass on; known: {allowed}")
        if not isinstance(arg, str | bool):
            raise ConfigError(file, _key(where), f"expected a string, got {arg!r}")
        out[name] = arg
    return MappingProxyType(out)
