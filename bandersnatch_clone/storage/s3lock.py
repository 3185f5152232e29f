"""The bucket lock: one writing run per bucket prefix, across hosts, crash-tolerant.

The lock is the object ``<prefix>/.lock``; its body names the holder (a random token, the host
and state directory, the pid, its ttl). The holder rewrites it every ttl/4 (a heartbeat), so a
lock whose object is older than its ttl, by the store's own clock (``Date`` of the answer minus
the object's ``Last-Modified``: no two hosts' clocks are compared), belongs to a dead run.

How it is safe:

- Where the store has conditional writes (AWS S3 since 2024, SeaweedFS, MinIO, R2...), taking the
  lock is ``PutObject`` with ``If-None-Match: *``: the store creates the object for exactly one
  of two racing runs and answers 412 to the other. Taking over an abandoned lock, and every
  heartbeat, is ``PutObject`` with ``If-Match: <the ETag we read>``, so of two runs that both
  saw the same abandoned lock only one replaces it, and a holder whose lock was taken over
  learns it at its next heartbeat.
- A store that answers 501 NotImplemented to those headers gets the fallback: read the lock
  (refuse if it is live), write ours, wait a settle delay, read it back and go on only if our
  token is still there. Of several runs that wrote within the delay of each other, the last
  write wins and every other one sees the winner's token on its read-back and backs off. This
  relies on read-after-write consistency (AWS S3 and the usual stores have it) and on a run
  taking less than the settle delay between its first read and its write; heartbeats re-read
  the token, so a run that lost a race anyway stops writing at its next heartbeat. For a store
  that accepts the headers but silently ignores them, set ``conditional_writes = false`` to get
  this fallback.
- A run killed with -9 leaves its lock behind. The next run on the same host and state
  directory holds that directory's `MirrorLock`, which proves the old holder dead, and takes the
  lock over at once; a run elsewhere waits for the ttl.
- Once the lock is lost (taken over after we failed to refresh it for a ttl), the storage
  refuses every further write with `StorageError`, which stops the engine.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from bandersnatch_clone.errors import LockedError, StorageError
from bandersnatch_clone.storage.s3client import (
    Body,
    CallError,
    S3Client,
    field,
    is_missing,
    is_not_implemented,
    is_precondition_failed,
    response_header,
    storage_error,
)

log = logging.getLogger(__name__)

#: Seconds between our write of the lock and the read-back that confirms it (fallback only).
SETTLE = 2.0


@dataclass(frozen=True, slots=True)
class LockRecord:
    """What the lock object says, and how old it is by the store's clock."""

    token: str
    owner: str
    pid: int
    ttl: float
    etag: str | None
    age: float

    @property
    def expired(self) -> bool:
        return self.age >= self.ttl

    def describe(self) -> str:
        return (
            f"held by {self.owner} (pid {self.pid}), refreshed {self.age:.0f} s ago; "
            f"taken over after {self.ttl:.0f} s without a refresh"
        )


def default_owner(directory: object) -> str:
    """Who we are: the host and the state directory (whose `MirrorLock` we hold)."""
    return f"{socket.gethostname()}:{directory}"


