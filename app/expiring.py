"""Short-lived values that span requests (what a call's stream left for its next webhook): in
Redis when REDIS_URL is set, so that any instance reads what another wrote, in memory
otherwise. Redis being unreachable never fails a call: values go to memory (with a warning)
and Redis is tried again REDIS_RETRY_SECONDS later."""

from __future__ import annotations

import time
from collections import OrderedDict

import coredis
from coredis.exceptions import RedisError

from app.ratelimit import REDIS_TIMEOUT_SECONDS, RedisOutages


class ExpiringValues:
    def __init__(self, redis_url: str | None, *, prefix: str, ttl_seconds: int) -> None:
        self._prefix = prefix
        self._ttl = ttl_seconds
        self._memory: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._redis: coredis.Redis[str] | None = None
        self._outages: RedisOutages | None = None
        if redis_url:
            self._redis = coredis.Redis.from_url(redis_url, decode_responses=True,
                                                 connect_timeout=REDIS_TIMEOUT_SECONDS,
                                                 stream_timeout=REDIS_TIMEOUT_SECONDS)
            self._outages = RedisOutages(redis_url, f"{prefix} values")

    async def put(self, key: str, value: str) -> None:
        if self._redis_usable():
            try:
                await self._redis.set(f"{self._prefix}:{key}", value, ex=self._ttl)  # type: ignore[union-attr]
                return
            except (RedisError, OSError, TimeoutError) as error:
                self._redis_failed(error)
        now = time.monotonic()
        self._memory[key] = (value, now)
        while self._memory and next(iter(self._memory.values()))[1] < now - self._ttl:
            self._memory.popitem(last=False)

    async def pop(self, key: str) -> str | None:
        """The value (once: it is gone afterwards), or None."""
        if self._redis_usable():
            try:
                value = await self._redis.getdel(f"{self._prefix}:{key}")  # type: ignore[union-attr]
                if value is not None:
                    return value
            except (RedisError, OSError, TimeoutError) as error:
                self._redis_failed(error)
        value, at = self._memory.pop(key, (None, 0.0))
        return value if value is not None and time.monotonic() - at < self._ttl else None

    def close(self) -> None:
        """Close the Redis connections (at shutdown)."""
        if self._redis is not None:
            self._redis.connection_pool.disconnect()

    def _redis_usable(self) -> bool:
        return self._outages is not None and self._outages.usable()

    def _redis_failed(self, error: BaseException) -> None:
        if self._outages is not None:
            self._outages.failed(type(error).__name__)
