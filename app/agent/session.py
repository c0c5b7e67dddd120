"""One conversation between a caller's channel and the realtime model.

Plain asyncio, no web framework: two loops (caller events, model events), each with one
dispatch, share small state objects. The session never assumes Twilio; it talks to a
`CallChannel`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Literal

from app.agent.channel import CallChannel, CallerAudio, CallOutcome, ChannelEvent, Digit, PlaybackMark
from app.agent.playback import PlaybackTracker
from app.agent.rag import (
    SEARCH_TOOL,
    Retrieval,
    Retriever,
    TurnRetrieval,
    instructions_with_search_tool,
    knowledge_context,
    tool_output,
)
from app.audio.convert import make_converter
from app.audio.framing import FrameAssembler
from app.calllog.journal import CallJournal, heard_text
from app.calllog.records import PassageUsed
from app.config import Settings
from app.metrics import Metrics
from app.realtime import protocol
from app.realtime.connection import RealtimeConnection

log = logging.getLogger(__name__)

# Model audio goes to the caller in messages of up to 100 ms, each followed by a mark:
# fewer messages than 20 ms ones, while the playback tracker interpolates within a chunk.
MESSAGE_MS = 100
FRAME_MS = 20

# Errors after which the realtime session cannot go on.
FATAL_MODEL_ERRORS = {"session_expired", "beta_api_shape_disabled", "invalid_api_key"}


RECORDING_NOTICE = "Cet appel est enregistré pour améliorer notre service."

# How long a new answer may wait for the model's previous response to finish.
RESPONSE_IDLE_TIMEOUT_SECONDS = 2.0


def realtime_session_update(settings: Settings, keywords: Sequence[str] = ()) -> dict[str, Any]:
    """The realtime session this agent needs: with RAG injection the model must not answer on
    its own (we answer once the passages are in); in tool mode it gets the search tool.
    `keywords`: the knowledge base's vocabulary, for transcription models that take it."""
    return protocol.session_update(
        settings,
        create_response=settings.rag_mode != "inject",
        tools=[SEARCH_TOOL] if settings.rag_mode == "tool" else None,
        keywords=keywords,
    )


@dataclass(slots=True)
class Turn:
    index: int
    role: Literal["caller", "assistant"]
    item_id: str
    text: str = ""
    interrupted: bool = False
    heard_ms: float | None = None
    retrieval: Retrieval | None = None
    # Offsets on the call timeline (ms since the stream started).
    start_ms: float | None = None
    end_ms: float | None = None
    # Assistant turns: when the model's first audio arrived (perf_counter), and the latencies
    # from the caller's end of speech to it, and from it to the first frame sent to the caller.
    model_audio_at: float | None = None
    speech_end_to_model_audio_ms: float | None = None
    model_audio_to_caller_ms: float | None = None


@dataclass(slots=True)
class _Responses:
    """What the model is saying: the active response, audio generated per item, muted responses."""

    active: str | None = None
    muted: set[str] = field(default_factory=set)
    generated_ms: dict[str, float] = field(default_factory=dict)
    idle: asyncio.Event = field(default_factory=lambda: _set(asyncio.Event()))
    # A knowledge context item sent for the next response, then by response: deleted once it is done.
    context_waiting: str | None = None
    contexts: dict[str, str] = field(default_factory=dict)


def _set(event: asyncio.Event) -> asyncio.Event:
    event.set()  # no response yet: the model is idle
    return event


