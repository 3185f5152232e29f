"""Retrying upstream requests: which failures are transient, and backoff with full jitter."""

from __future__ import annotations

import asyncio
import logging
import random as _random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TypeVar

import aiohttp

from bandersnatch_clone.errors import StaleUpstream, UpstreamError, UpstreamUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Statuses worth asking again for: timeouts, rate limits, and every 5xx.
RETRY_STATUSES = frozenset({408, 429})
# 2 ** 62 seconds is already far past any max_delay; a larger exponent would overflow a float.
_MAX_EXPONENT = 62


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently one request is retried. `sleep`, `random` and `clock` are seams
    for tests: inject a `sleep` that records its delays instead of patching `asyncio.sleep`."""

    #: Tries in all, the first one included (1 = never retry).
    attempts: int = 5
    #: Backoff before the first retry; doubles for each further one, up to `max_delay`.
    base_delay: float = 1.0
    max_delay: float = 60.0
    #: Full jitter (AWS architecture blog): sleep a uniform random part of the backoff, so many
    #: workers that failed together do not come back together.
    jitter: bool = True
    #: Cap on a server's Retry-After, so a hostile or confused upstream cannot park the mirror.
    max_retry_after: float = 300.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)
    random: Callable[[], float] = field(default=_random.random, compare=False)
    clock: Callable[[], float] = field(default=time.time, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("delays must not be negative")

    def backoff(self, failures: int) -> float:
        """Delay after `failures` failed attempts (1-based) when the server gave no Retry-After."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(failures - 1, _MAX_EXPONENT))
        return ceiling * self.random() if self.jitter else ceiling

    def delay(self, failures: int, retry_after: float | None) -> float:
        """The server's Retry-After wins (capped); otherwise exponential backoff."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return self.backoff(failures)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """RFC 9110 Retry-After: delay-seconds or an HTTP-date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110: HTTP-dates are always GMT
        return None
    return max(when.timestamp() - now, 0.0)


class Retry(Exception):
    """One attempt failed in a way that a later attempt may not: raised inside an attempt only."""

    def __init__(self, problem: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(problem)
        self.problem = problem
        self.status = status
        self.retry_after = retry_after

    def give_up(self, url: str, attempts: int) -> UpstreamError:
        """The error to raise once the attempts are spent."""
        return UpstreamUnavailable(url, f"{self.problem} (after {attempts} attempts)", self.status)


class StaleRetry(Retry):
    """A response older than the serial we were promised (a CDN lagging behind)."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"stale serial {got}, expected at least {expected}")
        self.expected = expected
        self.got = got

    def give_up(self, url: str, attempts: int) -> UpstreamError:
        return StaleUpstream(url, self.expected, self.got)


@contextmanager
def translated(url: str) -> Iterator[None]:
    """The one place aiohttp's errors become ours: transient ones `Retry`, the rest final."""
    try:
        yield
    except aiohttp.ClientSSLError as e:  # a certificate problem does not heal by itself
        raise UpstreamUnavailable(url, f"{type(e).__name__}: {e}") from e
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as e:
        raise Retry(f"{type(e).__name__}: {e}".rstrip(": ")) from e
    except aiohttp.ClientError as e:
        raise UpstreamUnavailable(url, f"{type(e).__name__}: {e}") from e


def check_status(
    resp: aiohttp.ClientResponse, url: str, now: float, not_found: UpstreamError | None
) -> None:
    """200 passes; 404/410 raise `not_found` when given; 408, 429 and 5xx are retried (with
    their Retry-After); any other status is final."""
    status = resp.status
    if status == 200:
        return
    if status in (404, 410) and not_found is not None:
        raise not_found
    if status in RETRY_STATUSES or status >= 500:
        raise Retry(
            f"HTTP {status}", status, parse_retry_after(resp.headers.get("Retry-After"), now)
        )
    raise UpstreamUnavailable(url, f"HTTP {status} {resp.reason or ''}".rstrip(), status)


def check_complete(resp: aiohttp.ClientResponse, received: int, decoded: bool) -> None:
    """A body shorter than its Content-Length is retried. aiohttp notices most of these itself;
    with a Content-Encoding the length counts encoded bytes, so a decoded body is not compared."""
    expected = resp.content_length
    encoded = decoded and resp.headers.get("Content-Encoding", "identity") != "identity"
    if expected is not None and received < expected and not encoded:
        raise Retry(f"truncated body: {received} of {expected} bytes")


async def retrying(policy: RetryPolicy, url: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run `attempt` until it returns, retrying on `Retry`; other errors go straight through."""
    failures = 0
    while True:
        try:
            return await attempt()
        except Retry as e:
            failures += 1
            if failures >= policy.attempts:
                raise e.give_up(url, failures) from (e.__cause__ or e)
            delay = policy.delay(failures, e.retry_after)
            log.info(
                "%s: %s; retry %d/%d in %.1fs",
                url,
                e.problem,
                failures,
                policy.attempts - 1,
                delay,
            )
            await policy.sleep(delay)
