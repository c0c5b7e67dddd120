"""Counting things per subject in a moving window, with the `limits` library.

A subject with `limit` hits in the last `window_seconds` is refused until the oldest of them
leaves that window. The count lives in memory, or in Redis when REDIS_URL is set, so that
every worker of the service shares it. Redis being unreachable never locks anyone out: the
count goes to memory (with a warning) and Redis is tried again REDIS_RETRY_SECONDS later.

Used for failed review sign-ins per client address and browser conversations per user.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import ClassVar, TypeVar
from urllib.parse import urlsplit

import coredis
from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

log = logging.getLogger(__name__)

REDIS_RETRY_SECONDS = 30.0
# A sign-in waits at most this long for Redis before counting in memory.
REDIS_TIMEOUT_SECONDS = 1.0
REDIS_SCHEMES = {"redis": "async+redis", "rediss": "async+rediss", "unix": "async+redis+unix"}

T = TypeVar("T")


def _async_storage_uri(redis_url: str) -> str:
    """REDIS_URL (redis://, rediss:// or unix://) as the `limits` async storage URI."""
    scheme, _, rest = redis_url.partition("://")
    if not rest or scheme not in REDIS_SCHEMES:
        raise ValueError("REDIS_URL must be a redis://, rediss:// or unix:// URL")
    return f"{REDIS_SCHEMES[scheme]}://{rest}"


class RedisOutages:
    """Whether Redis may be tried: after a failure it is left alone for REDIS_RETRY_SECONDS, and
    what it held goes to memory meanwhile (each instance then keeps its own), with a warning.

    One per Redis URL in a process (`of`), shared by everything that keeps state there: once one
    finds Redis down the others leave it alone too, and `/health` reports the outage until a
    request to Redis succeeds again."""

    _by_url: ClassVar[dict[str, RedisOutages]] = {}

    def __init__(self, redis_url: str) -> None:
        self._where = urlsplit(redis_url).hostname or "socket"  # for the logs, never the credentials
        self._retry_at = 0.0
        self._failure: str | None = None  # why the last request failed, until one succeeds

    @classmethod
    def of(cls, redis_url: str) -> RedisOutages:
        return cls._by_url.setdefault(redis_url, cls(redis_url))

    def usable(self) -> bool:
        return time.monotonic() >= self._retry_at

    def failed(self, error: str, kept: str) -> None:
        self._retry_at = time.monotonic() + REDIS_RETRY_SECONDS
        self._failure = error
        log.warning("Redis at %s is unreachable (%s); %s are kept in this instance's memory for %d s",
                    self._where, error, kept, REDIS_RETRY_SECONDS)

    def succeeded(self) -> None:
        if self._failure is not None:
            self._failure = None
            log.info("Redis at %s answers again: state is shared again", self._where)

    @property
    def problem(self) -> str | None:
        """What `/health` says while Redis is down, else None."""
        if self._failure is None:
            return None
        return (f"Redis at {self._where} is unreachable ({self._failure}): rate limits, stream claims and "
                "call outcomes are kept per instance; calls are still taken")


class MovingWindowLimit:
    """At most `limit` hits per subject in a moving window, in Redis when given a URL, else in memory."""

    def __init__(self, redis_url: str | None, *, limit: int, window_seconds: int, key: str, counted: str) -> None:
        self._rule = RateLimitItemPerSecond(limit, window_seconds)
        self._key = key
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._redis: MovingWindowRateLimiter | None = None
        self._redis_pool: coredis.ConnectionPool | None = None
        self._outages: RedisOutages | None = None
        if redis_url:
            storage_uri = _async_storage_uri(redis_url)
            # Our own pool, so that close() can end its connections.
            self._redis_pool = coredis.ConnectionPool.from_url(redis_url, connect_timeout=REDIS_TIMEOUT_SECONDS,
                                                               stream_timeout=REDIS_TIMEOUT_SECONDS)
            storage = storage_from_string(storage_uri, wrap_exceptions=True, connection_pool=self._redis_pool)
            self._redis = MovingWindowRateLimiter(storage)
            self._outages = RedisOutages.of(redis_url)
        self._counted = counted

    async def _run(self, operation: Callable[[MovingWindowRateLimiter], Awaitable[T]]) -> T:
        if self._redis is not None and self._outages is not None and self._outages.usable():
            try:
                result = await operation(self._redis)
            except StorageError as error:
                self._outages.failed(type(error.storage_error).__name__, f"counts of {self._counted}")
            else:
                self._outages.succeeded()
                return result
        return await operation(self._memory)

    async def retry_after(self, subject: str) -> int | None:
        """Seconds until `subject` may be counted again, or None when it may now."""
        stats = await self._run(lambda limiter: limiter.get_window_stats(self._rule, self._key, subject))
        if stats.remaining > 0:
            return None
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def hit(self, subject: str) -> bool:
        """Count one for `subject`; False (and nothing counted) when it is at its limit."""
        return await self._run(lambda limiter: limiter.hit(self._rule, self._key, subject))

    async def clear(self, subject: str) -> None:
        await self._run(lambda limiter: limiter.clear(self._rule, self._key, subject))

    def close(self) -> None:
        """Close the Redis connections (at shutdown)."""
        if self._redis_pool is not None:
            self._redis_pool.disconnect()