class BucketLock:
    """``async with lock:`` holds the bucket prefix for one run; see the module docstring."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        *,
        owner: str,
        ttl: float = 300.0,
        conditional: bool = True,
        settle: float = SETTLE,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.owner = owner
        self.ttl = ttl
        self.conditional = conditional
        self.settle = settle
        #: Why the lock was lost while held (then every write is refused), else None.
        self.lost: str | None = None
        self.held = False
        self._token = uuid.uuid4().hex
        self._etag: str | None = None
        self._refreshed = 0.0
        self._beats = 0
        self._heartbeat: asyncio.Task[None] | None = None

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    async def __aenter__(self) -> BucketLock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    # -- the object -------------------------------------------------------------------------

    def _body(self) -> bytes:
        # "beat" changes the body, hence the ETag, at every heartbeat: If-Match then tells
        # our last write from any other.
        self._beats += 1
        doc = {
            "token": self._token,
            "owner": self.owner,
            "pid": os.getpid(),
            "ttl": self.ttl,
            "beat": self._beats,
        }
        return json.dumps(doc).encode()

    async def read(self) -> LockRecord | None:
        """The current lock object, or None when there is none."""
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=self.key)
            body = cast(Body, response["Body"])
            try:
                raw = await body.read()
            finally:
                body.close()
        except CallError as e:
            if is_missing(e):
                return None
            raise storage_error(self.where, e) from e
        try:
            doc = json.loads(raw)
            token, owner = str(doc["token"]), str(doc["owner"])
            pid, ttl = int(doc["pid"]), float(doc["ttl"])
        except (ValueError, KeyError, TypeError):
            # Not ours to read: someone else's lock, judged by our ttl.
            token, owner, pid, ttl = "", "an unreadable lock", 0, self.ttl
        modified = field(response, "LastModified", datetime)
        date = response_header(response, "date")
        now = email.utils.parsedate_to_datetime(date) if date else datetime.now(UTC)
        age = (now - modified).total_seconds() if modified else 0.0
        return LockRecord(token, owner, pid, ttl, field(response, "ETag", str), age)

    async def _put(self, **condition: str) -> str | None:
        response = await self.client.put_object(
            Bucket=self.bucket,
            Key=self.key,
            Body=self._body(),
            ContentType="application/json",
            **condition,
        )
        return field(response, "ETag", str)

    # -- taking, keeping and giving back ----------------------------------------------------

    def _may_take(self, current: LockRecord) -> bool:
        # Same host and state directory: our MirrorLock proves that run dead (kill -9).
        return current.token == self._token or current.owner == self.owner or current.expired

    def _refuse(self, current: LockRecord | None) -> LockedError:
        what = current.describe() if current else "taken by another run just now"
        return LockedError(f"{self.where} ({what})")

    async def acquire(self) -> None:
        if self.conditional:
            try:
                self._etag = await self._put(IfNoneMatch="*")
            except CallError as e:
                if is_not_implemented(e):
                    log.info("%s: no conditional writes here; locking by read-back", self.where)
                    self.conditional = False
                elif not is_precondition_failed(e):
                    raise storage_error(self.where, e) from e
                else:
                    await self._take_over()
            else:
                log.debug("%s: taken", self.where)
        if not self.conditional:
            await self._acquire_by_read_back()
        self.held = True
        self._refreshed = time.monotonic()
        self._heartbeat = asyncio.create_task(self._beat(), name=f"heartbeat {self.where}")

    async def _take_over(self) -> None:
        current = await self.read()
        if current is None:
            # Released between our write and our read: try once more from the start.
            try:
                self._etag = await self._put(IfNoneMatch="*")
                return
            except CallError as e:
                if is_precondition_failed(e):
                    raise self._refuse(None) from None
                raise storage_error(self.where, e) from e
        if not self._may_take(current) or current.etag is None:
            raise self._refuse(current)
        try:
            self._etag = await self._put(IfMatch=current.etag)
        except CallError as e:
            if is_precondition_failed(e):
                raise self._refuse(None) from None
            if not is_not_implemented(e):
                raise storage_error(self.where, e) from e
            self.conditional = False
            return
        log.warning("%s: took over a lock %s", self.where, current.describe())

    async def _acquire_by_read_back(self) -> None:
        current = await self.read()
        if current is not None and not self._may_take(current):
            raise self._refuse(current)
        try:
            await self._put()
        except CallError as e:
            raise storage_error(self.where, e) from e
        await asyncio.sleep(self.settle)
        again = await self.read()
        if again is None or again.token != self._token:
            raise self._refuse(again)
        self._etag = again.etag

    async def refresh(self) -> None:
        """The heartbeat: rewrite the lock if it is still ours, else mark it lost."""
        if self.conditional and self._etag:
            try:
                self._etag = await self._put(IfMatch=self._etag)
            except CallError as e:
                if is_precondition_failed(e):
                    self._lose("another run replaced it")
                    return
                raise storage_error(self.where, e) from e
        else:
            current = await self.read()
            if current is None or current.token != self._token:
                self._lose("another run replaced it" if current else "it was removed")
                return
            try:
                await self._put()
            except CallError as e:
                raise storage_error(self.where, e) from e
        self._refreshed = time.monotonic()

    def _lose(self, why: str) -> None:
        self.lost = f"the bucket lock {self.where} was lost ({why}): stopping"
        log.error("%s", self.lost)

    async def _beat(self) -> None:
        while self.lost is None:
            await asyncio.sleep(self.ttl / 4)
            try:
                await self.refresh()
            except Exception as e:  # whatever failed, the heartbeat must go on or stop writes
                if time.monotonic() - self._refreshed >= self.ttl:
                    self._lose(f"not refreshed for {self.ttl:.0f} s: {e}")
                else:
                    log.warning("%s: heartbeat failed, will retry: %s", self.where, e)

    async def release(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            # Waits for it to end; its CancelledError is its result, not raised here.
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        if not self.held:
            return
        self.held = False
        if self.lost is not None:
            return  # someone else's now
        try:
            current = await self.read()
            if current is not None and current.token == self._token:
                await self.client.delete_object(Bucket=self.bucket, Key=self.key)
        except (StorageError, *CallError) as e:
            # Best effort: a lock left behind is taken over by the next run here, or after
            # its ttl elsewhere; the run's own outcome matters more than this error.
            log.warning("%s: could not release the lock: %s", self.where, e)
