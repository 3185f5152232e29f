"""The bucket lock on a real S3 server: exclusion, release, takeover of an abandoned lock, the
fallback for stores without conditional writes, and a lost lock stopping every write."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import PurePosixPath

import pytest
from botocore.exceptions import ClientError

from bandersnatch_clone.errors import LockedError, StorageError
from bandersnatch_clone.storage.s3 import S3Storage
from bandersnatch_clone.storage.s3client import S3Client
from bandersnatch_clone.storage.s3lock import BucketLock
from tests.s3server import BUCKET, S3Server, fresh_prefix

HERE = "this-host:/srv/mirror"
ELSEWHERE = "other-host:/srv/mirror"


@pytest.fixture
async def client(s3_server: S3Server) -> AsyncIterator[S3Client]:
    async with s3_server.client() as client:
        yield client


@pytest.fixture
def key() -> str:
    return f"{fresh_prefix()}/.lock"


def make_lock(client: S3Client, key: str, owner: str, **kwargs: object) -> BucketLock:
    return BucketLock(client, BUCKET, key, owner=owner, settle=0.05, **kwargs)  # type: ignore[arg-type]


async def holder(client: S3Client, key: str) -> str | None:
    """The owner the lock object names, or None when there is none."""
    try:
        response = await client.get_object(Bucket=BUCKET, Key=key)
    except ClientError:
        return None
    body = response["Body"]
    doc = json.loads(await body.read())  # type: ignore[attr-defined]
    body.close()  # type: ignore[attr-defined]
    return str(doc["owner"])


async def plant(client: S3Client, key: str, owner: str, ttl: float) -> None:
    """A lock left by a run that is gone (its heartbeat stopped)."""
    body = json.dumps({"token": "dead", "owner": owner, "pid": 1, "ttl": ttl}).encode()
    await client.put_object(Bucket=BUCKET, Key=key, Body=body)


def not_implemented(operation: str) -> ClientError:
    error = {"Code": "NotImplemented", "Message": "A header you provided implies functionality"}
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 501}}, operation)


class NoConditionalWrites:
    """A client whose store answers 501 to If-None-Match / If-Match, as some stores do; and,
    optionally, another run's write landing right after each of ours."""

    def __init__(self, inner: S3Client, race_with: bytes | None = None) -> None:
        self.inner = inner
        self.race_with = race_with

    async def put_object(self, **kwargs: object) -> object:
        if "IfNoneMatch" in kwargs or "IfMatch" in kwargs:
            raise not_implemented("PutObject")
        response = await self.inner.put_object(**kwargs)
        if self.race_with is not None:
            await self.inner.put_object(
                Bucket=kwargs["Bucket"], Key=kwargs["Key"], Body=self.race_with
            )
        return response

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


# --- with conditional writes (SeaweedFS has them) --------------------------------------------


async def test_a_second_run_is_refused(client: S3Client, key: str) -> None:
    async with make_lock(client, key, HERE):
        with pytest.raises(LockedError, match=f"held by {HERE}"):
            await make_lock(client, key, ELSEWHERE).acquire()


async def test_of_two_racing_runs_exactly_one_wins(client: S3Client, key: str) -> None:
    locks = [make_lock(client, key, f"host-{i}:/srv/mirror") for i in range(4)]
    results = await asyncio.gather(*(lock.acquire() for lock in locks), return_exceptions=True)
    winners = [lock.owner for lock, r in zip(locks, results, strict=True) if r is None]
    losers = [r for r in results if isinstance(r, LockedError)]
    held_by = await holder(client, key)
    for lock in locks:
        await lock.release()
    assert (len(winners), len(losers), held_by) == (1, 3, winners[0])


async def test_release_lets_the_next_run_in(client: S3Client, key: str) -> None:
    async with make_lock(client, key, HERE):
        pass
    after_release = await holder(client, key)
    async with make_lock(client, key, ELSEWHERE):
        held_by = await holder(client, key)
    assert (after_release, held_by, await holder(client, key)) == (None, ELSEWHERE, None)


async def test_an_abandoned_lock_is_taken_over(client: S3Client, key: str) -> None:
    await plant(client, key, ELSEWHERE, ttl=0)  # its heartbeat stopped a ttl ago
    async with make_lock(client, key, HERE):
        assert await holder(client, key) == HERE


