"""A call outlives its engine session: a dropped connection is reconnected, and a session
nearing the service's cap is renewed, both with the conversation restored.

When the engine's events end mid-call (the socket dropped, or a fatal error such as
`session_expired` closed it), OCTI falls silent where the caller stopped hearing it and plays a
recorded « Un instant. » at once, while the bridge opens a fresh session (up to
RECONNECT_ATTEMPTS tries, backing off) and gives it the conversation: the turns as text, the
answer under way cut to what was heard, and the passages of a question not yet answered,
which the model is asked again. The caller's audio meanwhile is kept (KEPT_AUDIO_SECONDS)
and sent once the session is back, with the start of a question they were asking when the
connection dropped: it is answered as if nothing happened. Tool results wait for the new
session too: the old one is gone, and a model that takes its own turns answers from them.

A question is unanswered until OCTI's answer to it was heard whole; when a tool works on it,
only what OCTI says once the result came answers it (not what it said meanwhile, such as
GPT-Live's acknowledgement while we search). A model that takes its own turns is not asked
again: a tool result that waited brings it the answer, else the question's passages do
(searched again if it had none), with the request to say it.

Before the service ends the session (at the `expires_at` it announced, or at
REALTIME_SESSION_MAX_MINUTES if that comes first) the session is renewed the same way at a
quiet moment between turns, without a word to the caller.

A fresh conversation the caller asks for (a reset) is a new session with nothing of the old
one. When it cannot be opened, the call goes on in the session it had (a model failure in the
call log); were that one gone too, the reconnection above takes over.
"""

from __future__ import annotations

import asyncio
import logging
import wave
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from time import perf_counter

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from app.agent.barge_in import BargeInJudge
from app.agent.rag import knowledge_context
from app.agent.speaker import Speaker
from app.agent.state import CallState, Turn
from app.agent.tools import ToolRunner
from app.agent.turn_log import log_caller_turn
from app.agent.turns import KnowledgeTurns, answer_typed
from app.audio.convert import make_converter
from app.audio.formats import REALTIME_PCM16, AudioFormat
from app.calllog.journal import CallJournal
from app.config import Settings
from app.engines.contract import Conversation, Engine, EngineUnavailable, Exchange
from app.knowledge.retrieval import Retriever
from app.metrics import Metrics

log = logging.getLogger(__name__)

# The first try to reconnect goes at once; then each waits longer (0.25, 0.75, 2.25 s), up to the ceiling.
RECONNECT_BACKOFF_SECONDS = 0.25
RECONNECT_BACKOFF_CEILING_SECONDS = 3.0
# The caller's latest audio kept for a new session: what they said during the outage, and
# the start of the question the connection dropped in.
KEPT_AUDIO_SECONDS = 5.0
# Renew the session this long before the cap (a quarter of it, for short caps).
RECYCLE_LEAD_SECONDS = 300.0
QUIET_CHECK_SECONDS = 0.2
# A new session's announced end is looked for every second during its first ten (a service
# that announces none has the configured cap).
ANNOUNCEMENT_CHECK_SECONDS = 1.0
ANNOUNCEMENT_WAIT_SECONDS = 10.0
# « Un instant. » by espeak-ng (voice fr, 160 wpm, pitch 40), PCM16 24 kHz mono, silences trimmed.
FILLER_WAV = Path(__file__).parent / "prompts" / "un_instant.wav"


def _read_filler() -> bytes:
    with wave.open(str(FILLER_WAV)) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (REALTIME_PCM16.rate, 2, 1)
        return wav.readframes(wav.getnframes())


# Read with the module rather than on the first drop: no file read on the event loop mid-call.
_FILLER_PCM = _read_filler()


@cache
def filler(caller_format: AudioFormat) -> bytes:
    """The recorded « Un instant. » in the caller's format (converted once per process and format)."""
    return make_converter(REALTIME_PCM16, caller_format).convert(_FILLER_PCM)


@dataclass(slots=True)
class _Kept:
    audio: bytes
    ms: float  # its length, worked out once: 50 frames a second pass through here
    at_ms: float | None  # where it went on the engine's audio timeline; None: not sent yet


