"""Which instance took each call's media stream, shared by every instance through Redis
(`app/expiring.py`; in memory without REDIS_URL, or while Redis is down).

Behind one URL a call's webhook and its stream may land on different instances. The instance
that takes the stream claims the call, so a second stream for it (a replayed stream token) is
refused by every instance. The instance that answered the webhook watches the calls it
admitted: when one's stream was claimed elsewhere, it lets go at once of what it held for it
(the pre-warmed engine, the place the call took in its capacity) instead of holding them until
they time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

from app.expiring import ExpiringValues

# How often an instance asks where the streams of the calls it admitted went: one Redis round
# trip for all of them. A pre-warmed engine held for another instance's stream costs that long.
WATCH_SECONDS = 0.5


class StreamClaims:
    def __init__(self, redis_url: str | None, *, ttl_seconds: int, taken_elsewhere: Callable[[str], None]) -> None:
        self.instance = secrets.token_hex(8)  # this process, as other instances see it
        self._claims = ExpiringValues(redis_url, prefix="octi-stream-claim", ttl_seconds=ttl_seconds)
        self._shared = bool(redis_url)
        self._ttl = ttl_seconds
        self._taken_elsewhere = taken_elsewhere
        self._watched: OrderedDict[str, float] = OrderedDict()  # call sid -> when admitted here
        self._watcher: asyncio.Task[None] | None = None

    def watch(self, call_sid: str) -> None:
        """This instance admitted the call: find out if its stream goes to another one."""
        if not self._shared:
            return
        self._watched[call_sid] = time.monotonic()
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name="stream-claims")

    def forget(self, call_sid: str) -> None:
        """The call ended without a stream: nothing left to find out."""
        self._watched.pop(call_sid, None)

    async def claim(self, call_sid: str) -> bool:
        """The call's stream is here: True when no instance had taken a stream for it."""
        self._watched.pop(call_sid, None)
        return await self._claims.put_new(call_sid, self.instance)

    async def _watch(self) -> None:
        while self._watched:
            await asyncio.sleep(WATCH_SECONDS)
            given_up = time.monotonic() - self._ttl  # the stream token has expired: no stream is coming
            while self._watched and next(iter(self._watched.values())) < given_up:
                self._watched.popitem(last=False)
            if not self._watched:
                return
            claimed = await self._claims.get_many(list(self._watched))
            for call_sid, instance in claimed.items():
                if instance != self.instance and self._watched.pop(call_sid, None) is not None:
                    self._taken_elsewhere(call_sid)

    async def redis_problem(self) -> str | None:
        return await self._claims.redis_problem()

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        self._claims.close()
