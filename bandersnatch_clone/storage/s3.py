"""S3-compatible object storage: the tree as the objects ``<prefix>/web/...`` of one bucket.

An object becomes visible only whole: a PutObject, or the CompleteMultipartUpload of a file
streamed in parts, is atomic, so uploading straight to the final key is as safe as the file
system's temp-and-rename (an unfinished multipart upload is invisible, and `clean_temp` aborts
what a killed run left). Each object carries the Content-Type and Cache-Control a server must
send (`layout.content_type`, `layout.cache_control`: a store or CDN serves them as stored) and
its sha256 as user metadata (``x-amz-meta-sha256``), so "is this file current" and verify need a
HEAD, not a download. There are no marker objects for folders: a folder is a key prefix.

Memory stays bounded: a streamed file holds at most one part (`PART_SIZE`) in memory; the
upload of each part is awaited before more is read, so a slow store slows the download rather
than filling memory. Needs ``pip install 'bandersnatch-clone[s3]'`` (aiobotocore).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING, cast

from bandersnatch_clone.errors import MissingFile, StorageError
from bandersnatch_clone.layout import cache_control, content_type
from bandersnatch_clone.storage import READ_CHUNK, FileStat
from bandersnatch_clone.storage.s3client import (
    Body,
    CallError,
    Response,
    S3Client,
    error_code,
    field,
    is_missing,
    items,
    metadata,
    open_client,
    storage_error,
)
from bandersnatch_clone.storage.s3lock import BucketLock, default_owner
from bandersnatch_clone.storage.s3options import S3Options

if TYPE_CHECKING:
    from bandersnatch_clone.config import Config

log = logging.getLogger(__name__)

#: Bytes per part of a multipart upload (S3: at least 5 MiB, except the last part).
PART_SIZE = 8 * 1024 * 1024
#: Keys per DeleteObjects request (the API's maximum).
DELETE_BATCH = 1000
#: Concurrent DeleteObject calls when the store has no DeleteObjects.
SINGLE_DELETES = 16
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HASH_OFF_LOOP = 1024 * 1024


async def _sha256(data: bytes) -> str:
    if len(data) > _HASH_OFF_LOOP:
        return await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    return hashlib.sha256(data).hexdigest()


def _recorded_sha256(head: Response) -> str | None:
    digest = metadata(head).get("sha256")
    return digest if digest is not None and _SHA256.fullmatch(digest) else None


class S3Temp:
    """A file streamed to the store: one PutObject when it is small, else a multipart upload.

    With its final path known up front the parts go straight to that key; without, they are
    spooled to a local temp file and uploaded at `commit` (memory stays at one part either way).
    """

    def __init__(self, storage: S3Storage, path: PurePosixPath | None, sha256: str | None) -> None:
        self._storage = storage
        self._path = path
        self._declared = sha256
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._spool: IO[bytes] | None = None
        #: The multipart upload in progress: (tree path, key, upload id).
        self._upload: tuple[PurePosixPath, str, str] | None = None
        self._parts: list[dict[str, object]] = []

    async def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        if self._declared is None:
            self._hash.update(chunk)
        if len(self._buffer) >= self._storage.part_size:
            data, self._buffer = bytes(self._buffer), bytearray()
            if self._path is None:
                await asyncio.to_thread(self._spool_write, data)
            else:
                await self._send_part(self._path, data, self._declared)

    def _spool_write(self, data: bytes) -> None:
        if self._spool is None:
            # Kept open across writes; closed by commit or abort.
            self._spool = tempfile.TemporaryFile(prefix="bandersnatch-clone-s3-")  # noqa: SIM115
        self._spool.write(data)

    async def _send_part(self, path: PurePosixPath, data: bytes, sha256: str | None) -> None:
        storage = self._storage
        if self._upload is None:
            storage.fence()
            key = storage.key(path)
            try:
                response = await storage.client.create_multipart_upload(
                    Bucket=storage.bucket, Key=key, **storage.object_args(path, sha256)
                )
            except CallError as e:
                raise storage_error(storage.url(key), e) from e
            upload_id = field(response, "UploadId", str)
            if upload_id is None:
                raise StorageError(storage.url(key), "the store gave no UploadId")
            self._upload = (path, key, upload_id)
        _, key, upload_id = self._upload
        number = len(self._parts) + 1
        try:
            response = await storage.client.upload_part(
                Bucket=storage.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
        except CallError as e:
            raise storage_error(storage.url(key), e) from e
        self._parts.append({"PartNumber": number, "ETag": field(response, "ETag", str)})

    async def reset(self) -> None:
        await self._discard()
        self._hash = hashlib.sha256()

    async def commit(self, path: PurePosixPath) -> None:
        try:
            await self._commit(path)
        except BaseException:
            await self._discard()
            raise
        finally:
            self._close_spool()

    async def _commit(self, path: PurePosixPath) -> None:
        storage = self._storage
        if self._path is not None and path != self._path:
            raise StorageError(str(path), f"opened for {self._path}, committed elsewhere")
        storage.fence()
        digest = self._declared or self._hash.hexdigest()
        if self._spool is not None:
            # Spooled without knowing its key: now the key and the digest are known.
            spool = self._spool
            await asyncio.to_thread(spool.seek, 0)
            while part := await asyncio.to_thread(spool.read, storage.part_size):
                await self._send_part(path, part, digest)
        if self._upload is None:
            data, self._buffer = bytes(self._buffer), bytearray()
            await storage.put(path, data, digest)
            return
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            await self._send_part(path, data, digest)
        _, key, upload_id = self._upload
        try:
            await storage.client.complete_multipart_upload(
                Bucket=storage.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        except CallError as e:
            raise storage_error(storage.url(key), e) from e
        self._upload = None

    async def abort(self) -> None:
        await self._discard()
        self._close_spool()

    async def _discard(self) -> None:
        self._buffer = bytearray()
        self._parts = []
        if self._spool is not None:
            await asyncio.to_thread(self._spool.truncate, 0)
            await asyncio.to_thread(self._spool.seek, 0)
        upload, self._upload = self._upload, None
        if upload is not None:
            _, key, upload_id = upload
            try:
                await self._storage.client.abort_multipart_upload(
                    Bucket=self._storage.bucket, Key=key, UploadId=upload_id
                )
            except CallError as e:
                # Invisible anyway; the next run's clean_temp aborts it.
                log.warning("cannot abort an upload to %s: %s", key, e)

    def _close_spool(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


class S3Storage:
    """The tree in a bucket, under ``prefix``; see the module docstring."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        put_args: Mapping[str, object] | None = None,
        part_size: int = PART_SIZE,
        owner: str = "",
        lock_ttl: float = 300.0,
        conditional_writes: bool = True,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.put_args = dict(put_args or {})
        self.part_size = part_size
        self.batch_delete = True
        self._lock = BucketLock(
            client,
            bucket,
            self.key(PurePosixPath(".lock")),
            owner=owner or default_owner("?"),
            ttl=lock_ttl,
            conditional=conditional_writes,
        )

    # -- keys -------------------------------------------------------------------------------

    def key(self, path: PurePosixPath) -> str:
        """The object key of a tree path; refuses anything that is not plainly inside the tree."""
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise StorageError(str(path), "path outside the mirror tree")
        return f"{self.prefix}/{path.as_posix()}" if self.prefix else path.as_posix()

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _path_of(self, key: str) -> PurePosixPath:
        return PurePosixPath(key[len(self.prefix) + 1 :] if self.prefix else key)

    def object_args(self, path: PurePosixPath, sha256: str | None) -> dict[str, object]:
        """Content-Type, Cache-Control, the sha256 metadata and the configured extra arguments
        for a new object at the tree path `path`."""
        args: dict[str, object] = {"ContentType": content_type(path), **self.put_args}
        cache = cache_control(path)
        if cache is not None:
            args["CacheControl"] = cache
        if sha256 is not None:
            args["Metadata"] = {"sha256": sha256}
        return args

    # -- the lock ---------------------------------------------------------------------------

    def lock(self) -> BucketLock:
        return self._lock

    def fence(self) -> None:
        """Refuse to write once the bucket lock was lost to another run."""
        if self._lock.lost is not None:
            raise StorageError(self._lock.where, self._lock.lost)

    async def check(self) -> None:
        """Fail now, naming the bucket, when it is missing or the credentials are refused."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except CallError as e:
            raise storage_error(self.url(self.prefix), e) from e

    # -- reading ----------------------------------------------------------------------------

    async def _head(self, key: str) -> Response | None:
        try:
            return await self.client.head_object(Bucket=self.bucket, Key=key)
        except CallError as e:
            if is_missing(e):
                return None
            raise storage_error(self.url(key), e) from e

    async def _get(self, key: str) -> Body | None:
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=key)
        except CallError as e:
            if is_missing(e):
                return None
            raise storage_error(self.url(key), e) from e
        return cast(Body, response["Body"])

    async def read_bytes(self, path: PurePosixPath) -> bytes | None:
        key = self.key(path)
        body = await self._get(key)
        if body is None:
            return None
        try:
            return await body.read()
        except CallError as e:
            raise storage_error(self.url(key), e) from e
        finally:
            body.close()

    async def read_chunks(
        self,
        path: PurePosixPath,
        chunk_size: int = READ_CHUNK,
        *,
        start: int = 0,
        end: int | None = None,
    ) -> AsyncGenerator[bytes, None]:
        key = self.key(path)
        if end is not None and end <= start:
            if await self._head(key) is None:
                raise MissingFile(self.url(key))
            return
        args: dict[str, object] = {"Bucket": self.bucket, "Key": key}
        if start or end is not None:
            # A ranged GET: only the bytes asked for cross the wire (a client reading a
            # wheel's zip directory takes its last few KiB).
            args["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            response = await self.client.get_object(**args)
        except CallError as e:
            if is_missing(e):
                raise MissingFile(self.url(key)) from None
            if "Range" in args and error_code(e)[1] == 416:
                return  # starts past the end: nothing, as a file read there gives
            raise storage_error(self.url(key), e) from e
        body = cast(Body, response["Body"])
        try:
            while chunk := await body.read(chunk_size):
                yield chunk
        except CallError as e:
            raise storage_error(self.url(key), e) from e
        finally:
            body.close()

    async def size(self, path: PurePosixPath) -> int | None:
        head = await self._head(self.key(path))
        return None if head is None else field(head, "ContentLength", int)

    async def sizes(self, paths: Sequence[PurePosixPath]) -> list[int | None]:
        # The client's connection pool bounds how many HEADs are in flight.
        return list(await asyncio.gather(*(self.size(p) for p in paths)))

    async def sha256(self, path: PurePosixPath) -> str | None:
        head = await self._head(self.key(path))
        return None if head is None else _recorded_sha256(head)

    async def stat(self, path: PurePosixPath) -> FileStat | None:
        head = await self._head(self.key(path))
        if head is None:
            return None
        return FileStat(field(head, "ContentLength", int) or 0, _recorded_sha256(head))

    async def iterate(self, top: PurePosixPath) -> AsyncIterator[tuple[PurePosixPath, int]]:
        prefix = self.key(top) + "/"
        args: dict[str, object] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            try:
                response = await self.client.list_objects_v2(**args)
            except CallError as e:
                raise storage_error(self.url(prefix), e) from e
            for entry in items(response, "Contents"):
                key, size = field(entry, "Key", str), field(entry, "Size", int)
                if key is not None and not key.endswith("/"):  # another tool's folder marker
                    yield self._path_of(key), size or 0
            token = field(response, "NextContinuationToken", str)
            if not field(response, "IsTruncated", bool) or not token:
                return
            args["ContinuationToken"] = token

    # -- writing ----------------------------------------------------------------------------

    async def put(self, path: PurePosixPath, data: bytes, sha256: str) -> None:
        """One PutObject: the object appears whole, with its type and digest."""
        self.fence()
        key = self.key(path)
        args = self.object_args(path, sha256)
        try:
            await self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **args)
        except CallError as e:
            raise storage_error(self.url(key), e) from e

    async def write_bytes(self, path: PurePosixPath, data: bytes) -> bool:
        key = self.key(path)
        digest = await _sha256(data)
        head = await self._head(key)
        # Not the Content-Type: some stores replace it with one guessed from the name.
        if (
            head is not None
            and field(head, "ContentLength", int) == len(data)
            and metadata(head).get("sha256") == digest
        ):
            return False
        await self.put(path, data, digest)
        return True

    async def write_many(self, items: Sequence[tuple[PurePosixPath, bytes]]) -> list[bool]:
        return list(await asyncio.gather(*(self.write_bytes(p, d) for p, d in items)))

    async def open_temp(
        self, path: PurePosixPath | None = None, *, sha256: str | None = None
    ) -> S3Temp:
        return S3Temp(self, path, sha256)

    # -- removing ---------------------------------------------------------------------------

    async def delete(self, path: PurePosixPath) -> bool:
        key = self.key(path)
        if await self._head(key) is None:
            return False
        await self._delete_one(key)
        return True

    async def _delete_one(self, key: str) -> None:
        self.fence()
        try:
            await self.client.delete_object(Bucket=self.bucket, Key=key)
        except CallError as e:
            if not is_missing(e):
                raise storage_error(self.url(key), e) from e

    async def delete_many(self, paths: Iterable[PurePosixPath]) -> None:
        keys = [self.key(p) for p in paths]
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            if self.batch_delete:
                try:
                    await self._delete_batch(batch)
                    continue
                except CallError as e:
                    code, status = error_code(e)
                    if code not in ("NotImplemented", "MalformedXML") and status != 501:
                        raise storage_error(self.url(batch[0]), e) from e
                    log.info(
                        "%s: no DeleteObjects here (%s); deleting one by one", self.bucket, code
                    )
                    self.batch_delete = False
            for group in range(0, len(batch), SINGLE_DELETES):
                await asyncio.gather(
                    *(self._delete_one(k) for k in batch[group : group + SINGLE_DELETES])
                )

    async def _delete_batch(self, keys: list[str]) -> None:
        self.fence()
        response = await self.client.delete_objects(
            Bucket=self.bucket,
            Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
        )
        for error in items(response, "Errors"):
            if field(error, "Code", str) != "NoSuchKey":
                key = field(error, "Key", str) or keys[0]
                raise StorageError(
                    self.url(key), f"{field(error, 'Message', str)} ({field(error, 'Code', str)})"
                )

    async def clean_temp(self) -> int:
        """Abort the multipart uploads under the prefix: what a killed run was streaming."""
        prefix = f"{self.prefix}/" if self.prefix else ""
        args: dict[str, object] = {"Bucket": self.bucket, "Prefix": prefix}
        aborted = 0
        while True:
            try:
                response = await self.client.list_multipart_uploads(**args)
                for upload in items(response, "Uploads"):
                    await self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
            except CallError as e:
                raise storage_error(self.url(prefix), e) from e
            if not field(response, "IsTruncated", bool):
                return aborted
            args["KeyMarker"] = field(response, "NextKeyMarker", str)
            args["UploadIdMarker"] = field(response, "NextUploadIdMarker", str)


def backend(config: Config) -> AbstractAsyncContextManager[S3Storage]:
    """The ``s3`` entry point: ``[storage.s3]`` checked now, the client opened on entry."""
    options = S3Options.from_table(str(config.path), config.storage.options.get("s3", {}))
    m = config.mirror
    return open_s3(
        options,
        owner=default_owner(m.directory),
        connections=m.metadata_workers + m.download_workers + 4,
    )


@asynccontextmanager
async def open_s3(
    options: S3Options, *, owner: str, connections: int = 32
) -> AsyncIterator[S3Storage]:
    async with open_client(options, connections=connections) as client:
        storage = S3Storage(
            client,
            options.bucket,
            options.prefix,
            put_args=options.put_extra_args,
            owner=owner,
            lock_ttl=options.lock_ttl,
            conditional_writes=options.conditional_writes,
        )
        await storage.check()
        yield storage