class Resilience:
    def __init__(self, *, engine: Engine, speaker: Speaker, state: CallState, judge: BargeInJudge,
                 knowledge: KnowledgeTurns | None, tools: ToolRunner, journal: CallJournal, metrics: Metrics,
                 settings: Settings, caller_format: AudioFormat, reached: Callable[[bool], None],
                 retriever: Retriever) -> None:
        self._engine = engine
        self._speaker = speaker
        self._state = state
        self._judge = judge
        self._knowledge = knowledge
        self._tools = tools
        self._journal = journal
        self._metrics = metrics
        self._settings = settings
        self._caller_format = caller_format
        self._reached = reached  # the agent's: whether the engine could be reached
        self._retriever = retriever
        self._kept: deque[_Kept] = deque()
        self._kept_ms = 0.0
        self._sent_ms = 0.0  # the engine's audio timeline: caller audio sent in this call
        self._restoring = False  # caller audio waits for the new session
        self._session_since = perf_counter()
        # One new session at a time: a connection that drops while a renewal opens the next
        # session waits for it, and is replaced by it.
        self._switching = asyncio.Lock()

    # ------------------------------------------------------------------ caller audio

    async def send_audio(self, audio: bytes) -> None:
        """Caller audio in the engine's format: sent, or kept while a new session is opened."""
        ms = self._engine.input_format.duration_ms(len(audio))
        if self._restoring:
            self._keep(_Kept(audio, ms, None))
            return
        self._keep(_Kept(audio, ms, self._sent_ms))
        self._sent_ms += ms
        await self._engine.send_audio(audio)

    def _keep(self, kept: _Kept) -> None:
        self._kept.append(kept)
        self._kept_ms += kept.ms
        while self._kept_ms > KEPT_AUDIO_SECONDS * 1000 and len(self._kept) > 1:
            self._kept_ms -= self._kept.popleft().ms

    async def _send_kept(self, since_ms: float | None) -> None:
        """Once a new session is up: the caller's audio sent to the old one since `since_ms`
        (None: none of it), then what waited, including what comes meanwhile; then the caller's
        audio goes straight to the engine again, in order."""
        for kept in [k for k in self._kept if since_ms is not None and k.at_ms is not None
                     and k.at_ms + k.ms > since_ms]:
            await self._send_kept_audio(kept)
        while (waiting := next((k for k in self._kept if k.at_ms is None), None)) is not None:
            await self._send_kept_audio(waiting)
        self._restoring = False

    async def _send_kept_audio(self, kept: _Kept) -> None:
        kept.at_ms = self._sent_ms
        self._sent_ms += kept.ms
        await self._engine.send_audio(kept.audio)

    # ------------------------------------------------------------------ a dropped connection

    async def recover(self, reason: str) -> bool:
        """The engine's events ended mid-call: carry the conversation on in a new session. False
        when it could not be reached (the call ends)."""
        dropped_at = perf_counter()
        async with self._switching:
            if self._engine.is_open:
                log.warning("the engine's connection ended mid-call (%s) as a renewal replaced it", reason)
                self._journal.event("engine_lost", f"{reason}, remplacée par la session renouvelée",
                                    self._state.timeline_ms(dropped_at))
                return True
            return await self._reconnect(reason, dropped_at)

    async def _reconnect(self, reason: str, dropped_at: float) -> bool:
        log.warning("the engine's connection ended mid-call (%s): reconnecting", reason)
        self._journal.event("engine_lost", reason, self._state.timeline_ms(dropped_at))
        self._restoring = True
        self._tools.hold()
        failure = reason
        try:
            question_start = await self._fall_silent()
            await self._speaker.play_recorded(filler(self._caller_format))
            unanswered = _unanswered_question(self._state, self._tools.busy, self._tools.answer_asked_at)
            try:
                tries = await self._reopen(unanswered)
            except EngineUnavailable as exc:
                failure = str(exc)
            else:
                by_tools = await self._restored(question_start)
                await self._answer_again(unanswered, by_tools)
                self._metrics.engine_reconnects.labels("restored").inc()
                took_ms = (perf_counter() - dropped_at) * 1000
                self._journal.event("engine_reconnect", f"{tries} essai(s), {took_ms:.0f} ms")
                self._reached(True)
                return True
        finally:
            self._restoring = False
        self._metrics.engine_reconnects.labels("failed").inc()
        self._journal.event("engine_reconnect_failed", failure)
        self._reached(False)
        return False

    async def _reopen(self, unanswered: Turn | None) -> int:
        """A new session with the conversation, in RECONNECT_ATTEMPTS tries at most: how many it
        took. EngineUnavailable with the last reason when none worked (or none was allowed)."""
        attempts = self._settings.reconnect_attempts
        if attempts == 0:
            raise EngineUnavailable("RECONNECT_ATTEMPTS is 0")
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=RECONNECT_BACKOFF_SECONDS, exp_base=3,
                                  max=RECONNECT_BACKOFF_CEILING_SECONDS),
            retry=retry_if_exception_type(EngineUnavailable), reraise=True,
            after=lambda state: log.warning("reconnecting to the engine failed (try %d): %s",
                                            state.attempt_number, state.outcome.exception()))
        tries = 0
        async for attempt in retrying:  # ends after a success; the last failure is raised again
            with attempt:
                await self._engine.recycle(self._conversation(unanswered))
                tries = attempt.retry_state.attempt_number
        return tries

    async def _fall_silent(self) -> float | None:
        """OCTI stops where the caller stopped hearing it (no engine to tell: the new session
        gets the answer cut there). Returns where the caller's question under way began on
        the engine's audio timeline (None when they were not speaking): it is asked again."""
        self._judge.settle()
        if self._knowledge is not None:
            self._knowledge.cancel()
        answers = self._speaker.answers
        answering = answers.active is not None
        if answering:
            answers.muted.add(answers.active)
            answers.active = None
        cut = await self._speaker.stop(barge_in=False)
        state = self._state
        for turn in _turns_since_question(state):
            unheard = cut is not None and turn.item_id in cut.unheard
            if unheard or (answering and not turn.interrupted):  # never heard, or heard all it said so far
                turn.interrupted = True
                turn.heard_ms = 0.0 if unheard else answers.generated_ms.get(turn.item_id, 0.0)
        asking = state.last_caller_turn()
        if asking is None or asking.end_ms is not None or asking.start_ms is None:
            return None
        state.forget_caller_turn(asking)  # the new session hears it again, whole
        return asking.start_ms

    def _conversation(self, unanswered: Turn | None) -> Conversation:
        exchanges = []
        for turn in self._state.turns:
            text = self._speaker.heard_text(turn)
            if text:
                exchanges.append(Exchange(turn.role, text, cut=turn.role == "assistant" and turn.interrupted))
        retrieval = unanswered.retrieval if unanswered is not None else None
        return Conversation(tuple(exchanges), knowledge_context(retrieval) if retrieval is not None else None)

    async def _restored(self, question_start: float | None) -> bool:
        """The new session gets what waited for it: the caller's audio, then the tool results.
        True when a tool's result brings the model an answer to give (`ToolRunner.release`)."""
        self._session_since = perf_counter()
        await self._send_kept(question_start)
        return await self._tools.release()

    async def _answer_again(self, question: Turn | None, by_tools: bool) -> None:
        """The question the caller asked before the drop and did not hear answered."""
        if question is None:
            return
        previous_question = self._state.previous_question(question)
        if self._engine.traits.turns == "client":
            if self._knowledge is not None and question.retrieval is None:
                self._knowledge.typed(question, previous_question)  # its search first
            else:
                await self._engine.answer()
        elif by_tools:
            return  # the result that went to the new session brings the answer
        elif question.retrieval is not None:
            await self._engine.answer(context=knowledge_context(question.retrieval))
        else:  # the model answered it without a search: one now, as for a typed question
            await answer_typed(self._engine, self._retriever, question, previous_question,
                               lambda turn: log_caller_turn(self._journal, turn))

    # ------------------------------------------------------------------ a reset

    async def reset(self) -> bool:
        """A new session without the conversation, and OCTI's answers so far forgotten; False
        (nothing changed) when it could not be opened."""
        async with self._switching:
            try:
                await self._engine.recycle(Conversation())
            except EngineUnavailable as exc:
                log.warning("a fresh conversation could not be opened: %s", exc)
                self._journal.event("upstream_failure", f"reset: {exc}", self._state.timeline_ms(perf_counter()))
                self._reached(False)
                return False
        self._session_since = perf_counter()
        self._speaker.forget_answers()
        self._state.speech_end_ms = None
        self._journal.event("conversation_reset", "", self._state.timeline_ms(perf_counter()))
        return True

    # ------------------------------------------------------------------ the session cap

    async def renew_before_cap(self) -> None:
        """Runs with the call: renews the engine's session before the service ends it, at a quiet
        moment (the caller silent, OCTI silent, nothing on its way)."""
        while True:
            end = self._session_end()
            lead = min(RECYCLE_LEAD_SECONDS, (end - self._session_since) / 4)
            wait = end - lead - perf_counter()
            if wait > 0:
                # A session announces its end in its first event: while it may still, look again soon.
                awaited = (self._engine.session_ends_at is None
                           and perf_counter() - self._session_since < ANNOUNCEMENT_WAIT_SECONDS)
                await asyncio.sleep(min(wait, ANNOUNCEMENT_CHECK_SECONDS) if awaited else wait)
                continue
            while not self._quiet():
                await asyncio.sleep(QUIET_CHECK_SECONDS)
            if perf_counter() < self._session_end() - lead:
                continue  # a reconnection renewed it meanwhile
            age = perf_counter() - self._session_since
            async with self._switching:
                renewed = await self._renew()
            if not renewed:  # the old session lives on; at its end, the reconnection
                await asyncio.sleep(QUIET_CHECK_SECONDS * 10)
                continue
            self._metrics.engine_recycles.inc()
            self._journal.event("engine_recycled", f"après {age:.0f} s", self._state.timeline_ms(perf_counter()))

    def _session_end(self) -> float:
        """When the current session ends: as the service announced it, or at the configured cap."""
        capped = self._session_since + self._settings.realtime_session_max_minutes * 60
        announced = self._engine.session_ends_at
        return capped if announced is None else min(announced, capped)

    async def _renew(self) -> bool:
        self._restoring = True
        try:
            await self._engine.recycle(self._conversation(None))
        except EngineUnavailable as exc:
            log.warning("renewing the engine's session failed: %s", exc)
            await self._send_kept(None)  # the old session lives on: it hears what the caller said meanwhile
            return False
        await self._restored(None)
        return True

    def _quiet(self) -> bool:
        caller = self._state.last_caller_turn()
        return not (self._restoring or self._speaker.busy or self._tools.busy
                    or (self._knowledge is not None and self._knowledge.releasing)
                    or (caller is not None and caller.end_ms is None))


def _turns_since_question(state: CallState) -> list[Turn]:
    """OCTI's turns since the caller's last one (all of them before the first question)."""
    since: list[Turn] = []
    for turn in reversed(state.turns):
        if turn.role == "caller":
            break
        since.append(turn)
    return since


def _unanswered_question(state: CallState, tool_at_work: bool, answer_asked_at: float | None) -> Turn | None:
    """The caller's last finished turn when OCTI has not said all of its answer (or nothing): a
    tool is still at work on it, or no turn of OCTI's since was heard whole, counting only those
    the model said after a tool's result asked it for the answer (`answer_asked_at`)."""
    for turn in reversed(state.turns):
        said_after = answer_asked_at is None or (turn.last_model_audio_at or 0.0) > answer_asked_at
        if turn.role == "assistant" and not turn.interrupted and said_after and not tool_at_work:
            return None
        if turn.role == "caller" and turn.end_ms is not None:
            return turn
    return None