class CallSession:
    def __init__(
        self,
        channel: CallChannel,
        realtime: RealtimeConnection,
        settings: Settings,
        metrics: Metrics | None = None,
        retriever: Retriever | None = None,
        journal: CallJournal | None = None,
    ) -> None:
        self._channel = channel
        self._realtime = realtime
        self._settings = settings
        self._metrics = metrics or Metrics()
        self._model_format = protocol.model_audio_format(settings)
        caller_format = channel.audio_format
        self._caller_format = caller_format
        self._to_model = make_converter(caller_format, self._model_format)
        self._to_caller = make_converter(self._model_format, caller_format)
        self._frames = FrameAssembler(caller_format.frame_bytes(FRAME_MS), caller_format.silence_byte)
        self._chunk_bytes = caller_format.frame_bytes(MESSAGE_MS)
        self._playback = PlaybackTracker()
        self._responses = _Responses()
        self._rag_mode = settings.rag_mode
        self._retriever = retriever or Retriever(None, budget_ms=settings.rag_timeout_ms,
                                                 limit=settings.rag_top_k, metrics=self._metrics)
        # The caller turn being answered with context: retrieval, then response.create.
        self._pending_answer: asyncio.Task[None] | None = None
        self._tool_calls: set[asyncio.Task[None]] = set()
        # With interrupt_response the server cancels the response itself when speech starts.
        self._auto_interrupt = protocol.turn_detection(settings)["interrupt_response"]
        self._requested_outcome: CallOutcome | None = None
        self.turns: list[Turn] = []
        self._assistant_turns: dict[str, Turn] = {}
        self.barge_ins = 0
        self.digits: list[str] = []
        self.usage: list[dict[str, Any]] = []
        self._journal = journal or CallJournal(channel.identity.call_id, lambda record: None,
                                               model=settings.openai_realtime_model, prices={})
        self._recorder = self._journal.recorder
        self._t0 = perf_counter()  # the call timeline's zero: the stream has just started
        self._caller_turns: dict[str, Turn] = {}
        # The caller turn under way, whose words retrieval follows (RAG_MODE=inject), and the
        # ended turns whose answer is being released.
        self._following: TurnRetrieval | None = None
        self._following_item = ""
        self._releasing: dict[str, TurnRetrieval] = {}
        self.transcription_usage: list[dict[str, Any]] = []
        self._speech_end_ms: float | None = None  # the caller's last end of speech not yet answered
        self._model_handlers = {
            "response.created": self._on_response_created,
            "response.output_audio.delta": self._on_audio_delta,
            "response.output_audio.done": self._on_audio_done,
            "response.output_audio_transcript.done": self._on_assistant_transcript,
            "response.done": self._on_response_done,
            "input_audio_buffer.speech_started": self._on_speech_started,
            "input_audio_buffer.speech_stopped": self._on_speech_stopped,
            "conversation.item.input_audio_transcription.delta": self._on_caller_words,
            "conversation.item.input_audio_transcription.completed": self._on_caller_transcript,
            "conversation.item.input_audio_transcription.failed": self._on_transcription_failed,
            "response.function_call_arguments.done": self._on_function_call,
            "error": self._on_error,
        }

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> CallOutcome:
        """Converse until either side ends; always releases both sides."""
        self._metrics.active_calls += 1
        self._metrics.counters["calls"] += 1
        outcome = CallOutcome.ERROR
        caller = asyncio.create_task(self._caller_loop(), name="caller-loop")
        model = asyncio.create_task(self._model_loop(), name="model-loop")
        try:
            await self._realtime.send(protocol.greeting_response(self._greeting()))
            done, _ = await asyncio.wait({caller, model}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is not None:
                    log.error("call loop failed", exc_info=task.exception())
                    self._requested_outcome = CallOutcome.ERROR
            if self._requested_outcome is not None:
                outcome = self._requested_outcome
            elif caller in done:
                outcome = CallOutcome.CALLER_HUNG_UP
            else:
                log.warning("the realtime connection closed mid-call (code %s)", self._realtime.close_code)
                self._journal.event("upstream_failure", f"realtime connection closed (code {self._realtime.close_code})")
                outcome = CallOutcome.ERROR
            return outcome
        finally:
            tasks = [caller, model, *self._tool_calls]
            if self._pending_answer is not None:
                tasks.append(self._pending_answer)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
            await self._realtime.close()
            await self._channel.end(outcome)
            self._metrics.counters[f"calls_ended_{outcome.value}"] += 1
            log.info("call ended: %s after %d turns, %d barge-ins", outcome.value, len(self.turns), self.barge_ins)
            try:
                await self._journal.ended(outcome.value, self.usage, turns=len(self.turns), barge_ins=self.barge_ins,
                                          transcription_usages=self.transcription_usage)
            finally:
                # Active until its log is handed over: "no active call" then means every call's
                # end record is queued, which shutdown and the call-log tests rely on.
                self._metrics.active_calls -= 1

    def _greeting(self) -> str:
        if self._recorder is not None:  # the greeting tells callers that the call is recorded
            return f"{self._settings.agent_greeting} {RECORDING_NOTICE}"
        return self._settings.agent_greeting

    # ------------------------------------------------------------------ caller side

    async def _caller_loop(self) -> None:
        async for event in self._channel.events(self._take_caller_event):
            if type(event) is CallerAudio:
                await self._realtime.send(self._append(event))
                self._caller_audio_sent(event)
            else:
                self._on_caller_signal(event)

    def _take_caller_event(self, event: ChannelEvent) -> bool:
        """An event handled as it arrives, from the channel's transport callback: no task
        switch for the 50 audio frames a second. Audio is declined (and comes through
        `_caller_loop`, in order) while the realtime socket cannot take an append at once.

        Order holds because a channel offers nothing while declined events wait, and
        `_caller_loop` writes each one it gets before it yields to the event loop (even the
        library's `send` frames and writes before it waits for the buffer to drain)."""
        if type(event) is CallerAudio:
            if not self._realtime.writable:
                return False
            self._realtime.send_now(self._append(event))
            self._caller_audio_sent(event)
        else:
            self._on_caller_signal(event)
        return True

    def _append(self, event: CallerAudio) -> bytes:
        return protocol.append_audio(self._to_model.convert(event.audio))

    def _caller_audio_sent(self, event: CallerAudio) -> None:
        self._metrics.inbound_delay.observe(perf_counter() - event.received_at)
        if self._recorder is not None:
            self._recorder.caller_audio(event.audio)

    def _on_caller_signal(self, event: ChannelEvent) -> None:
        match event:
            case PlaybackMark(name=name):
                self._playback.acknowledged(name, perf_counter())
            case Digit(digit=digit):
                self.digits.append(digit)
                log.info("caller pressed %s", digit)
                self._journal.event("dtmf", digit, self._timeline_ms(perf_counter()))

    # ------------------------------------------------------------------ model side

    async def _model_loop(self) -> None:
        async for event in self._realtime.events():
            handler = self._model_handlers.get(event["type"])
            if handler is not None:
                await handler(event)
            if self._requested_outcome is not None:
                return

    async def _on_response_created(self, event: dict[str, Any]) -> None:
        responses = self._responses
        responses.active = event.get("response", {}).get("id")
        responses.idle.clear()
        if responses.context_waiting is not None and responses.active is not None:
            responses.contexts[responses.active] = responses.context_waiting
            responses.context_waiting = None

    async def _on_response_done(self, event: dict[str, Any]) -> None:
        response = event.get("response", {})
        if response.get("id") == self._responses.active:
            self._responses.active = None
            self._responses.idle.set()
        context = self._responses.contexts.pop(response.get("id", ""), None)
        if context is not None:  # answered: the passages must not be re-billed on every later turn
            await self._realtime.send(protocol.delete_item(context))
        for item in response.get("output") or []:
            turn = self._assistant_turns.get(item.get("id", ""))
            if turn is not None:
                self._journal_assistant(turn)
        if response.get("usage"):
            self.usage.append(response["usage"])
        if response.get("status") == "failed":
            log.warning("model response failed: %s", response.get("status_details"))

    async def _on_audio_delta(self, event: dict[str, Any]) -> None:
        if event.get("response_id") in self._responses.muted:
            return  # late audio of an interrupted response
        received_at = self._realtime.last_received_at
        item_id = event["item_id"]
        audio = base64.b64decode(event.get("delta", ""))
        turn = self._assistant_turn(item_id)
        if turn.model_audio_at is None:
            turn.model_audio_at = received_at
            if self._speech_end_ms is not None:  # the first answer audio since the caller spoke
                turn.speech_end_to_model_audio_ms = self._timeline_ms(received_at) - self._speech_end_ms
                self._speech_end_ms = None
        generated = self._responses.generated_ms
        generated[item_id] = generated.get(item_id, 0.0) + self._model_format.duration_ms(len(audio))
        await self._play(item_id, self._frames.push(self._to_caller.convert(audio)), received_at)

    async def _on_audio_done(self, event: dict[str, Any]) -> None:
        if event.get("response_id") in self._responses.muted:
            return
        await self._play(event["item_id"], self._frames.flush(), self._realtime.last_received_at)

    async def _play(self, item_id: str, frames: bytes, received_at: float) -> None:
        """Send whole frames to the caller in chunks, each followed by a mark for the tracker."""
        for offset in range(0, len(frames), self._chunk_bytes):
            chunk = frames[offset : offset + self._chunk_bytes]
            mark = self._playback.sent(item_id, self._caller_format.duration_ms(len(chunk)), perf_counter())
            await self._channel.send_audio(chunk, mark)
            now = perf_counter()
            if offset == 0:
                self._first_sent(item_id, now)
            if self._recorder is not None:
                self._recorder.assistant_audio(chunk, self._timeline_ms(now))
            self._metrics.outbound_delay.observe(now - received_at)

    async def _on_speech_started(self, event: dict[str, Any]) -> None:
        """Barge-in: silence the caller's playback at once, then tell the model what was heard."""
        turn = self._caller_turn(event.get("item_id", ""))
        turn.start_ms = float(event.get("audio_start_ms", 0))
        self._cancel_pending_answer()
        if self._rag_mode == "inject":
            self._following = TurnRetrieval(self._retriever, self._previous_question(turn))
            self._following_item = turn.item_id
        interrupted_response = self._responses.active
        if interrupted_response is not None:
            self._responses.muted.add(interrupted_response)
        self._frames.clear()
        self._to_caller.reset()
        if self._playback.audio_queued:
            now = perf_counter()
            playing = self._playback.playing_item
            queued = self._playback.queued_items()
            heard = self._playback.heard_ms(playing, now)
            await self._channel.clear_playback()
            self._playback.flush()
            if self._recorder is not None:
                self._recorder.clear(self._timeline_ms(now))
            self.barge_ins += 1
            self._metrics.counters["barge_ins"] += 1
            await self._cut_to_heard(playing, heard)
            for unheard in queued[1:]:
                await self._realtime.send(protocol.delete_item(unheard))
        if interrupted_response is not None and not self._auto_interrupt:
            await self._realtime.send(protocol.cancel_response())

    async def _cut_to_heard(self, item_id: str, heard_ms: float) -> None:
        """Truncate the item to what was heard, within the bounds the API accepts."""
        audio_end_ms = int(min(heard_ms, self._responses.generated_ms.get(item_id, 0.0)))
        turn = self._assistant_turn(item_id)
        turn.interrupted = True
        turn.heard_ms = float(max(audio_end_ms, 0))
        self._journal_assistant(turn)
        if audio_end_ms > 0:
            await self._realtime.send(protocol.truncate_item(item_id, audio_end_ms))
        else:
            # Nothing was heard: a zero truncate can be refused, and the model said nothing.
            await self._realtime.send(protocol.delete_item(item_id))

    async def _on_speech_stopped(self, event: dict[str, Any]) -> None:
        """The caller's turn is over: with RAG injection, the answer is released from here."""
        stopped_at = perf_counter()
        turn = self._caller_turn(event.get("item_id", ""))
        end_ms = float(event.get("audio_end_ms", 0))
        if self._settings.turn_detection == "server_vad":
            # audio_end_ms includes the silence the VAD waited for: the caller stopped before it.
            end_ms = max(end_ms - self._settings.vad_silence_duration_ms, turn.start_ms or 0.0)
        turn.end_ms = self._speech_end_ms = end_ms
        self._journal_caller(turn)
        if self._rag_mode == "inject":
            following = self._following if self._following_item == turn.item_id else None
            self._following, self._following_item = None, ""
            self._cancel_pending_answer()
            if following is not None:  # words still coming in go to the turn being released
                self._releasing[turn.item_id] = following
            self._pending_answer = asyncio.create_task(self._release(turn, following, stopped_at), name="rag-answer")

    async def _on_caller_words(self, event: dict[str, Any]) -> None:
        """Words of a caller turn as the transcription streams them (during speech with a
        streaming model, after the commit with the others)."""
        turn = self._caller_turn(event.get("item_id", ""))
        turn.text += event.get("delta") or ""
        self._heard(turn)

    async def _on_caller_transcript(self, event: dict[str, Any]) -> None:
        turn = self._caller_turn(event.get("item_id", ""))
        turn.text = event.get("transcript") or ""
        if isinstance(event.get("usage"), dict):
            self.transcription_usage.append(event["usage"])
        self._heard(turn, final=True)
        self._journal_caller(turn)

    async def _on_transcription_failed(self, event: dict[str, Any]) -> None:
        # Nothing waits for the text: the model heard the audio and the answer went on without it.
        log.warning("caller transcription failed: %s", (event.get("error") or {}).get("message"))
        self._journal.event("transcription_failed", str((event.get("error") or {}).get("message", "")))

    def _heard(self, turn: Turn, final: bool = False) -> None:
        following = self._following if self._following_item == turn.item_id else self._releasing.get(turn.item_id)
        if following is not None:
            following.heard(turn.text, final=final)

    def _previous_question(self, turn: Turn) -> str | None:
        """The caller's previous words join the query: "et pour les dindes ?" keeps its topic."""
        return next((t.text for t in reversed(self.turns) if t.role == "caller" and t.text and t is not turn), None)

    def _caller_turn(self, item_id: str) -> Turn:
        turn = self._caller_turns.get(item_id)
        if turn is None:
            turn = self._caller_turns[item_id] = self._new_turn("caller", item_id)
        return turn

    # ------------------------------------------------------------------ retrieval (RAG)

    def _cancel_pending_answer(self) -> None:
        """A barge-in before the answer started: the caller is still talking, drop that turn's work."""
        if self._pending_answer is not None and not self._pending_answer.done():
            self._pending_answer.cancel()
        self._pending_answer = None
        if self._following is not None:
            self._following.close()
            self._following = None

    async def _release(self, turn: Turn, following: TurnRetrieval | None, stopped_at: float) -> None:
        """Answer within RAG_HOLD_MS of the caller stopping, with the passages for the words
        heard by then; with no words yet, the model (which heard them) searches itself."""
        retrieval: Retrieval | None = None
        if following is not None:
            try:
                retrieval = await following.settle(self._settings.rag_hold_ms / 1000)
            finally:
                following.close()
                self._releasing.pop(turn.item_id, None)
        if retrieval is None and self._settings.rag_fallback == "tool":
            self._metrics.counters["turns_searched_by_the_model"] += 1
            await self._respond(instructions_with_search_tool(self._settings.agent_instructions), [SEARCH_TOOL],
                                caller_stopped_at=stopped_at)
            return
        turn.retrieval = retrieval or Retrieval(following.query if following else "", "timeout",
                                                error="no words before the hold ended")
        self._journal_caller(turn)
        context_id = f"octi_context_{turn.index}"
        self._responses.context_waiting = context_id
        try:
            await self._realtime.send(protocol.system_message(context_id, knowledge_context(turn.retrieval)))
            await self._respond(caller_stopped_at=stopped_at)
        except asyncio.CancelledError:  # a barge-in before the answer was asked for
            if self._responses.context_waiting == context_id:
                self._responses.context_waiting = None
                await self._realtime.send(protocol.delete_item(context_id))
            raise

    async def _respond(self, instructions: str | None = None, tools: list[dict[str, Any]] | None = None,
                       caller_stopped_at: float | None = None) -> None:
        """Ask for an answer once the model's current response is over (one at a time per conversation)."""
        try:
            await asyncio.wait_for(self._responses.idle.wait(), RESPONSE_IDLE_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning("answering while the previous response is still active")
        await self._realtime.send(protocol.response_create(instructions, tools))
        if caller_stopped_at is not None:
            self._metrics.turn_hold.observe(perf_counter() - caller_stopped_at)

    async def _on_function_call(self, event: dict[str, Any]) -> None:
        task = asyncio.create_task(self._run_tool(event), name="tool-call")
        self._tool_calls.add(task)
        task.add_done_callback(self._tool_calls.discard)

    async def _run_tool(self, event: dict[str, Any]) -> None:
        """Run a function the model called; failures go back to the model, never end the call."""
        call_id, name = event.get("call_id", ""), event.get("name", "")
        try:
            arguments = json.loads(event.get("arguments") or "{}")
        except ValueError:
            arguments = None
        if name == SEARCH_TOOL["name"] and isinstance(arguments, dict) and isinstance(arguments.get("query"), str):
            retrieval = await self._retriever.retrieve(arguments["query"])
            caller_turn = next((t for t in reversed(self.turns) if t.role == "caller"), None)
            if caller_turn is not None:
                caller_turn.retrieval = retrieval
                self._journal_caller(caller_turn)
            output = tool_output(retrieval)
        else:
            output = json.dumps({"error": f"appel de fonction invalide : {name}"}, ensure_ascii=False)
        await self._realtime.send(protocol.function_output(call_id, output))
        await self._respond()  # the model speaks the result once the response that called the tool is done

    async def _on_assistant_transcript(self, event: dict[str, Any]) -> None:
        self._assistant_turn(event.get("item_id", "")).text = event.get("transcript", "")

    def _new_turn(self, role: Literal["caller", "assistant"], item_id: str, text: str = "") -> Turn:
        turn = Turn(len(self.turns), role, item_id, text)
        self.turns.append(turn)
        return turn

    def _assistant_turn(self, item_id: str) -> Turn:
        """Looked up on every audio delta: by item id, not by scanning the turns."""
        turn = self._assistant_turns.get(item_id)
        if turn is None:
            turn = self._assistant_turns[item_id] = self._new_turn("assistant", item_id)
        return turn

    # ------------------------------------------------------------------ call log

    def _timeline_ms(self, at: float) -> float:
        return (at - self._t0) * 1000

    def _first_sent(self, item_id: str, now: float) -> None:
        turn = self._assistant_turn(item_id)
        if turn.start_ms is None:
            turn.start_ms = self._timeline_ms(now)
            if turn.model_audio_at is not None:
                turn.model_audio_to_caller_ms = (now - turn.model_audio_at) * 1000

    def _journal_caller(self, turn: Turn) -> None:
        retrieval = turn.retrieval
        self._journal.turn(
            turn.index, "caller", turn.text, start_ms=turn.start_ms, end_ms=turn.end_ms,
            passages=tuple(PassageUsed(p.id, p.source, p.title, p.score) for p in retrieval.passages)
            if retrieval else (),
            retrieval_ms=retrieval.elapsed_ms if retrieval else None,
            retrieval_outcome=retrieval.outcome if retrieval else None,
        )

    def _journal_assistant(self, turn: Turn) -> None:
        generated = self._responses.generated_ms.get(turn.item_id, 0.0)
        heard = turn.heard_ms if turn.interrupted and turn.heard_ms is not None else generated
        self._journal.turn(
            turn.index, "assistant", heard_text(turn.text, heard, generated) if turn.interrupted else turn.text,
            start_ms=turn.start_ms, end_ms=turn.start_ms + heard if turn.start_ms is not None else None,
            interrupted=turn.interrupted, heard_ms=turn.heard_ms,
            speech_end_to_model_audio_ms=turn.speech_end_to_model_audio_ms,
            model_audio_to_caller_ms=turn.model_audio_to_caller_ms,
        )

    async def _on_error(self, event: dict[str, Any]) -> None:
        error = event.get("error") or {}
        code = error.get("code")
        if code == "response_cancel_not_active":
            return  # harmless: the response had already finished
        log.warning("realtime error %s: %s", code, error.get("message"))
        self._metrics.counters["model_errors"] += 1
        self._journal.event("model_error", f"{code}: {error.get('message')}")
        if code in FATAL_MODEL_ERRORS:
            self._requested_outcome = CallOutcome.ERROR
