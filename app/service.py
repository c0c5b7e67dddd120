"""The composition root: every shared piece of the running service, built once and wired here.

The call log's writer and journals, the knowledge base, the engine the agent talks through,
the agent, the channels callers come in by, and the review pages' reader. Nothing else in
the application builds these; `app.web` only maps HTTP onto them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from app.accounts.tokens import AccessTokens
from app.accounts.users import WebUsers
from app.agent.agent import Agent
from app.agent.tools import session_instructions, session_tools
from app.audio.formats import AudioFormat
from app.calllog.journals import CallJournals
from app.calllog.reader import CallLogReader
from app.calllog.writer import CallLogWriter
from app.channels.admission import Admission
from app.channels.browser.line import BrowserLine
from app.channels.twilio.line import TwilioLine, stream_url
from app.channels.twilio.rest import TwilioRest
from app.channels.twilio.stream_listener import StreamListener
from app.config import Settings
from app.engines.contract import Engine
from app.engines.gpt_live.engine import GptLiveEngine
from app.engines.openai_realtime.engine import RealtimeEngine, RealtimeOptions
from app.engines.openai_realtime.models import KEYWORD_TRANSCRIPTION
from app.knowledge.base import KnowledgeBase
from app.metrics import Metrics, watch_loop_lag
from app.model_catalog import load_installed_catalog, model_notices

log = logging.getLogger(__name__)

# `/health` names the service as the seed backend's does ("service" beside "status" and "timestamp").
SERVICE_NAME = "octi-phone-line"


def engine_options(settings: Settings, keywords: Sequence[str] = (),
                   channel_format: AudioFormat | None = None) -> RealtimeOptions:
    """The engine as the agent's RAG mode needs it: with injection we ask for each answer; in
    tool mode the model searches when it wants. While interruptions are judged
    (BARGE_IN_MIN_MS), we ask for every answer: the service would answer a noise. The call
    tools are always there; answers come in the channel's format when the service has it."""
    return RealtimeOptions(client_turns=settings.rag_mode == "inject" or settings.barge_in_min_ms > 0,
                           tools=session_tools(settings), instructions=session_instructions(settings),
                           keywords=keywords, channel_format=channel_format)


