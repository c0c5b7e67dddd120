"""The OpenAI Realtime API (GA) as an `Engine`: the contract's operations become client events,
the server's events become the contract's.

The engine keeps what only the Realtime protocol needs: one response at a time per
conversation, the knowledge context of an answer sent as a system item and deleted once that
answer is done (so the session's instructions, and the service's prompt cache, never change),
how much audio each item has (a truncate may not go past it), and whether the service cancels
its own answer when the caller talks (`interrupt_response`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.audio.formats import AudioFormat
from app.config import Settings
from app.engines.contract import (
    AnswerAudio, AnswerAudioDone, AnswerDone, AnswerStarted, AnswerText, AnswerTextPiece, CallerWords,
    Conversation, EngineError, EngineEvent, EngineTraits, SpeechStarted, SpeechStopped, Summary, ToolCall,
    ToolSpec, announced_end,
)
from app.engines.openai_realtime import models, protocol
from app.engines.openai_realtime.connection import RealtimeConnection

log = logging.getLogger(__name__)

# Errors after which the realtime session cannot go on.
FATAL_ERRORS = {"session_expired", "beta_api_shape_disabled", "invalid_api_key"}
# What reading a server event with a field missing or of the wrong type raises (binascii.Error,
# bad base64, is a ValueError).
MALFORMED_EVENT_ERRORS = (KeyError, TypeError, ValueError, AttributeError)
# How long a new answer may wait for the model's previous response to finish.
RESPONSE_IDLE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class RealtimeOptions:
    """How the agent uses the session: client-driven answers (our retrieval first), the tools
    the model always has and the instructions that say when to use them (None: the settings'),
    the transcription keywords, and the format the caller's channel plays (None: answers come in
    the caller audio's format)."""

    client_turns: bool
    tools: Sequence[ToolSpec] = ()
    keywords: Sequence[str] = ()
    instructions: str | None = None
    channel_format: AudioFormat | None = None

    @property
    def output_format(self) -> AudioFormat | None:
        return None if self.channel_format is None else protocol.answer_format(self.channel_format)


def tool_object(tool: ToolSpec) -> dict[str, Any]:
    return {"type": "function", "name": tool.name, "description": tool.description, "parameters": tool.parameters}


def session_update(settings: Settings, options: RealtimeOptions) -> dict[str, Any]:
    return protocol.session_update(settings, create_response=not options.client_turns,
                                   tools=[tool_object(t) for t in options.tools] or None, keywords=options.keywords,
                                   instructions=options.instructions, output_format=options.output_format)


@dataclass(slots=True)
class _Responses:
    active: str | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    # The context item sent for the next response, then by response: deleted once it is done.
    context_waiting: str | None = None
    contexts: dict[str, str] = field(default_factory=dict)
    # Tool calls of this session still waiting for their result.
    tool_calls: set[str] = field(default_factory=set)
    # By response: the calls it made, held until it is done (a cancelled or cut-short response's
    # calls are reported too, with whatever arguments it had, and must not run).
    calls_made: dict[str, list[ToolCall]] = field(default_factory=dict)


class RealtimeEngine:
    def __init__(self, connection: RealtimeConnection, settings: Settings, options: RealtimeOptions) -> None:
        self._connection = connection
        self._settings = settings
        self._options = options
        self.input_format = protocol.model_audio_format(settings)
        self.output_format = options.output_format or self.input_format
        server_vad = settings.turn_detection == "server_vad"
        self._vad_silence_ms = settings.vad_silence_duration_ms if server_vad else 0
        # speech_started's audio_start_ms includes the audio kept from before the speech.
        self._vad_prefix_ms = settings.vad_prefix_padding_ms if server_vad else 0
        end_wait_ms = self._vad_silence_ms if server_vad else models.SEMANTIC_VAD_LONGEST_WAIT_MS["auto"]
        self.traits = EngineTraits(turns="client" if options.client_turns else "service", cuts_answers=True,
                                   streams_caller_words=models.streams_transcription(settings.openai_transcribe_model),
                                   speech_end_wait_ms=end_wait_ms, caller_audio_may_wait=True)
        self._auto_interrupt = protocol.turn_detection(settings)["interrupt_response"]
        self._responses = _Responses()
        self._responses.idle.set()  # no response yet: the model is idle
        self._audio_ms: dict[str, float] = {}  # audio generated per item: a truncate may not pass it
        self._speech_start_ms: dict[str, float] = {}
        self._appended_bytes = 0  # caller audio sent in this call: for turns we end ourselves
        # The service's audio timeline restarts with each session: where the current one began.
        self._session_start_ms = 0.0
        self._turn_ending = False  # end_turn() committed the buffer; its `committed` is a turn's end
        self._last_stopped = ""  # the turn whose end was reported last (the service commits it too)
        self._contexts_sent = 0
        self._session_ends_at: float | None = None  # announced in each session's `session.created`
        self._translate: dict[str, Callable[[dict[str, Any]], EngineEvent | tuple[EngineEvent, ...] | None]] = {
            "session.created": self._session_created,
            "input_audio_buffer.speech_started": self._speech_started,
            "input_audio_buffer.speech_stopped": self._speech_stopped,
            "conversation.item.input_audio_transcription.delta": self._caller_words,
            "conversation.item.input_audio_transcription.completed": self._caller_transcript,
            "conversation.item.input_audio_transcription.failed": self._transcription_failed,
            "response.created": self._response_created,
            "response.output_audio.delta": self._audio_delta,
            "response.output_audio.done": self._audio_done,
            "response.output_audio_transcript.delta": self._answer_text_piece,
            "response.output_audio_transcript.done": self._answer_text,
            "input_audio_buffer.committed": self._committed,
            "response.function_call_arguments.done": self._tool_call,
            "response.done": self._response_done,
            "error": self._error,
        }

    @classmethod
    async def open(cls, settings: Settings, options: RealtimeOptions) -> RealtimeEngine:
        """Connect and configure a session (RealtimeUnavailable when the service cannot be reached)."""
        connection = await RealtimeConnection.open(settings, session_update(settings, options))
        return cls(connection, settings, options)

    @property
    def is_open(self) -> bool:
        return self._connection.is_open

    @property
    def close_reason(self) -> str:
        return f"realtime connection closed (code {self._connection.close_code})"

    @property
    def session_ends_at(self) -> float | None:
        return self._session_ends_at

    # ------------------------------------------------------------------ events

    async def events(self) -> AsyncIterator[EngineEvent]:
        """Until the connection ends, across recycles (a recycled connection's end is not ours).
        After a fatal error the session is closed here: the service would close it anyway
        (`session_expired`), and the caller may carry the conversation on with `recycle`."""
        while True:
            connection = self._connection
            async for event in connection.events():
                translate = self._translate.get(event["type"])
                if translate is None:
                    continue
                try:
                    translated = translate(event)
                    if self._responses.contexts and event["type"] == "response.done":
                        await self._forget_context(event.get("response", {}).get("id", ""))
                except MALFORMED_EVENT_ERRORS as exc:
                    # A field missing or of the wrong type: the server's mistake must not end the call.
                    log.warning("dropping a malformed %s event from the realtime server: %r", event["type"], exc)
                    continue
                for engine_event in translated if isinstance(translated, tuple) else (translated,):
                    if engine_event is not None:
                        yield engine_event
                if isinstance(translated, EngineError) and translated.fatal:
                    await connection.close()
            if self._connection is connection:
                return

    def _session_created(self, event: dict[str, Any]) -> None:
        self._session_ends_at = announced_end(event["session"].get("expires_at"))

    def _speech_started(self, event: dict[str, Any]) -> SpeechStarted:
        turn, at_ms = event.get("item_id", ""), float(event.get("audio_start_ms", 0)) + self._session_start_ms
        self._speech_start_ms[turn] = at_ms
        return SpeechStarted(turn, at_ms)

    def _speech_stopped(self, event: dict[str, Any]) -> SpeechStopped:
        turn = self._last_stopped = event.get("item_id", "")
        started_ms = self._speech_start_ms.pop(turn, 0.0)
        # audio_end_ms includes the silence server VAD waited for: the caller stopped before it.
        at_ms = max(float(event.get("audio_end_ms", 0)) + self._session_start_ms - self._vad_silence_ms, started_ms)
        return SpeechStopped(turn, at_ms, max(at_ms - started_ms - self._vad_prefix_ms, 0.0))

    def _committed(self, event: dict[str, Any]) -> SpeechStopped | None:
        """The buffer became a user item: the end of a turn when end_turn() asked for it and turn
        detection had not already reported that turn's end."""
        turn = event.get("item_id", "")
        if not self._turn_ending or turn == self._last_stopped:
            return None
        self._turn_ending = False
        self._last_stopped = turn
        started_ms = self._speech_start_ms.pop(turn, 0.0)
        at_ms = max(self.input_format.duration_ms(self._appended_bytes), started_ms)
        return SpeechStopped(turn, at_ms, max(at_ms - started_ms - self._vad_prefix_ms, 0.0))

    @staticmethod
    def _caller_words(event: dict[str, Any]) -> CallerWords:
        return CallerWords(event.get("item_id", ""), event.get("delta") or "", final=False)

    @staticmethod
    def _caller_transcript(event: dict[str, Any]) -> CallerWords:
        usage = event.get("usage")
        return CallerWords(event.get("item_id", ""), event.get("transcript") or "", final=True,
                           usage=usage if isinstance(usage, dict) else None)

    @staticmethod
    def _transcription_failed(event: dict[str, Any]) -> EngineError:
        message = str((event.get("error") or {}).get("message", ""))
        return EngineError("transcription_failed", message, fatal=False)

    def _response_created(self, event: dict[str, Any]) -> AnswerStarted:
        responses = self._responses
        responses.active = event.get("response", {}).get("id")
        responses.idle.clear()
        if responses.context_waiting is not None and responses.active is not None:
            responses.contexts[responses.active] = responses.context_waiting
            responses.context_waiting = None
        return AnswerStarted(responses.active or "")

    def _audio_delta(self, event: dict[str, Any]) -> AnswerAudio:
        audio = base64.b64decode(event.get("delta", ""))
        item = event["item_id"]
        self._audio_ms[item] = self._audio_ms.get(item, 0.0) + self.output_format.duration_ms(len(audio))
        return AnswerAudio(event.get("response_id", ""), item, audio, self._connection.last_received_at)

    @staticmethod
    def _audio_done(event: dict[str, Any]) -> AnswerAudioDone:
        return AnswerAudioDone(event.get("response_id", ""), event["item_id"])

    @staticmethod
    def _answer_text_piece(event: dict[str, Any]) -> AnswerTextPiece:
        return AnswerTextPiece(event.get("item_id", ""), event.get("delta", ""))

    @staticmethod
    def _answer_text(event: dict[str, Any]) -> AnswerText:
        return AnswerText(event.get("item_id", ""), event.get("transcript", ""))

    def _tool_call(self, event: dict[str, Any]) -> None:
        call = ToolCall(event.get("call_id", ""), event.get("name", ""), event.get("arguments") or "")
        self._responses.calls_made.setdefault(event.get("response_id", ""), []).append(call)

    def _response_done(self, event: dict[str, Any]) -> tuple[EngineEvent, ...]:
        """The response's end, after its tool calls if it completed: a barge-in's cancel, or
        max_output_tokens, must not hang up, transfer or search on words the model never finished."""
        response = event.get("response", {})
        if response.get("id") == self._responses.active:
            self._responses.active = None
            self._responses.idle.set()
        status = response.get("status", "")
        if status == "failed":
            log.warning("model response failed: %s", response.get("status_details"))
        calls = self._responses.calls_made.pop(response.get("id", ""), [])
        if calls and status != "completed":
            log.info("dropping %d tool call(s) of a %s response", len(calls), status)
            calls = []
        self._responses.tool_calls.update(call.call for call in calls)
        items = tuple(item.get("id", "") for item in response.get("output") or [])
        details = response.get("status_details") or {}
        return (*calls, AnswerDone(response.get("id", ""), status, items, response.get("usage") or None,
                                   str(details.get("reason") or "")))

    def _error(self, event: dict[str, Any]) -> EngineError | None:
        error = event.get("error") or {}
        code = str(error.get("code") or "")
        if code == "response_cancel_not_active":
            return None  # harmless: the response had already finished
        if code == "input_audio_buffer_commit_empty":
            self._turn_ending = False
            return None  # harmless: turn detection had ended the turn already
        return EngineError(code, str(error.get("message") or ""), fatal=code in FATAL_ERRORS)

    async def _forget_context(self, response_id: str) -> None:
        context = self._responses.contexts.pop(response_id, None)
        if context is not None:  # answered: the passages must not be re-billed on every later turn
            await self._connection.send(protocol.delete_item(context))

    # ------------------------------------------------------------------ operations

    async def send_audio(self, audio: bytes) -> None:
        self._appended_bytes += len(audio)
        await self._connection.send(protocol.append_audio(audio))

    async def greet(self, text: str) -> None:
        await self._wait_idle()
        await self._connection.send(protocol.say_response(text))

    async def _wait_idle(self) -> None:
        """One response at a time per conversation: wait (a little) for the previous one."""
        try:
            async with asyncio.timeout(RESPONSE_IDLE_TIMEOUT_SECONDS):
                await self._responses.idle.wait()
        except TimeoutError:
            log.warning("asking for a response while the previous one is still active")

    async def add_caller_text(self, text: str) -> None:
        await self._connection.send(protocol.text_message("user", text))

    async def end_turn(self) -> None:
        self._turn_ending = True
        await self._connection.send(protocol.commit_audio())

    async def answer(self, *, context: str | None = None, tools: Sequence[ToolSpec] = (),
                     instructions: str | None = None) -> None:
        context_id = None
        if context is not None:
            self._contexts_sent += 1
            context_id = f"octi_context_{self._contexts_sent}"
            self._responses.context_waiting = context_id
        try:
            if context_id is not None:
                await self._connection.send(protocol.system_message(context_id, context))
            await self._wait_idle()
            await self._connection.send(protocol.response_create(instructions, [tool_object(t) for t in tools] or None))
        except asyncio.CancelledError:  # a barge-in before the answer was asked for
            if context_id is not None and self._responses.context_waiting == context_id:
                self._responses.context_waiting = None
                await self._connection.send(protocol.delete_item(context_id))
            raise

    async def cancel(self) -> None:
        # With interrupt_response the service cancelled it already when the caller spoke.
        if not self._auto_interrupt and self._responses.active is not None:
            await self._connection.send(protocol.cancel_response())

    async def cut(self, item: str, heard_ms: float) -> None:
        audio_end_ms = int(min(heard_ms, self._audio_ms.get(item, 0.0)))
        if audio_end_ms > 0:
            await self._connection.send(protocol.truncate_item(item, audio_end_ms))
        else:  # nothing was heard: a zero truncate can be refused, and the model said nothing
            await self.discard(item)

    async def discard(self, item: str) -> None:
        await self._connection.send(protocol.delete_item(item))

    async def tool_result(self, call: str, output: str, *, then_answer: bool = True) -> None:
        """The model carries on once the response that called the tool is over. A result for a
        session the connection dropped is dropped too: the new session knows nothing of the
        call, and is asked the caller's question again."""
        if call not in self._responses.tool_calls:
            log.warning("dropping the result of tool call %s: its session has been replaced", call)
            return
        self._responses.tool_calls.discard(call)
        await self._connection.send(protocol.function_output(call, output))
        if then_answer:
            await self.answer()

    async def summarize(self, instructions: str) -> Summary | None:
        if not await self._connection.send(protocol.out_of_band_text(instructions, "summary")):
            return None
        async for event in self._connection.events():
            if event["type"] != "response.done":
                continue
            try:
                response = event.get("response") or {}
                if (response.get("metadata") or {}).get("octi") != "summary":
                    continue
                texts = [part.get("text") or "" for item in response.get("output") or []
                         for part in item.get("content") or [] if part.get("type") == "output_text"]
                text = "".join(texts).strip()
            except MALFORMED_EVENT_ERRORS as exc:  # the call is over: the exchanges stand for it
                log.warning("malformed response.done for the recap: %r", exc)
                return None
            return Summary(text, response.get("usage") or None) if text else None
        return None

    async def recycle(self, conversation: Conversation) -> None:
        """A new service session with the same configuration and the conversation so far as
        text items (an answer the caller heard only part of ends with « … », so that the model
        knows it was cut off), then the next answer's context; the old session is closed once
        the new one is ready."""
        fresh = await RealtimeConnection.open(self._settings, session_update(self._settings, self._options))
        for exchange in conversation.exchanges:
            if exchange.text:
                text = f"{exchange.text} …" if exchange.cut else exchange.text
                await fresh.send(protocol.text_message("user" if exchange.role == "caller" else "assistant", text))
        responses = _Responses()
        responses.idle.set()
        if conversation.context is not None:
            self._contexts_sent += 1
            responses.context_waiting = f"octi_context_{self._contexts_sent}"
            await fresh.send(protocol.system_message(responses.context_waiting, conversation.context))
        old, self._connection = self._connection, fresh
        self._session_ends_at = None  # until the fresh session's `session.created` is read
        self._responses = responses
        self._audio_ms.clear()
        self._speech_start_ms.clear()
        self._session_start_ms = self.input_format.duration_ms(self._appended_bytes)
        self._turn_ending, self._last_stopped = False, ""
        await old.close()

    async def close(self) -> None:
        await self._connection.close()



