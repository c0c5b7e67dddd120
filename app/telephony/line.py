"""The phone line: what happens between Twilio's webhook, the media stream and the session.

One instance per process holds the shared pieces (signature checks, tokens, pre-warmed
connections, outcomes awaited by the <Connect> action URL, the knowledge base and its
retriever, the call-log writer, metrics). The FastAPI routes only translate HTTP into calls
on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime

from starlette.websockets import WebSocket

from app.agent.channel import CallOutcome
from app.agent.rag import Retriever
from app.agent.session import CallSession, realtime_session_update
from app.calllog.journal import CallJournal, caller_hash, caller_salt
from app.calllog.migrate import upgrade_database
from app.calllog.records import CallEvent
from app.calllog.recording import StereoRecorder
from app.calllog.store import CallLogStore
from app.calllog.writer import CallLogWriter
from app.config import Settings
from app.knowledge.seed import ensure_seeded
from app.knowledge.store import KnowledgeStore
from app.knowledge.stores import open_store
from app.knowledge.vocabulary import farm_vocabulary
from app.logs import current_call, mask_phone
from app.metrics import Metrics, watch_loop_lag
from app.realtime.connection import RealtimeConnection, RealtimeUnavailable
from app.realtime.models import KEYWORD_TRANSCRIPTION
from app.realtime.prewarm import PrewarmPool
from app.telephony import twiml
from app.telephony.security import SignatureChecker, StreamTokens, public_url, websocket_url
from app.telephony.twilio_channel import StreamRejected, TwilioChannel

log = logging.getLogger(__name__)

INCOMING_PATH = "/voice/incoming"
STREAM_PATH = "/voice/stream"
STATUS_PATH = "/voice/status"
STREAM_ENDED_PATH = "/voice/stream-ended"

START_TIMEOUT_SECONDS = 10.0
OUTCOME_TTL_SECONDS = 600.0
POLICY_VIOLATION = 1008
HEALTH_CHECK_SECONDS = 1.0


class PhoneLine:
    def __init__(self, settings: Settings, metrics: Metrics | None = None,
                 knowledge: KnowledgeStore | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.knowledge = knowledge
        self.knowledge_error = ""
        self.retriever = Retriever(None, budget_ms=settings.rag_timeout_ms, limit=settings.rag_top_k,
                                   metrics=self.metrics)
        self._seeding: asyncio.Task[int] | None = None
        self.calllog = CallLogWriter.from_settings(settings)
        self._reader: CallLogStore | None = None
        self._reader_lock = asyncio.Lock()
        self._caller_salt = b""
        self._lag_watch: asyncio.Task[None] | None = None
        self.signatures = SignatureChecker(settings)
        self.tokens = StreamTokens(settings)
        self.prewarm = PrewarmPool(self._open_realtime, settings.prewarm_ttl_seconds)
        self._outcomes: OrderedDict[str, tuple[CallOutcome, float]] = OrderedDict()
        # The knowledge base's farm words, for transcription models that take keywords.
        self.vocabulary: list[str] = []

    async def start(self) -> None:
        """Start the call-log writer and open the knowledge base (seeded in the background)."""
        secret = self.settings.caller_hash_salt
        self._caller_salt = await asyncio.to_thread(
            caller_salt, secret.get_secret_value() if secret else None, self.settings.data_dir)
        await self.calllog.start()
        self._lag_watch = asyncio.create_task(watch_loop_lag(self.metrics), name="loop-lag")
        if self.settings.rag_mode == "off":
            return
        if self.knowledge is None:
            try:
                self.knowledge = open_store(self.settings)
            except (ValueError, OSError) as exc:
                self.knowledge_error = str(exc)
                log.error("no knowledge base, calls go on without context: %s", exc)
                return
        self.retriever = Retriever(self.knowledge, budget_ms=self.settings.rag_timeout_ms,
                                   limit=self.settings.rag_top_k, metrics=self.metrics)
        self._seeding = asyncio.create_task(self._seed(self.knowledge), name="seed-knowledge")

    async def _seed(self, store: KnowledgeStore) -> int:
        try:
            added = await ensure_seeded(store)
        except Exception as exc:  # the line works without the sample pack
            self.knowledge_error = f"seeding the sample pack failed: {exc}"
            log.error("%s", self.knowledge_error)
            return 0
        await self._warm_up(store)
        return added

    async def _warm_up(self, store: KnowledgeStore) -> None:
        """Before the first call: load the query embedding model (a first search pays for it,
        far past the turn's hold), and read the vocabulary when transcription takes keywords."""
        try:
            await store.search("température de la couveuse", 1)
            if self.settings.openai_transcribe_model in KEYWORD_TRANSCRIPTION and self.settings.transcribe_keywords:
                texts = await store.chunk_texts()
                self.vocabulary = await asyncio.to_thread(farm_vocabulary, texts, self.settings.transcribe_keywords)
                log.info("transcription keywords: %d farm words from the knowledge base", len(self.vocabulary))
        except Exception as exc:  # calls work without either; retrieval reports its own failures
            log.warning("knowledge warm-up failed: %s", exc)

    async def knowledge_health(self) -> dict[str, object]:
        if self.settings.rag_mode == "off":
            return {"mode": "off"}
        if self.knowledge is None:
            return {"mode": self.settings.rag_mode, "ok": False, "detail": self.knowledge_error}
        try:
            health = await asyncio.wait_for(self.knowledge.health(), HEALTH_CHECK_SECONDS)
        except Exception as exc:
            return {"mode": self.settings.rag_mode, "ok": False, "detail": f"{type(exc).__name__}: {exc}"}
        return {"mode": self.settings.rag_mode, "backend": health.backend, "ok": health.ok,
                "vectors": health.vectors, "chunks": health.chunks,
                "detail": health.detail or self.knowledge_error,
                "seeding": self._seeding is not None and not self._seeding.done()}

    async def _open_realtime(self) -> RealtimeConnection:
        return await RealtimeConnection.open(self.settings, realtime_session_update(self.settings, self.vocabulary))

    # ------------------------------------------------------------------ HTTP webhooks

    def signed(self, path: str, params: Mapping[str, str], signature: str | None, query: str = "") -> bool:
        ok = self.signatures.valid(public_url(self.settings, path, query), params, signature)
        if not ok:
            self.metrics.counters["signature_refusals"] += 1
            log.warning("refused a request to %s: bad or missing X-Twilio-Signature", path)
            self._refusal(params.get("CallSid", ""), f"bad or missing X-Twilio-Signature on {path}")
        return ok

    def _refusal(self, call_sid: str, detail: str) -> None:
        """Refusals naming a call go to its log, so reviewers see forged or replayed requests."""
        if call_sid:
            self.calllog.submit(CallEvent(call_sid, datetime.now(UTC), "signature_refused", detail))

    def answer_call(self, form: Mapping[str, str]) -> str:
        """The TwiML answer to an incoming call (signature already checked)."""
        call_sid = form.get("CallSid", "")
        caller, called = form.get("From", ""), form.get("To", "")
        current_call.set(call_sid or "-")
        log.info("incoming call %s from %s to %s", call_sid, mask_phone(caller), mask_phone(called))
        if not self.settings.realtime_configured:
            log.error("answering with the unavailable message: OPENAI_API_KEY is not set")
            return twiml.unavailable()
        if not call_sid:
            return twiml.unavailable()
        self.prewarm.start(call_sid)
        return twiml.connect_stream(
            stream_url=websocket_url(self.settings, STREAM_PATH),
            status_url=public_url(self.settings, STATUS_PATH),
            action_url=public_url(self.settings, STREAM_ENDED_PATH),
            token=self.tokens.issue(call_sid),
            call_sid=call_sid,
            caller=caller,
            called=called,
        )

    def after_stream(self, form: Mapping[str, str]) -> str:
        """The <Connect> action: what the caller hears once our side closed the stream."""
        outcome = self._outcomes.pop(form.get("CallSid", ""), (None, 0.0))[0]
        return twiml.apology() if outcome == CallOutcome.ERROR else twiml.hangup()

    def stream_status(self, form: Mapping[str, str]) -> None:
        event, error = form.get("StreamEvent", ""), form.get("StreamError", "")
        if event == "stream-error":
            self.metrics.counters["stream_errors"] += 1
            if form.get("CallSid"):
                self.calllog.submit(CallEvent(form["CallSid"], datetime.now(UTC), "stream_error", error))
            log.error("Twilio reports a stream error for %s: %s", form.get("CallSid", ""), error)
        else:
            log.info("stream status for %s: %s", form.get("CallSid", ""), event or form.get("CallStatus", "?"))

    def _record_outcome(self, call_sid: str, outcome: CallOutcome) -> None:
        now = time.monotonic()
        self._outcomes[call_sid] = (outcome, now)
        while self._outcomes and next(iter(self._outcomes.values()))[1] < now - OUTCOME_TTL_SECONDS:
            self._outcomes.popitem(last=False)

    # ------------------------------------------------------------------ media stream

    async def serve_stream(self, websocket: WebSocket) -> None:
        """Validate, accept and run one Twilio media stream until the call ends."""
        signature = websocket.headers.get("x-twilio-signature")
        if not self.signatures.valid(websocket_url(self.settings, STREAM_PATH), {}, signature):
            self.metrics.counters["signature_refusals"] += 1
            log.warning("refused a media stream upgrade: bad or missing x-twilio-signature")
            await websocket.close(code=POLICY_VIOLATION)
            return
        await websocket.accept()
        try:
            start = await TwilioChannel.receive_start(
                websocket, timeout=START_TIMEOUT_SECONDS,
                max_message_bytes=self.settings.max_stream_message_bytes, metrics=self.metrics,
            )
        except StreamRejected as exc:
            log.warning("closing a media stream: %s", exc)
            await _close_quietly(websocket, POLICY_VIOLATION)
            return
        current_call.set(start.call_sid)
        if not self.tokens.check(start.call_sid, start.custom_parameters.get("token")):
            self.metrics.counters["token_refusals"] += 1
            log.warning("closing a media stream: invalid or expired stream token")
            self._refusal(start.call_sid, "media stream with an invalid or expired stream token")
            await _close_quietly(websocket, POLICY_VIOLATION)
            return
        channel = TwilioChannel(
            websocket, start, max_message_bytes=self.settings.max_stream_message_bytes,
            metrics=self.metrics, on_end=self._record_outcome,
        )
        journal = self._journal(channel)
        realtime = await self.prewarm.claim(start.call_sid)
        if realtime is None:
            try:
                realtime = await self._open_realtime()
            except RealtimeUnavailable as exc:
                log.error("cannot reach the realtime service: %s", exc)
                self.metrics.counters["realtime_unavailable"] += 1
                journal.event("upstream_failure", str(exc))
                await channel.end(CallOutcome.ERROR)
                await journal.ended(CallOutcome.ERROR.value, [], turns=0, barge_ins=0)
                return
        await CallSession(channel, realtime, self.settings, self.metrics, self.retriever, journal).run()

    def _journal(self, channel: TwilioChannel) -> CallJournal:
        """The call's journal, its start already recorded; with RECORD_CALLS, its recorder."""
        settings, identity = self.settings, channel.identity
        journal = CallJournal(
            identity.call_id, self.calllog.submit, model=settings.openai_realtime_model,
            prices=settings.model_prices, transcription_model=settings.openai_transcribe_model,
            recorder=StereoRecorder(channel.audio_format) if settings.record_calls else None,
            recording_path=settings.data_dir / "recordings" / f"{identity.call_id}.wav",
        )
        journal.started(
            stream_sid=channel.stream_sid, channel=identity.channel, caller_masked=mask_phone(identity.caller),
            caller_hash=caller_hash(identity.caller, self._caller_salt),
            caller_number=identity.caller if settings.store_caller_number else None,
            called=identity.called, codec=settings.audio_codec,
            model=settings.openai_realtime_model, rag_mode=settings.rag_mode,
        )
        return journal

    async def call_log_reader(self) -> CallLogStore | None:
        """The call log for the review pages, opened on first use (None while the database is away)."""
        async with self._reader_lock:
            if self._reader is None:
                url = self.settings.effective_database_url
                try:
                    await upgrade_database(url)
                    self._reader = await CallLogStore.open(url, prices=self.settings.model_prices)
                except Exception as exc:  # the review pages say the log is unavailable
                    log.error("call log unavailable for review: %s", exc)
            return self._reader

    @property
    def active_calls(self) -> int:
        return self.metrics.active_calls

    async def close(self) -> None:
        if self._lag_watch is not None:
            self._lag_watch.cancel()
            await asyncio.gather(self._lag_watch, return_exceptions=True)
        await self.prewarm.close()
        if self._seeding is not None:
            self._seeding.cancel()
            await asyncio.gather(self._seeding, return_exceptions=True)
        if self.knowledge is not None:
            await self.knowledge.close()
        await self.calllog.close()
        if self._reader is not None:
            await self._reader.close()


async def _close_quietly(websocket: WebSocket, code: int) -> None:
    try:
        await websocket.close(code=code)
    except (RuntimeError, OSError):
        pass
