"""The S3 API as this package uses it: a narrow typed seam over aiobotocore, its errors mapped.

aiobotocore's clients have no static types (their methods are generated from JSON models), so
the few calls we make are declared in `S3Client` and the client is cast to it once, where it is
created; responses are read through `field`/`items`, which check each value's type. Retries are
botocore's "standard" mode (throttling, 5xx, resets and timeouts, with backoff), not ours.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar, cast

from aiobotocore.session import get_session
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from bandersnatch_clone.errors import StorageError
from bandersnatch_clone.storage.s3options import S3Options

Response = Mapping[str, object]
T = TypeVar("T")

#: botocore's retry policy: "standard" retries throttling, 5xx, resets and timeouts with backoff.
RETRIES = {"mode": "standard", "max_attempts": 5}


class Body(Protocol):
    """A streamed GetObject body."""

    async def read(self, amt: int | None = None) -> bytes: ...
    def close(self) -> None: ...


class S3Client(Protocol):
    """The calls we make; keyword arguments and responses as in the S3 API reference."""

    async def head_bucket(self, **kwargs: object) -> Response: ...
    async def head_object(self, **kwargs: object) -> Response: ...
    async def get_object(self, **kwargs: object) -> Response: ...
    async def put_object(self, **kwargs: object) -> Response: ...
    async def delete_object(self, **kwargs: object) -> Response: ...
    async def delete_objects(self, **kwargs: object) -> Response: ...
    async def list_objects_v2(self, **kwargs: object) -> Response: ...
    async def create_multipart_upload(self, **kwargs: object) -> Response: ...
    async def upload_part(self, **kwargs: object) -> Response: ...
    async def complete_multipart_upload(self, **kwargs: object) -> Response: ...
    async def abort_multipart_upload(self, **kwargs: object) -> Response: ...
    async def list_multipart_uploads(self, **kwargs: object) -> Response: ...


#: Errors from a call: the server's answer (`ClientError`) or no answer (`BotoCoreError`:
#: connection refused, no credentials, a timeout after the retries).
CallError = (ClientError, BotoCoreError)


def error_code(exc: BaseException) -> tuple[str, int | None]:
    """(S3 error code, HTTP status) of a failed call; ("", None) when there was no answer."""
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return "", None
    error = response.get("Error")
    code = error.get("Code") if isinstance(error, Mapping) else None
    meta = response.get("ResponseMetadata")
    status = meta.get("HTTPStatusCode") if isinstance(meta, Mapping) else None
    return (str(code) if code else ""), (status if isinstance(status, int) else None)


def is_missing(exc: BaseException) -> bool:
    """A 404 for a key (HEAD answers with the bare status as its code)."""
    code, status = error_code(exc)
    return code in ("NoSuchKey", "404", "NotFound") or status == 404


def is_not_implemented(exc: BaseException) -> bool:
    code, status = error_code(exc)
    return code == "NotImplemented" or status == 501


def is_precondition_failed(exc: BaseException) -> bool:
    """412 (the object is there / changed), or 409 (a concurrent conditional write won)."""
    code, status = error_code(exc)
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)


_REASONS = {
    "AccessDenied": "access denied: check the credentials and the bucket's policy",
    "InvalidAccessKeyId": "the access key is not known to the store: check the credentials",
    "SignatureDoesNotMatch": "the store rejected our signature: check the secret access key",
    "NoSuchBucket": "no such bucket",
    "403": "access denied: check the credentials and the bucket's policy",
}


def storage_error(where: str, exc: BaseException) -> StorageError:
    """The operator's words for a failed call on ``where`` (an ``s3://bucket/key`` URL)."""
    code, status = error_code(exc)
    if code or status:
        message = ""
        response = getattr(exc, "response", None)
        if isinstance(response, Mapping) and isinstance(response.get("Error"), Mapping):
            message = str(response["Error"].get("Message") or "")
        reason = _REASONS.get(code) or message or code or "error"
        return StorageError(where, f"{reason} ({code or 'no code'}, HTTP {status})")
    return StorageError(where, str(exc) or type(exc).__name__)


def field(response: Response, name: str, kind: type[T]) -> T | None:
    """``response[name]`` when present and of type `kind`; None when absent."""
    value = response.get(name)
    if value is None:
        return None
    if not isinstance(value, kind):
        raise StorageError(name, f"unexpected {type(value).__name__} in the store's answer")
    return value


def items(response: Response, name: str) -> list[Response]:
    """A list of records (``Contents``, ``Uploads``, ``Errors``) of a response."""
    value = response.get(name) or []
    if not isinstance(value, list):
        raise StorageError(name, "unexpected answer from the store: not a list")
    return [cast(Response, v) for v in value if isinstance(v, Mapping)]


def metadata(response: Response) -> Mapping[str, str]:
    """User metadata (``x-amz-meta-*``, names lowercased) of a HEAD or GET."""
    meta = response.get("Metadata")
    if not isinstance(meta, Mapping):
        return {}
    return {str(k).lower(): str(v) for k, v in meta.items()}


def response_header(response: Response, name: str) -> str | None:
    meta = response.get("ResponseMetadata")
    headers = meta.get("HTTPHeaders") if isinstance(meta, Mapping) else None
    value = headers.get(name.lower()) if isinstance(headers, Mapping) else None
    return value if isinstance(value, str) else None


@asynccontextmanager
async def open_client(options: S3Options, *, connections: int = 32) -> AsyncIterator[S3Client]:
    """One client (one connection pool) for a run."""
    config = BotoConfig(
        s3={"addressing_style": options.addressing_style},
        retries=RETRIES,
        max_pool_connections=connections,
        connect_timeout=10,
        read_timeout=60,
        # Checksums only where the API requires them (DeleteObjects): botocore's newer default
        # (a CRC on every upload) is refused by many S3-compatible stores, and the engine has
        # checked each file's sha256 already.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = get_session()
    async with session.create_client(
        "s3",
        region_name=options.region,
        endpoint_url=options.endpoint_url,
        aws_access_key_id=options.access_key_id,
        aws_secret_access_key=options.secret_access_key,
        aws_session_token=options.session_token,
        config=config,
    ) as client:
        yield cast(S3Client, client)
