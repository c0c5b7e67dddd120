"""The agent as the channels see it: get an engine ready for a call that is coming, and
converse with a caller once their channel is up. Channels know nothing else of the agent."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from app.agent import phrases
from app.agent.session import CallSession
from app.audio.formats import AudioFormat
from app.calllog.journal import CallJournal
from app.channels.contract import CallChannel, CallOutcome, Notice
from app.config import Settings
from app.engines.contract import Engine, EngineUnavailable
from app.engines.prewarm import PrewarmPool
from app.knowledge.retrieval import Retriever
from app.metrics import Metrics

log = logging.getLogger(__name__)

# After the engine could not be reached, calls go to voicemail for this long; then one more
# call tries it (and every call does again once one got through).
UNREACHABLE_SECONDS = 30.0


class Agent:
    def __init__(self, settings: Settings, metrics: Metrics,
                 open_engine: Callable[[AudioFormat], Awaitable[Engine]],
                 retriever: Callable[[], Retriever]) -> None:
        self._settings = settings
        self._metrics = metrics
        self._open_engine = open_engine
        self._retriever = retriever  # the knowledge base's, once it is open
        self._unreachable_at: float | None = None
        self.prewarm = PrewarmPool(self._open, settings.prewarm_ttl_seconds)
        self.connecting = 0  # conversations whose engine is being readied (see `converse`)

    def reachable(self) -> bool:
        """Whether the engine answered lately: when it did not, callers leave a voicemail."""
        if self._unreachable_at is None:
            return True
        if time.monotonic() - self._unreachable_at < UNREACHABLE_SECONDS:
            return False
        self._unreachable_at = None  # time to try again
        return True

    async def _open(self, channel_format: AudioFormat) -> Engine:
        try:
            engine = await self._open_engine(channel_format)
        except EngineUnavailable:
            self._reached(False)
            raise
        self._reached(True)
        return engine

    def _reached(self, reached: bool) -> None:
        """An engine opened (or reconnected mid-call), or could not: callers and pre-warming
        follow (`reachable`)."""
        self._unreachable_at = None if reached else time.monotonic()

    def expect(self, call_id: str, channel_format: AudioFormat) -> None:
        """A call is on its way, on a channel that plays `channel_format`: connect to the engine
        now, so the caller hears OCTI sooner."""
        self.prewarm.start(call_id, channel_format)

    def release(self, call_id: str) -> None:
        """The call's conversation is held elsewhere: close the engine readied for it."""
        self.prewarm.release(call_id)

    async def converse(self, channel: CallChannel, journal: CallJournal) -> CallOutcome:
        # Counted as connecting from the first step, then as active by the session's first one,
        # with no await between: a drain never sees the call nowhere and stops under it.
        self.connecting += 1
        try:
            engine = await self.prewarm.claim(channel.identity.call_id)
            if engine is None:
                engine = await self._open(channel.audio_format)
        except EngineUnavailable as exc:
            log.error("cannot reach the engine: %s", exc)
            self._metrics.engine_unavailable.inc()
            journal.event("upstream_failure", str(exc))
            await channel.show(Notice(phrases.UNAVAILABLE, "unavailable"))
            await channel.end(CallOutcome.ERROR)
            await journal.ended(CallOutcome.ERROR.value, [], turns=0, barge_ins=0)
            return CallOutcome.ERROR
        finally:
            self.connecting -= 1
        session = CallSession(channel, engine, self._settings, self._metrics, self._retriever(), journal,
                              engine_reached=self._reached)
        return await session.run()

    async def close(self) -> None:
        await self.prewarm.close()
