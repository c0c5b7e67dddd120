"""Short-lived values that span requests (what a call's stream left for its next webhook): in
Redis when REDIS_URL is set, so that any instance reads what another wrote, in memory
otherwise. Redis being unreachable never fails a call: values go to memory (with a warning)
and Redis is tried again REDIS_RETRY_SECONDS later."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from urllib.parse import urlsplit

import coredis
from coredis.exceptions import RedisError

from app.ratelimit import REDIS_RETRY_SECONDS, REDIS_TIMEOUT_SECONDS

log = logging.getLogger(__name__)


class ExpiringValues:
    def __init__(self, redis_url: str | None, *, prefix: str, ttl_seconds: int) -> None:
        self._prefix = prefix
        self._ttl = ttl_seconds
        self._memory: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._redis: coredis.Redis[str] | None = None
        self._redis_where = ""
        if redis_url:
            self._redis = coredis.Redis.from_url(redis_url, decode_responses=True,
                                                 connect_timeout=REDIS_TIMEOUT_SECONDS,
                                                 stream_timeout=REDIS_TIMEOUT_SECONDS)
            self._redis_where = urlsplit(redis_url).hostname or "socket"  # never the credentials
        self._redis_retry_at = 0.0

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
        return self._redis is not None and time.monotonic() >= self._redis_retry_at

    def _redis_failed(self, error: BaseException) -> None:
        self._redis_retry_at = time.monotonic() + REDIS_RETRY_SECONDS
        log.warning("Redis at %s is unreachable (%s); %s values are kept in memory for %d s",
                    self._redis_where, type(error).__name__, self._prefix, REDIS_RETRY_SECONDS)