async def test_of_two_runs_taking_over_an_abandoned_lock_one_wins(
    client: S3Client, key: str
) -> None:
    await plant(client, key, ELSEWHERE, ttl=0)
    locks = [make_lock(client, key, f"host-{i}:/srv/mirror") for i in range(4)]
    results = await asyncio.gather(*(lock.acquire() for lock in locks), return_exceptions=True)
    winners = [lock.owner for lock, r in zip(locks, results, strict=True) if r is None]
    held_by = await holder(client, key)
    for lock in locks:
        await lock.release()
    assert (len(winners), held_by) == (1, winners[0])


async def test_a_live_lock_of_another_host_is_not_taken_over(client: S3Client, key: str) -> None:
    await plant(client, key, ELSEWHERE, ttl=300)
    with pytest.raises(LockedError, match=f"held by {ELSEWHERE}"):
        await make_lock(client, key, HERE).acquire()


async def test_a_killed_run_of_the_same_mirror_is_taken_over_at_once(
    client: S3Client, key: str
) -> None:
    # Same host and state directory: the local MirrorLock we hold proves that run is dead.
    await plant(client, key, HERE, ttl=300)
    async with make_lock(client, key, HERE):
        assert await holder(client, key) == HERE


async def test_a_lost_lock_stops_every_write(s3_server: S3Server) -> None:
    async with s3_server.storage() as storage:
        lock = storage.lock()
        async with lock:
            await plant(storage.client, lock.key, ELSEWHERE, ttl=300)  # taken over meanwhile
            await lock.refresh()  # the heartbeat notices
            with pytest.raises(StorageError, match=r"lock .* was lost"):
                await storage.write_bytes(PurePosixPath("web/simple/index.html"), b"x")
        # Never deletes a lock that is someone else's now.
        assert await holder(storage.client, lock.key) == ELSEWHERE


async def test_the_heartbeat_keeps_the_lock(client: S3Client, key: str) -> None:
    async with make_lock(client, key, HERE) as lock:
        before = (await lock.read()) or pytest.fail("no lock object")
        await lock.refresh()
        after = (await lock.read()) or pytest.fail("no lock object")
        assert (lock.lost, after.token, after.etag != before.etag) == (None, before.token, True)


async def test_storage_lock_is_the_prefixs_lock_object(s3_server: S3Server) -> None:
    async with s3_server.storage() as storage:
        key = storage.key(PurePosixPath(".lock"))
        async with storage.lock():
            held = await holder(storage.client, key)
        assert (held is not None, await holder(storage.client, key)) == (True, None)


# --- without conditional writes: write, settle, read back -----------------------------------


async def test_fallback_refuses_a_second_run(client: S3Client, key: str) -> None:
    plain = NoConditionalWrites(client)
    async with make_lock(plain, key, HERE) as first:  # type: ignore[arg-type]
        with pytest.raises(LockedError, match=f"held by {HERE}"):
            await make_lock(plain, key, ELSEWHERE).acquire()  # type: ignore[arg-type]
        assert first.conditional is False


async def test_fallback_loses_a_race_it_sees_on_read_back(client: S3Client, key: str) -> None:
    rival = json.dumps({"token": "rival", "owner": ELSEWHERE, "pid": 2, "ttl": 300}).encode()
    racing = NoConditionalWrites(client, race_with=rival)
    with pytest.raises(LockedError, match=f"held by {ELSEWHERE}"):
        await make_lock(racing, key, HERE).acquire()  # type: ignore[arg-type]


async def test_conditional_writes_off_uses_the_fallback(client: S3Client, key: str) -> None:
    async with make_lock(client, key, HERE, conditional=False):
        with pytest.raises(LockedError):
            await make_lock(client, key, ELSEWHERE, conditional=False).acquire()


async def test_s3_storage_refuses_writes_only_after_losing(s3_server: S3Server) -> None:
    async with s3_server.storage() as storage:
        assert isinstance(storage, S3Storage)
        assert await storage.write_bytes(PurePosixPath("web/simple/index.html"), b"x") is True
