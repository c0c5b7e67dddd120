"""One websocket session of the double: its state and record, its lifecycle, and the dispatch of
client events to the parts that handle them (input audio, conversation items, responses)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import random
import string
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, Callable, Coroutine
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from app.simulators.realtime_double.caller_transcripts import CallerTranscripts
from app.simulators.realtime_double.conversation import ConversationItems
from app.simulators.realtime_double.formats import UNITS_PER_MS
from app.simulators.realtime_double.input_audio import InputAudio
from app.simulators.realtime_double.items import public_item, strip_audio
from app.simulators.realtime_double.records import (
    ClosedInfo,
    ConnectionScript,
    EventLog,
    ResponseRecord,
    TruncationRecord,
)
from app.simulators.realtime_double.responses import ResponseRuns
from app.simulators.realtime_double.session import (
    DEFAULT_MODEL, SESSION_LIFETIME_SECONDS, default_session, input_kind, updated_session,
)
from app.simulators.realtime_schema import ClientEventError, ParsedClientEvent, parse_client_event

if TYPE_CHECKING:
    from app.simulators.realtime_double.server import RealtimeDouble

# The double logs under one name, whichever of its modules speaks.
logger = logging.getLogger(__package__)

BETA_CLOSE_CODE = 4000
SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Please retry."
ID_ALPHABET = string.ascii_letters + string.digits


class DoubleConnection:
    """State and record of one websocket session."""

    def __init__(self, double: RealtimeDouble, ws: ServerConnection, index: int,
                 script: ConnectionScript | None) -> None:
        self.double = double
        self.index = index
        self._ws = ws
        request = ws.request
        assert request is not None
        self.path: str = request.path
        self.query: dict[str, str] = {k: v[-1] for k, v in parse_qs(urlsplit(request.path).query).items()}
        self.headers = request.headers
        self.model: str = self.query.get("model") or DEFAULT_MODEL
        self._ids = random.Random(f"{double.seed}:{index}:ids")

        script = script or ConnectionScript()
        self.transcripts: list[str] = list(script.transcripts if script.transcripts is not None else double.transcripts)
        self.answer_seconds: float = script.answer_seconds or double.answer_seconds
        self.greeting_seconds: float = script.greeting_seconds or double.greeting_seconds
        self.utterance_count = 0
        self.transcription_seconds: float = (script.transcription_seconds if script.transcription_seconds is not None
                                             else double.transcription_seconds)

        self._client_log = EventLog(double.history_limit)
        self._server_log = EventLog(double.history_limit)
        self.errors_sent: list[dict[str, Any]] = []
        self.responses: list[ResponseRecord] = []
        self.truncations: list[TruncationRecord] = []
        self.closed: ClosedInfo | None = None
        self._closed_event = asyncio.Event()
        self._server_closing = False

        self.conversation_id = self.new_id("conv")
        lifetime = double.session_max_seconds or SESSION_LIFETIME_SECONDS
        self.session: dict[str, Any] = default_session(self.new_id("sess"), self.model, double.instructions,
                                                       double.voice, lifetime)
        self.voice_locked = False  # set once assistant audio went out

        self.items = ConversationItems(self)
        self.runs = ResponseRuns(self)
        self.caller_transcripts = CallerTranscripts(self)
        self.input_audio = InputAudio(self)

        self._tasks: set[asyncio.Task[Any]] = set()
        self._closers: set[asyncio.Task[Any]] = set()
        self._expiry: asyncio.TimerHandle | None = None

        self._handlers: dict[str, Callable[[ParsedClientEvent], Any]] = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self.input_audio.on_append,
            "input_audio_buffer.commit": self.input_audio.on_commit,
            "input_audio_buffer.clear": self.input_audio.on_clear,
            "conversation.item.create": self.items.on_create,
            "conversation.item.delete": self.items.on_delete,
            "conversation.item.retrieve": self.items.on_retrieve,
            "conversation.item.truncate": self.items.on_truncate,
            "response.create": self.runs.on_create,
            "response.cancel": self.runs.on_cancel,
            "output_audio_buffer.clear": self._on_output_audio_buffer_clear,
        }

    # -- public inspection -----------------------------------------------------------------

    @property
    def client_events(self) -> deque[dict[str, Any]]:
        """Valid client events in arrival order (appends as {type, event_id?, audio_ms})."""
        return self._client_log.events

    @property
    def server_events(self) -> deque[dict[str, Any]]:
        """Server events in send order (audio deltas as {type, ids, audio_ms}, without audio)."""
        return self._server_log.events

    def timed_events(self) -> list[tuple[float, str, dict[str, Any]]]:
        """Both directions merged in time order: (time.monotonic(), "client" | "server", event)."""
        merged = [(at, "client", event) for at, event in zip(self._client_log.times, self._client_log.events)]
        merged += [(at, "server", event) for at, event in zip(self._server_log.times, self._server_log.events)]
        return sorted(merged, key=lambda entry: entry[0])

    @property
    def client_event_counts(self) -> Counter[str]:
        return self._client_log.counts

    @property
    def server_event_counts(self) -> Counter[str]:
        return self._server_log.counts

    @property
    def conversation(self) -> list[dict[str, Any]]:
        """The default conversation's items now, without audio."""
        return [public_item(item) for item in self.items.ordered]

    @property
    def active_response(self) -> ResponseRecord | None:
        return self.runs.active.record if self.runs.active else None

    @property
    def audio_ms_appended(self) -> int:
        """Milliseconds of input audio appended over the whole session."""
        return self.input_audio.total_units // UNITS_PER_MS

    @property
    def truncations_applied(self) -> int:
        """Times the conversation was cut to fit the truncation limit."""
        return self.runs.accounting.truncations_applied

    @property
    def live(self) -> bool:
        return self.closed is None

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], Any], timeout: float = 5.0, *, new_only: bool = False
    ) -> dict[str, Any]:
        """First client event (already received unless `new_only`, or future) matching `predicate`."""
        return await self._client_log.wait_for(predicate, timeout, "client event", new_only)

    async def wait_for_server(
        self, predicate: Callable[[dict[str, Any]], Any], timeout: float = 5.0, *, new_only: bool = False
    ) -> dict[str, Any]:
        """Same as `wait_for`, on the events the double sent."""
        return await self._server_log.wait_for(predicate, timeout, "server event", new_only)

    async def wait_closed(self, timeout: float = 5.0) -> ClosedInfo:
        async with asyncio.timeout(timeout):
            await self._closed_event.wait()
        assert self.closed is not None
        return self.closed

    # -- failure injection -----------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from the server side with a closing handshake."""
        self._server_closing = True
        await self._ws.close(code, reason)

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (the client sees 1006)."""
        self._server_closing = True
        self._ws.transport.abort()

    async def send_error_and_close(
        self,
        code: str | None = "server_error",
        message: str = SERVER_ERROR_MESSAGE,
        *,
        error_type: str = "server_error",
        close_code: int = 1011,
        reason: str = "",
    ) -> None:
        """Send an `error` event, then close; what an upstream failure looks like to the client."""
        with contextlib.suppress(ConnectionClosed):
            await self.send_error(code, message, error_type=error_type)
        await self.close(close_code, reason)

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        ws = self._ws
        logger.info("realtime double: connection %d opened (%s)", self.index, self.path)
        try:
            beta = (ws.request.headers.get("OpenAI-Beta") or "") if ws.request else ""
            if "realtime=v1" in beta.replace(" ", "").lower():
                # Since 2026-05-12 the service accepts the upgrade, explains, and closes.
                await self.send_error(
                    "beta_api_shape_disabled",
                    "The Realtime Beta API is no longer supported. Remove the 'OpenAI-Beta: realtime=v1' "
                    "header and use the GA Realtime API.",
                )
                await self.close(BETA_CLOSE_CODE, "beta_api_shape_disabled")
                return
            await self.send({"type": "session.created", "session": copy.deepcopy(self.session)})
            if self.double.session_max_seconds:
                self._expiry = asyncio.get_running_loop().call_later(self.double.session_max_seconds, self._expire)
            async for message in ws:
                await self._on_message(message)
        except ConnectionClosed:
            pass
        except Exception:
            # A bug in the double must look like what it is to the client: a server error.
            logger.exception("realtime double: connection %d failed", self.index)
            with contextlib.suppress(ConnectionClosed):
                await self.send_error(
                    "server_error", "The realtime double hit an internal error; see its log.", error_type="server_error"
                )
                await self.close(1011, "internal error")
        finally:
            await self._shutdown()

    def spawn(self, work: Coroutine[Any, Any, None], name: str | None = None) -> asyncio.Task[None]:
        """Run `work` beside the message loop; the connection cancels it when it closes."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _expire(self) -> None:
        minutes = self.double.session_max_seconds / 60 if self.double.session_max_seconds else 0
        shown = f"{minutes:g}"
        task = asyncio.get_running_loop().create_task(
            self.send_error_and_close(
                "session_expired",
                f"Your session hit the maximum duration of {shown} minutes.",
                error_type="invalid_request_error",
                close_code=1000,
                reason="session_expired",
            )
        )
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def _shutdown(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self.runs.abandon()
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Close (a no-op when already closed) so the close code is known when we record it.
        with contextlib.suppress(ConnectionClosed):
            await self._ws.close()
        closers = [task for task in self._closers if task is not asyncio.current_task()]
        await asyncio.gather(*closers, return_exceptions=True)
        protocol = self._ws.protocol
        if protocol.close_rcvd is None:
            initiated_by = "network"
        elif protocol.close_rcvd_then_sent or (protocol.close_rcvd_then_sent is None and not self._server_closing):
            initiated_by = "client"
        else:
            initiated_by = "server"
        code = self._ws.close_code
        self.closed = ClosedInfo(int(code) if code is not None else None, self._ws.close_reason or "", initiated_by)
        self._closed_event.set()
        logger.info("realtime double: connection %d closed (%s, by %s)", self.index, self.closed.code, initiated_by)

    # -- sending ---------------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{''.join(self._ids.choices(ID_ALPHABET, k=21))}"

    async def send(self, event: dict[str, Any], record: dict[str, Any] | None = None) -> None:
        """Send a server event; `record` is what the log keeps instead (the event without its audio)."""
        event["event_id"] = self.new_id("event")
        text = json.dumps(event, ensure_ascii=False)
        if self._ws.state is State.OPEN:
            if record is not None:
                record["event_id"] = event["event_id"]
            self._server_log.add(record if record is not None else event)
        await self._ws.send(text)

    async def send_error(
        self,
        code: str | None,
        message: str,
        param: str | None = None,
        *,
        client_event_id: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        error = {"type": error_type, "code": code, "message": message, "param": param, "event_id": client_event_id}
        self.errors_sent.append(dict(error))
        logger.debug("realtime double: connection %d error %s: %s", self.index, code, message)
        await self.send({"type": "error", "error": error})

    # -- receiving -------------------------------------------------------------------------

    async def _on_message(self, raw: str | bytes) -> None:
        try:
            event = parse_client_event(raw)
        except ClientEventError as exc:
            await self.send_error(
                exc.code, exc.message, exc.param, client_event_id=exc.event_id, error_type=exc.error_type
            )
            return
        handler = self._handlers.get(event.type, self._on_unsupported)
        units_before = self.input_audio.total_units
        try:
            await handler(event)
        except ClientEventError as exc:
            await self.send_error(
                exc.code, exc.message, exc.param, client_event_id=event.event_id, error_type=exc.error_type
            )
        # Recorded once handled, so a test woken by it sees the handling's effects.
        self._client_log.add(self._client_record(event, self.input_audio.total_units - units_before))

    @staticmethod
    def _client_record(event: ParsedClientEvent, units: int) -> dict[str, Any]:
        if event.type == "input_audio_buffer.append":
            record: dict[str, Any] = {"type": event.type, "audio_ms": units / UNITS_PER_MS}
            if event.event_id is not None:
                record["event_id"] = event.event_id
            return record
        if event.type == "conversation.item.create":
            return {**event.data, "item": strip_audio(event.data["item"])}
        return event.data

    async def _on_unsupported(self, event: ParsedClientEvent) -> None:
        raise ClientEventError(None, f"The realtime double does not implement '{event.type}' yet.")

    async def _on_output_audio_buffer_clear(self, event: ParsedClientEvent) -> None:
        raise ClientEventError(
            None,
            "output_audio_buffer.clear is only supported for WebRTC and SIP connections; over a "
            "WebSocket, send response.cancel and flush your own playback buffer.",
        )

    async def _on_session_update(self, event: ParsedClientEvent) -> None:
        session = updated_session(self.session, event.data["session"], voice_locked=self.voice_locked)
        previous_kind = input_kind(self.session)
        self.session = session
        self.input_audio.session_updated(previous_kind)
        await self.send({"type": "session.updated", "session": copy.deepcopy(session)})

    # -- the script ------------------------------------------------------------------------

    def next_transcript(self) -> str:
        """What the caller said in their next utterance, as the script has it."""
        number = self.utterance_count
        self.utterance_count += 1
        if number < len(self.transcripts):
            return self.transcripts[number]
        if self.transcripts and self.double.cycle_transcripts:
            return self.transcripts[number % len(self.transcripts)]
        return f"[question de l'appelant n°{number + 1}]"
