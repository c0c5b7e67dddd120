"""GPT-Live as an `Engine` with service-driven turns (`ENGINE=gpt-live`).

The model listens while it speaks and takes its own turns: no client event asks for an
answer, cancels or cuts one; the session hears what the model did (`AnswerStarted`,
`Yielded`, see `translator` for the mapping). Audio is μ-law 8 kHz both ways, the telephone's
own: nothing is transcoded. Every question the model delegates comes to us as a tool call (the caller's words
routed to search_knowledge, transfer_to_human or end_call); its result goes back on the
delegation, as commentary to say, or as silent thinking when nothing is to be said. A result
whose session was replaced meanwhile goes to the new session outside any delegation: the
service knows a delegation's id only in the session that made it. A typed question is not
heard, so not delegated: the session searches it, and its passages come as commentary outside
any delegation (`answer` with a context); so do those of a question a lost session did not
answer in full.

The session is started (`session.start`) and ready (`session.started`) before `open` returns,
so a pre-warmed engine takes audio at once. A new session (`recycle`) starts with the
conversation so far as initial items: GPT-Live's context is append-only, this is how it is
carried over. `session.started` announces when the service will end the session
(`expires_at`): the call renews it before then (`app.agent.resilience`).

The greeting (`GPT_LIVE_GREETING`): the model's first turn, or (`fixture`) the model's greeting
of an earlier call played back by the service as a fixture (`greeting`); without a clip for this
greeting, or when the service refuses it, the model says it, and it is kept for the next calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from time import perf_counter
from typing import Any

from app.agent import phrases
from app.agent.tools import RECAP_BY_SMS, call_tools
from app.audio.formats import TELEPHONE_ULAW
from app.audio.g711 import ulaw_level
from app.config import Settings
from app.engines.contract import (
    Conversation, EngineError, EngineEvent, EngineTraits, EngineUnavailable, Summary, ToolCall, ToolSpec,
    announced_end,
)
from app.engines.gpt_live import greeting, protocol
from app.engines.gpt_live.greeting import GreetingRecorder
from app.engines.gpt_live.translator import LOUD_RMS, LiveTranslator, live_usage
from app.engines.openai_realtime.connection import RealtimeConnection

log = logging.getLogger(__name__)

# How often, without a server event, the engine checks whether the model went quiet.
TICK_SECONDS = 0.1
# `fixture.played` is not sent for cancelled playback (openai.types.live): this long after a
# fixture should have ended, what waited for its end goes anyway.
FIXTURE_GRACE_SECONDS = 3.0
FINAL_USAGE_WAIT_SECONDS = 2.0  # for `session.closed` and its final usage, once the call is over
MALFORMED_EVENT_ERRORS = (KeyError, TypeError, ValueError, AttributeError)


async def _started(connection: RealtimeConnection, timeout: float) -> dict[str, Any]:
    """Wait for `session.started` (EngineUnavailable on an error, a close or the timeout)."""
    events = connection.events()
    try:
        async with asyncio.timeout(timeout):
            async for event in events:
                if event["type"] == "session.started":
                    return event
                if event["type"] == "error":
                    error = event.get("error") or {}
                    raise EngineUnavailable(f"the live service refused the session: {error.get('code')}: "
                                            f"{error.get('message')}")
    except TimeoutError:
        raise EngineUnavailable("the live session did not start in time") from None
    finally:
        await events.aclose()
    raise EngineUnavailable("the live websocket closed before the session started")


def spoken_result(output: str) -> str:
    """A tool's JSON result as text for the model to speak from: passages as « title » : text."""
    try:
        result = json.loads(output)
    except ValueError:
        return output
    if isinstance(result, dict) and isinstance(result.get("passages"), list):
        passages = [f"« {p.get('title', '')} » : {p.get('text', '')}" for p in result["passages"] if isinstance(p, dict)]
        if not passages:
            return "La base de connaissances n'a rien sur cette question : dis-le simplement à l'éleveur."
        return "Réponds à l'éleveur à partir de ces fiches :\n" + "\n".join(passages)
    if isinstance(result, dict) and "error" in result:
        return f"Erreur : {result['error']}. Explique-le simplement à l'éleveur."
    return output


