"""Short-lived values that span requests (what a call's stream left for its next webhook, which
instance took a call's stream): in Redis when REDIS_URL is set, so that any instance reads what
another wrote, in memory otherwise. Redis being unreachable never fails a call: values go to
this instance's memory (with a warning) and Redis is tried again REDIS_RETRY_SECONDS later."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import coredis
from coredis.exceptions import RedisError

from app.ratelimit import REDIS_TIMEOUT_SECONDS, RedisOutages

T = TypeVar("T")


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
            self._outages = RedisOutages.of(redis_url)

    async def put(self, key: str, value: str) -> None:
        stored = await self._in_redis(lambda redis: redis.set(self._key(key), value, ex=self._ttl))
        if stored is None:
            self._remember(key, value)

    async def put_new(self, key: str, value: str) -> bool:
        """Store `value` unless `key` holds one already; True when this call stored it."""
        stored = await self._in_redis(
            lambda redis: redis.set(self._key(key), value, ex=self._ttl, condition=coredis.PureToken.NX))
        if stored is not None:
            return stored
        if self._recalled(key) is not None:
            return False
        self._remember(key, value)
        return True

    async def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        """The values of those of `keys` that hold one (they stay)."""
        values = await self._in_redis(lambda redis: redis.mget([self._key(key) for key in keys]))
        if values is None:
            values = [self._recalled(key) for key in keys]
        return {key: value for key, value in zip(keys, values, strict=True) if value is not None}

    async def pop(self, key: str) -> str | None:
        """The value (once: it is gone afterwards), or None."""
        value = await self._in_redis(lambda redis: redis.getdel(self._key(key)))
        if value is not None:
            return value
        recalled = self._recalled(key)
        self._memory.pop(key, None)
        return recalled

    async def redis_problem(self) -> str | None:
        """Why Redis cannot be used now (asking it when it may be), or None when it answers or
        is not configured."""
        await self._in_redis(lambda redis: redis.ping())
        return self._outages.problem if self._outages is not None else None

    def close(self) -> None:
        """Close the Redis connections (at shutdown)."""
        if self._redis is not None:
            self._redis.connection_pool.disconnect()

    def _key(self, key: str) -> str:
        return f"{self._prefix}:{key}"

    async def _in_redis(self, command: Callable[[coredis.Redis[str]], Awaitable[T]]) -> T | None:
        """The command's answer; None when Redis is not configured, left alone, or failing."""
        if self._redis is None or self._outages is None or not self._outages.usable():
            return None
        try:
            answer = await command(self._redis)
        except (RedisError, OSError, TimeoutError) as error:
            self._outages.failed(type(error).__name__, f"{self._prefix} values")
            return None
        self._outages.succeeded()
        return answer

    def _remember(self, key: str, value: str) -> None:
        now = time.monotonic()
        self._memory[key] = (value, now)
        self._memory.move_to_end(key)
        while self._memory and next(iter(self._memory.values()))[1] < now - self._ttl:
            self._memory.popitem(last=False)

    def _recalled(self, key: str) -> str | None:
        value, at = self._memory.get(key, (None, 0.0))
        return value if value is not None and time.monotonic() - at < self._ttl else None