class Service:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.calllog = CallLogWriter.from_settings(settings)
        self.journals = CallJournals(settings, self.calllog.submit)
        takes_keywords = settings.openai_transcribe_model in KEYWORD_TRANSCRIPTION
        self.knowledge = KnowledgeBase(settings, self.metrics,
                                       vocabulary_size=settings.transcribe_keywords if takes_keywords else 0)
        self.agent = Agent(settings, self.metrics, self.open_engine, lambda: self.knowledge.retriever)
        self.admission = Admission(settings, self.metrics, self.agent)
        self.twilio_rest = TwilioRest(settings)
        self.twilio = TwilioLine(settings, self.metrics, agent=self.agent, journals=self.journals,
                                 submit=self.calllog.submit, rest=self.twilio_rest, admission=self.admission)
        self.browser = BrowserLine(settings, self.metrics, agent=self.agent, journals=self.journals,
                                   submit=self.calllog.submit, admission=self.admission,
                                   users=WebUsers(settings.effective_database_url),
                                   tokens=AccessTokens.from_settings(settings))
        self.call_log_reader = CallLogReader(settings)
        self._lag_watch: asyncio.Task[None] | None = None
        self._stream_listener: StreamListener | None = None

    @property
    def draining(self) -> bool:
        return self.twilio.draining

    @property
    def calls_held(self) -> int:
        """What a drain waits for: calls in conversation or admitted and connecting, and calls
        still owed a webhook here (a voicemail being recorded, a transfer ringing) unless other
        instances share the public URL to take it (DRAIN_REDIRECT)."""
        awaited = 0 if self.settings.drain_redirect else self.twilio.awaited.count()
        return self.admission.calls_held() + awaited

    def begin_drain(self) -> None:
        """No new calls from now on (`/ready` says so); the ones under way go on."""
        log.warning("draining: %d calls under way, no new ones", self.metrics.active_calls)
        self.twilio.draining = self.browser.draining = True

    async def open_engine(self, channel_format: AudioFormat) -> Engine:
        """An engine for a call whose channel plays `channel_format`."""
        if self.settings.engine == "gpt-live":
            return await GptLiveEngine.open(self.settings)
        options = engine_options(self.settings, self.knowledge.vocabulary, channel_format)
        return await RealtimeEngine.open(self.settings, options)

    async def start(self) -> None:
        catalog = await load_installed_catalog()
        if not catalog.available:
            log.warning("could not check the configured models against the openai package: %s",
                        "; ".join(catalog.errors))
        for notice in model_notices(self.settings, catalog=catalog):
            log.warning("%s", notice.text)
        await self.journals.start()
        await self.calllog.start()
        self._lag_watch = asyncio.create_task(watch_loop_lag(self.metrics), name="loop-lag")
        await self.knowledge.start()
        if self.settings.stream_port:
            if self.settings.stream_port == self.settings.port:
                raise RuntimeError(f"STREAM_PORT must be another port than PORT ({self.settings.port})")
            self._stream_listener = await StreamListener.open(self.twilio, self.settings.host,
                                                              self.settings.stream_port)

    async def close(self) -> None:
        if self._stream_listener is not None:
            await self._stream_listener.close()
        if self._lag_watch is not None:
            self._lag_watch.cancel()
            await asyncio.gather(self._lag_watch, return_exceptions=True)
        await self.agent.close()
        self.browser.close()
        await self.twilio.close()
        await self.twilio_rest.close()
        await self.browser.users.close()
        await self.knowledge.close()
        await self.calllog.close()
        await self.call_log_reader.close()

    async def health(self) -> dict[str, Any]:
        settings = self.settings
        problems = []
        knowledge = await self.knowledge.health()
        if knowledge.get("ok") is False:
            problems.append(f"knowledge base unavailable, answers go without context: {knowledge.get('detail')}")
        elif knowledge.get("vectors") is False:
            problems.append(f"knowledge base on keywords only: {knowledge.get('detail')}")
        if not settings.realtime_configured:
            problems.append("OPENAI_API_KEY is not set: calls go to voicemail")
        if self.draining:
            problems.append("draining: no new calls, the ones under way finish")
        redis_problem = await self.twilio.redis_problem()
        if redis_problem is not None:
            problems.append(redis_problem)
        call_log = self.calllog.status()
        if call_log["database"] == "down":
            problems.append(f"call-log database down, records wait in the spool: {call_log['last_error']}")
        if call_log["lost"]:
            problems.append(f"{call_log['lost']} call-log records could be neither stored nor spooled")
        if self.twilio.signatures.refuses_everything:
            problems.append("TWILIO_AUTH_TOKEN is not set and the server is not bound to loopback: "
                            "every Twilio request is refused")
        catalog = await load_installed_catalog()
        notices = model_notices(settings, catalog=catalog)
        problems.extend(notice.text for notice in notices)
        return {
            "status": "degraded" if problems else "ok",
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "service": SERVICE_NAME,
            "problems": problems,
            "realtime": {"configured": settings.realtime_configured, "engine": settings.engine,
                         "url": settings.gpt_live_url if settings.engine == "gpt-live" else settings.openai_realtime_url,
                         "model": settings.speech_model},
            "models": {"realtime": settings.speech_model,
                       "transcription": settings.openai_transcribe_model,
                       "checked_against": catalog.source if catalog.available else None,
                       "deprecated": [notice.to_dict() for notice in notices]},
            # Where Twilio is told to open media streams: this server, or its own listener (STREAM_PORT).
            "twilio": {"signatures_enforced": self.twilio.signatures.enforced, "stream_url": stream_url(settings)},
            # What instances share (stream claims, call outcomes, rate limits): Redis, unless down.
            "redis": {"configured": bool(settings.redis_url),
                      "ok": redis_problem is None if settings.redis_url else None},
            "knowledge": knowledge,
            "call_log": call_log,
            "audio_codec": settings.audio_codec,
            "active_calls": self.metrics.active_calls,
        }