class GptLiveEngine:
    traits = EngineTraits(turns="service", cuts_answers=False, streams_caller_words=True)
    input_format = output_format = TELEPHONE_ULAW

    def __init__(self, connection: RealtimeConnection, settings: Settings, ends_at: float | None) -> None:
        self._connection = connection
        self._session_ends_at = ends_at
        self._settings = settings
        self._sessions = 1
        self._translator = LiveTranslator(prefix="live1")
        self._delegations: set[str] = set()  # the ids of the current session's delegations
        self._greeted = False
        self._fixture_greeting: str | None = None  # its text, until the service took the fixture
        # Appends while a fixture plays (the service refuses them), sent once it has played.
        self._held_appends: list[dict[str, Any]] = []
        self._fixture_deadline = float("inf")  # when its end is no longer waited for
        self._recorder: GreetingRecorder | None = None  # the model's greeting, kept as its clip
        # The events' reader, and the connection it reads (the old one, a moment after a recycle).
        self._reading: tuple[RealtimeConnection, asyncio.Task[None]] | None = None
        # `session.closed` awaited, per connection whose session we asked to end.
        self._closing: dict[RealtimeConnection, asyncio.Future[dict[str, Any]]] = {}

    @classmethod
    async def open(cls, settings: Settings) -> GptLiveEngine:
        connection, ends_at = await cls._start(settings, Conversation())
        return cls(connection, settings, ends_at)

    @staticmethod
    async def _start(settings: Settings, conversation: Conversation) -> tuple[RealtimeConnection, float | None]:
        """A started session, and when the service will end it (`session.started`'s `expires_at`)."""
        instructions = protocol.conversation_instructions(RECAP_BY_SMS in call_tools(settings))
        start = protocol.session_start(settings.gpt_live_model, settings.openai_voice, instructions,
                                       history=conversation.exchanges, context=conversation.context)
        connection = await RealtimeConnection.open(settings, start, url=settings.gpt_live_url)
        try:
            started = await _started(connection, settings.realtime_connect_timeout_seconds)
        except BaseException:  # refused, silent, or cancelled (a pre-warm let go): the session goes
            connection.close_soon()
            raise
        session = started.get("session") or {}
        log.info("live session %s started", session.get("id"))
        return connection, announced_end(session.get("expires_at"))

    @property
    def is_open(self) -> bool:
        return self._connection.is_open

    @property
    def close_reason(self) -> str:
        return f"live connection closed (code {self._connection.close_code})"

    @property
    def session_ends_at(self) -> float | None:
        return self._session_ends_at

    # ------------------------------------------------------------------ events

    async def events(self) -> AsyncIterator[EngineEvent]:
        """Until the connection ends, across recycles; a fatal error closes the session here."""
        while True:
            connection, translator, delegations = self._connection, self._translator, self._delegations
            queue: asyncio.Queue[tuple[dict[str, Any], float] | None] = asyncio.Queue()
            reader = asyncio.create_task(self._read(connection, queue), name="live-reader")
            self._reading = connection, reader
            try:
                while True:
                    try:
                        # Not wait_for: on Python 3.11 it can swallow the call's cancellation when
                        # the queue answers at the same moment, and this loop would never end.
                        async with asyncio.timeout(TICK_SECONDS):
                            received = await queue.get()
                    except TimeoutError:
                        received = ()
                    if received is None:
                        break
                    translated: list[EngineEvent] = []
                    if received:
                        event, at = received
                        if self._fixture_greeting is not None and greeting.fixture_refused(event):
                            await self._fixture_refused(event)
                        elif event["type"] == "session.output_audio.fixture.played":
                            await self._fixture_over()
                        try:
                            translated = translator.translate(event, at)
                        except MALFORMED_EVENT_ERRORS as exc:
                            log.warning("dropping a malformed %s event from the live server: %r", event["type"], exc)
                    now = perf_counter()
                    translated += translator.tick(now)
                    if translator.fixture_playing and now > self._fixture_deadline:
                        log.warning("the greeting's fixture never said it had played: what waited for it goes now")
                        await self._fixture_over()
                    for engine_event in translated:
                        if self._recorder is not None:
                            await self._record_greeting(engine_event)
                        if isinstance(engine_event, ToolCall):
                            delegations.add(engine_event.call)
                        yield engine_event
                        if isinstance(engine_event, EngineError) and engine_event.fatal:
                            await connection.close()
            finally:
                reader.cancel()
            if self._connection is connection:
                return

    async def _read(self, connection: RealtimeConnection,
                    queue: asyncio.Queue[tuple[dict[str, Any], float] | None]) -> None:
        try:
            async for event in connection.events():
                queue.put_nowait((event, connection.last_received_at))
                closing = self._closing.get(connection)
                if event["type"] == "session.closed" and closing is not None and not closing.done():
                    closing.set_result(event)
        finally:
            queue.put_nowait(None)

    # ------------------------------------------------------------------ operations

    async def send_audio(self, audio: bytes) -> None:
        if ulaw_level(audio) >= LOUD_RMS:
            self._translator.caller_sound(perf_counter())
        await self._connection.send(protocol.append_audio(audio))

    async def greet(self, text: str) -> None:
        """The call's greeting (its first `greet`), or a notice said mid-call."""
        first, self._greeted = not self._greeted, True
        if first and self._settings.gpt_live_greeting == "fixture" and text == self._usual_greeting:
            path = greeting.clip_path(self._settings, text)
            clip = await asyncio.to_thread(greeting.load_clip, path)
            if clip is not None:
                self._fixture_greeting, self._translator.fixture_text = text, clip.transcript or text
                # The model did not say it: it should know it was said.
                await self._connection.send(protocol.thinking(f"Tu as déjà salué l'éleveur : « {text} »", None))
                self._translator.fixture_playing = True  # from now on, not only once `playing` comes
                self._fixture_deadline = perf_counter() + clip.seconds + FIXTURE_GRACE_SECONDS
                await self._connection.send(greeting.fixture_play(clip))
                return
            self._recorder = GreetingRecorder(path)
        await self._append(protocol.say(text))

    @property
    def _usual_greeting(self) -> str:
        """What every inbound call hears first: the only greeting kept as a clip (a call-back's
        names its question, a clip of it would never play again)."""
        settings = self._settings
        return phrases.greeting(settings.agent_greeting, None, recorded=settings.record_calls)

    async def _fixture_refused(self, event: dict[str, Any]) -> None:
        text, self._fixture_greeting = self._fixture_greeting, None
        self._translator.fixture_text = None
        log.warning("the live service refused the greeting's fixture (%s): the model says it, and what it says "
                    "replaces the clip", (event.get("error") or {}).get("code"))
        assert text is not None
        self._recorder = GreetingRecorder(greeting.clip_path(self._settings, text))
        await self._connection.send(protocol.say(text))
        await self._fixture_over()

    async def _fixture_over(self) -> None:
        """The service takes appends again: those that waited go, in order."""
        self._translator.fixture_playing = False
        self._fixture_deadline = float("inf")
        held, self._held_appends = self._held_appends, []
        for event in held:
            await self._connection.send(event)

    async def _append(self, event: dict[str, Any]) -> None:
        """Commentary, thinking: sent, or held while a fixture plays (the service would refuse it)."""
        if self._translator.fixture_playing:
            self._held_appends.append(event)
        else:
            await self._connection.send(event)

    async def _record_greeting(self, event: EngineEvent) -> None:
        recorder = self._recorder
        assert recorder is not None
        complete = recorder.observe(event)
        if complete is None:
            return
        self._recorder = None
        if not complete:
            return
        try:
            await asyncio.to_thread(greeting.save_clip, recorder.path, recorder.spoken(), recorder.transcript.strip())
        except OSError as exc:
            log.warning("could not keep the model's greeting as a clip: %s", exc)
            return
        log.info("the model's greeting is kept for the next calls' fixture (%s)", recorder.path.name)

    async def add_caller_text(self, text: str) -> None:
        """Silent: the model knows the written words; `answer` brings their passages to say."""
        await self._append(protocol.thinking(f"L'éleveur a écrit : « {text} »", None))

    async def end_turn(self) -> None:
        """Nothing to send: the model decides when the caller's turn is over."""

    async def answer(self, *, context: str | None = None, tools: Sequence[ToolSpec] = (),
                     instructions: str | None = None) -> None:
        """No client event creates a response: the model answers what it heard by itself. A
        question it will not delegate (typed, so not heard, or asked in a session since lost)
        comes with its passages (`context`): commentary outside any delegation, which the model
        says. Tools and instructions have no place here."""
        if context is not None:
            await self._append(protocol.answer_with(context))

    async def cancel(self) -> None:
        """No client event stops the model: it stops by itself when the caller takes the floor.
        Stopped otherwise (the interrupt button, a typed question, a goodbye), it goes on unheard:
        the session mutes the rest, and the model is told in silence, as a cut tells the Realtime API."""
        if not self._translator.fixture_playing:  # a fixture cannot be stopped: nothing to tell
            await self._connection.send(protocol.answer_stopped())

    async def cut(self, item: str, heard_ms: float) -> None:
        """Nothing to send: the context is append-only, the service keeps what it said."""

    async def discard(self, item: str) -> None:
        """Nothing to send: the context is append-only."""

    async def tool_result(self, call: str, output: str, *, then_answer: bool = True) -> None:
        """The delegation's result: said (commentary) or only known (thinking). A delegation of a
        session since replaced is unknown to the current one: its result goes outside any."""
        delegation = call if call in self._delegations else None
        if then_answer:
            await self._append(protocol.commentary(spoken_result(output), delegation))
        else:
            await self._append(protocol.thinking(output, delegation))

    async def summarize(self, instructions: str) -> Summary | None:
        """GPT-Live has no out-of-band text response: the session records the exchanges instead."""
        return None

    async def recycle(self, conversation: Conversation) -> None:
        fresh, ends_at = await self._start(self._settings, conversation)
        old, old_translator = self._connection, self._translator
        self._sessions += 1
        self._connection, self._session_ends_at = fresh, ends_at
        self._translator = LiveTranslator(prefix=f"live{self._sessions}")
        self._delegations = set()
        await self._fixture_over()  # the new session plays no fixture: what waited goes to it
        # The old session's last seconds come in its `session.closed`: the events' reader, still
        # on the old connection until it closes, turns them into usage (old_translator's).
        await self._end_session(old, old_translator)

    async def close(self) -> dict[str, Any] | None:
        """Ends the session; returns what `session.closed` billed since the last report (None
        when it does not come within FINAL_USAGE_WAIT_SECONDS: the call's end is not held up)."""
        closed = await self._end_session(self._connection, self._translator)
        if closed is None:
            return None
        try:
            return live_usage(closed["usage"], self._translator.usage)
        except MALFORMED_EVENT_ERRORS as exc:
            log.warning("malformed session.closed: %r", exc)
            return None

    async def _end_session(self, connection: RealtimeConnection, translator: LiveTranslator) -> dict[str, Any] | None:
        """Ask the service to end the session on `connection`, wait a little for its
        `session.closed` (returned), then close the socket. The event is read by the events'
        reader when one reads this connection (a socket takes one reader), else by one of its own.
        A lost connection has nothing to wait for: its last seconds are not counted."""
        if not connection.is_open:
            return None
        translator.closed_by_us = True
        closing = self._closing[connection] = asyncio.get_running_loop().create_future()  # before the answer can come
        own = None
        if self._reading is None or self._reading[0] is not connection or self._reading[1].done():
            own = asyncio.create_task(self._read(connection, asyncio.Queue()), name="live-close-reader")
        try:
            await connection.send(protocol.session_close())
            async with asyncio.timeout(FINAL_USAGE_WAIT_SECONDS):
                return await closing
        except TimeoutError:
            log.info("no session.closed within %.0f s: its last seconds are not counted", FINAL_USAGE_WAIT_SECONDS)
            return None
        finally:
            del self._closing[connection]
            if own is not None:
                own.cancel()
            await connection.close()
