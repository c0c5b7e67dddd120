"""Open the engine's connection while the channel is still setting up (Twilio fetching our TwiML).

The webhook starts an engine keyed by call id; the media stream claims it moments later. An
engine whose stream went to another instance is released as soon as that is known; one nobody
claims (the caller hung up) is closed after a TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from app.audio.formats import AudioFormat
from app.engines.contract import Engine, EngineUnavailable

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    task: asyncio.Task[Engine]
    expiry: asyncio.TimerHandle


class PrewarmPool:
    def __init__(self, opener: Callable[[AudioFormat], Awaitable[Engine]], ttl_seconds: float) -> None:
        self._opener = opener
        self._ttl = ttl_seconds
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def start(self, call_sid: str, channel_format: AudioFormat) -> None:
        if call_sid in self._pending:
            return
        task = asyncio.create_task(self._opener(channel_format), name=f"prewarm-{call_sid}")
        task.add_done_callback(_swallow_failure)
        expiry = asyncio.get_running_loop().call_later(self._ttl, self._expire, call_sid)
        self._pending[call_sid] = _Pending(task, expiry)

    async def claim(self, call_sid: str) -> Engine | None:
        """The pre-warmed engine for this call if it is (or becomes) usable, else None."""
        pending = self._pending.pop(call_sid, None)
        if pending is None:
            return None
        pending.expiry.cancel()
        try:
            engine = await pending.task
        except (EngineUnavailable, asyncio.CancelledError):
            return None
        if not engine.is_open:
            await engine.close()
            return None
        return engine

    def release(self, call_sid: str, why: str = "its stream went to another instance") -> None:
        """Close the engine readied for this call: no stream will claim it here."""
        pending = self._pending.pop(call_sid, None)
        if pending is not None:
            pending.expiry.cancel()
            log.info("closing a pre-warmed engine: %s", why)
            asyncio.create_task(_discard(pending.task))

    def _expire(self, call_sid: str) -> None:
        self.release(call_sid, "unclaimed")

    async def close(self) -> None:
        pending, self._pending = list(self._pending.values()), {}
        for entry in pending:
            entry.expiry.cancel()
        await asyncio.gather(*(_discard(entry.task) for entry in pending))


async def _discard(task: asyncio.Task[Engine]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        engine = await task
        await engine.close()


def _swallow_failure(task: asyncio.Task[Engine]) -> None:
    # The failure is reported when the stream claims it; avoid "exception never retrieved".
    if not task.cancelled() and task.exception() is not None:
        log.warning("pre-warming the engine failed: %s", task.exception())
