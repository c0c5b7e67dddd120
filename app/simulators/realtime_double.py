"""A websocket double of the OpenAI Realtime GA API, for offline calls, integration tests and load runs.

Point ``OPENAI_REALTIME_URL`` at it (``python -m app.simulators.realtime_double``) to try the phone
line without OpenAI. It speaks the GA protocol strictly enough to catch client mistakes:

* every client event is validated against the openai SDK's pydantic models, unknown keys
  included, and rejected with the service's error codes, messages and ``param`` paths;
* turn detection is an energy VAD that runs on the audio timeline (ms of audio appended), not
  the wall clock, so the same audio always gives the same events;
* answers stream slices of a real French recording, in varying chunk sizes and faster than real
  time, with the matching part of its text as transcript;
* cancellation, barge-in, truncation and the one-active-response rule behave like the service.

What it cannot do, it scripts: the transcript of the n-th caller utterance comes from a list,
delivered as the configured transcription model would (`app.simulators.transcriber`: streamed
while the caller speaks, or after the commit).
Each connection keeps a record (events both ways, errors, responses, truncations) that tests
can inspect or await.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import json
import logging
import math
import random
import string
import sys
import time
import wave
import warnings
from collections import Counter, deque
from dataclasses import dataclass, field
from functools import cache
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, urlsplit

import click
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from app.cli_support import HELP_OPTIONS
from app.engines.openai_realtime import models
from app.simulators import transcriber
from app.simulators.realtime_schema import ClientEventError, ParsedClientEvent, parse_client_event
from app.simulators.transcriber import StreamedUtterance

with warnings.catch_warnings():
    # audioop is deprecated in 3.11/3.12 (audioop-lts replaces it from 3.13); it is what we want.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "ClosedInfo",
    "DoubleConnection",
    "EnergyVad",
    "RealtimeDouble",
    "RejectedHandshake",
    "ResponseRecord",
    "TruncationRecord",
    "VoiceAsset",
    "cli",
    "load_voice_asset",
]

logger = logging.getLogger(__name__)

ASSET_PATH = Path(__file__).with_name("assets") / "octi_voice.wav"
ASSET_TEXT = (
    "Pour des œufs de poule, réglez la couveuse à trente-sept virgule sept degrés, avec une humidité "
    "de cinquante à cinquante-cinq pour cent. Retournez les œufs plusieurs fois par jour jusqu'au "
    "dix-huitième jour. Ensuite, arrêtez le retournement et montez l'humidité vers soixante-cinq pour "
    "cent pour l'éclosion. Vérifiez votre thermomètre avec un deuxième appareil, car une erreur d'un "
    "demi-degré suffit à faire chuter le taux d'éclosion."
)

DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "alloy"
DEFAULT_INSTRUCTIONS = (
    "You are a helpful, friendly voice assistant. Answer briefly and clearly, in the language "
    "the user speaks. (Default instructions of the OpenAI Realtime double.)"
)
DEFAULT_PATH = "/v1/realtime"
SESSION_LIFETIME_SECONDS = 3600
BETA_CLOSE_CODE = 4000

DEFAULT_SERVER_VAD: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
DEFAULT_SEMANTIC_VAD: dict[str, Any] = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}
# Semantic VAD waits for a plausible end of turn; an energy VAD can only wait longer or shorter.
SEMANTIC_SILENCE_MS = {"low": 1500, "medium": 800, "auto": 800, "high": 400}
SEMANTIC_PREFIX_MS = 300

MIN_COMMIT_MS = 100
SPEECH_START_MS = 100  # energy above threshold this long starts a turn
VAD_WINDOW_MS = 10
DELTA_MS_RANGE = (20, 250)

UNITS_PER_MS = 48  # timeline unit = 1/48000 s: a whole number of units per sample at 8 and 24 kHz
FORMAT_KINDS = {"audio/pcm": "pcm", "audio/pcmu": "pcmu", "audio/pcma": "pcma"}
_RATE = {"pcm": 24000, "pcmu": 8000, "pcma": 8000}
BYTES_PER_MS = {"pcm": 48, "pcmu": 8, "pcma": 8}
ID_ALPHABET = string.ascii_letters + string.digits
KEEP_ON_NULL = frozenset({"instructions", "output_modalities", "tools", "tool_choice", "max_output_tokens"})
_VOICE_LOCKED_MESSAGE = "Cannot update a conversation's voice if assistant audio is present."


# ---------------------------------------------------------------------------------------------
# Voice asset


@dataclass(frozen=True)
class VoiceAsset:
    """The recording answers are cut from, pre-encoded in every output format."""

    audio: dict[str, bytes]  # "pcm" (PCM16 24 kHz), "pcmu" and "pcma" (G.711 8 kHz)
    duration_ms: int
    text: str

    def slice_audio(self, kind: str, start_ms: int, duration_ms: int) -> bytes:
        """`duration_ms` of audio from `start_ms`, wrapping around the end of the recording."""
        data, per_ms = self.audio[kind], BYTES_PER_MS[kind]
        out = bytearray()
        position, left = start_ms % self.duration_ms, duration_ms
        while left > 0:
            take = min(left, self.duration_ms - position)
            out += data[position * per_ms : (position + take) * per_ms]
            left -= take
            position = 0
        return bytes(out)

    def transcript(self, start_ms: int, duration_ms: int) -> str:
        """The words spoken in that span, by proportion of the text (the asset has no timings)."""
        text, length = self.text, len(self.text)
        pieces: list[str] = []
        position, left = start_ms % self.duration_ms, duration_ms
        while left > 0:
            take = min(left, self.duration_ms - position)
            begin = snap_to_word(text, round(position * length / self.duration_ms))
            end = snap_to_word(text, round((position + take) * length / self.duration_ms))
            piece = text[begin:end].strip()
            if piece:
                pieces.append(piece)
            left -= take
            position = 0
        return " ".join(pieces)


def snap_to_word(text: str, index: int) -> int:
    """Move a character index forward to the start of a word, so slices hold whole words."""
    if index <= 0:
        return 0
    if index >= len(text):
        return len(text)
    if text[index - 1].isspace():
        return index
    following = text.find(" ", index)
    return len(text) if following < 0 else following + 1


@cache
def load_voice_asset(path: Path = ASSET_PATH) -> VoiceAsset:
    """Read the WAV once per process and encode it for every output format up front, so
    streaming an answer is only slicing."""
    with wave.open(str(path), "rb") as wav:
        shape = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
        if shape != (1, 2, 24000):
            raise ValueError(f"{path}: expected PCM16 mono 24 kHz, got channels/width/rate {shape}")
        pcm = wav.readframes(wav.getnframes())
    duration_ms = len(pcm) // BYTES_PER_MS["pcm"]
    pcm = pcm[: duration_ms * BYTES_PER_MS["pcm"]]
    narrow, _ = audioop.ratecv(pcm, 2, 1, 24000, 8000, None)
    narrow = narrow[: duration_ms * 16].ljust(duration_ms * 16, b"\0")
    return VoiceAsset(
        audio={"pcm": pcm, "pcmu": audioop.lin2ulaw(narrow, 2), "pcma": audioop.lin2alaw(narrow, 2)},
        duration_ms=duration_ms,
        text=ASSET_TEXT,
    )


# ---------------------------------------------------------------------------------------------
# Turn detection


def threshold_to_rms(threshold: float) -> float:
    """Map the API's 0..1 VAD threshold onto PCM16 RMS: 0.5 is -40 dBFS (about 328).

    Phone speech sits around -30..-15 dBFS in 10 ms windows; line noise and μ-law idle
    codes sit far below -55 dBFS, the floor at threshold 0.
    """
    return 32768.0 * 10 ** ((-55.0 + 30.0 * threshold) / 20.0)


class EnergyVad:
    """Energy turn detector on the audio timeline, in 10 ms windows.

    Speech starts after SPEECH_START_MS of consecutive windows at or above the threshold (the
    onset is the first of them) and stops after `silence_ms` of consecutive windows below it.
    Positions are timeline units (1/48000 s) counted from the first byte ever appended.
    """

    def __init__(self, threshold: float = 0.5, silence_ms: int = 500) -> None:
        self.threshold_rms = threshold_to_rms(threshold)
        self.silence_ms = silence_ms
        self.position = 0
        self.speaking = False
        self._pending = b""
        self._voiced_ms = 0
        self._silent_ms = 0
        self._onset = 0

    def configure(self, threshold: float, silence_ms: int) -> None:
        self.threshold_rms = threshold_to_rms(threshold)
        self.silence_ms = silence_ms

    def reset(self, position: int) -> None:
        """Forget any turn in progress and resume at `position` (after a commit, clear or format change)."""
        self.position = position
        self.speaking = False
        self._pending = b""
        self._voiced_ms = self._silent_ms = 0

    def feed(self, pcm: bytes, rate: int) -> list[tuple[str, int]]:
        """Consume PCM16 at `rate`; return ("start", onset) / ("stop", end) events in order."""
        data = self._pending + pcm if self._pending else pcm
        window = rate // 1000 * VAD_WINDOW_MS * 2
        step = VAD_WINDOW_MS * UNITS_PER_MS
        view = memoryview(data)
        events: list[tuple[str, int]] = []
        offset = 0
        while offset + window <= len(data):
            voiced = audioop.rms(view[offset : offset + window], 2) >= self.threshold_rms
            start = self.position
            self.position += step
            offset += window
            if not self.speaking:
                if voiced:
                    if self._voiced_ms == 0:
                        self._onset = start
                    self._voiced_ms += VAD_WINDOW_MS
                    if self._voiced_ms >= SPEECH_START_MS:
                        self.speaking = True
                        self._silent_ms = 0
                        events.append(("start", self._onset))
                else:
                    self._voiced_ms = 0
            elif voiced:
                self._silent_ms = 0
            else:
                self._silent_ms += VAD_WINDOW_MS
                if self._silent_ms >= self.silence_ms:
                    self.speaking = False
                    self._voiced_ms = 0
                    events.append(("stop", self.position))
        self._pending = bytes(view[offset:])
        return events


# ---------------------------------------------------------------------------------------------
# Records


@dataclass
class ResponseRecord:
    """One response, as the double generated it."""

    id: str
    trigger: str  # "client" (response.create) or "turn_detection"
    conversation: str  # "auto" or "none"
    instructions: str  # effective: response.instructions if given (it replaces the session's)
    input_items: list[dict[str, Any]]  # what the model was given (response.input, else the conversation)
    conversation_items: list[dict[str, Any]]  # the default conversation when the response was created
    output_modalities: list[str]
    voice: Any
    output_format: dict[str, Any]
    metadata: dict[str, str] | None
    kind: str  # "greeting" (the connection's first response) or "answer"
    planned_ms: int
    item_id: str
    status: str = "in_progress"  # then completed, cancelled or incomplete
    status_reason: str | None = None  # turn_detected, client_cancelled, max_output_tokens, connection_closed
    audio_ms: int = 0  # audio generated (sent) so far
    transcript: str = ""  # what the client received as transcript/text
    usage: dict[str, Any] | None = None
    function_call: dict[str, Any] | None = None  # {call_id, name, arguments} when the model called a tool


@dataclass(frozen=True)
class TruncationRecord:
    item_id: str
    content_index: int
    audio_end_ms: int
    item_audio_ms: int  # the item's audio length when the truncate arrived
    response_id: str | None


@dataclass(frozen=True)
class ClosedInfo:
    code: int | None
    reason: str
    initiated_by: str  # "client", "server" or "network" (no closing handshake)


@dataclass(frozen=True)
class RejectedHandshake:
    path: str
    status: int
    reason: str


@dataclass
class _Script:
    transcripts: list[str] | None = None
    answer_seconds: float | None = None
    greeting_seconds: float | None = None
    transcription_seconds: float | None = None


@dataclass(eq=False)
class _Item:
    data: dict[str, Any]  # public JSON shape, never with audio
    audio_ms: int = 0  # input audio, or output audio left after truncation
    generated_ms: int = 0  # output audio generated for it
    heard: str | None = None  # a user message's words, known to the model before any transcript
    truncated_away: bool = False  # dropped from the model's input by the session's truncation
    input_audio: dict[int, str] = field(default_factory=dict)  # client-sent base64 by content index
    run: _Run | None = None


@dataclass(eq=False)
class _Run:
    record: ResponseRecord
    item: _Item
    context: list[_Item]
    audio: bool
    format_kind: str
    asset_start: int
    script: str
    max_output_tokens: Any
    tools: list[Any]
    limit_reason: str | None
    oob: bool
    task: asyncio.Task[None] | None = None
    sent_chars: int = 0
    done: bool = False


def _public(item: _Item) -> dict[str, Any]:
    data = item.data
    if "content" in data:
        return {**data, "content": [dict(part) for part in data["content"]]}
    return dict(data)


def _strip_audio(item: dict[str, Any]) -> dict[str, Any]:
    content = item.get("content")
    if not isinstance(content, list) or not any(isinstance(p, dict) and "audio" in p for p in content):
        return item
    return {**item, "content": [{k: v for k, v in p.items() if k != "audio"} for p in content]}


class _EventLog:
    """Bounded history of events plus one-shot waiters on a predicate."""

    __slots__ = ("events", "times", "counts", "_waiters")

    def __init__(self, limit: int | None) -> None:
        self.events: deque[dict[str, Any]] = deque(maxlen=limit)
        self.times: deque[float] = deque(maxlen=limit)  # time.monotonic() of each event
        self.counts: Counter[str] = Counter()
        self._waiters: list[tuple[Callable[[dict[str, Any]], Any], asyncio.Future[dict[str, Any]]]] = []

    def add(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.times.append(time.monotonic())
        self.counts[event["type"]] += 1
        for predicate, future in self._waiters:
            if future.done():
                continue
            try:
                if predicate(event):
                    future.set_result(event)
            except Exception as exc:  # a broken predicate should fail the waiting test, not us
                future.set_exception(exc)

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], Any], timeout: float, what: str, new_only: bool
    ) -> dict[str, Any]:
        if not new_only:
            for event in self.events:
                if predicate(event):
                    return event
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            recent = [event["type"] for event in list(self.events)[-12:]]
            raise TimeoutError(f"no matching {what} within {timeout}s; most recent: {recent}") from None
        finally:
            self._waiters.remove(entry)


# ---------------------------------------------------------------------------------------------
# One connection


class DoubleConnection:
    """State and record of one websocket session."""

    def __init__(self, double: RealtimeDouble, ws: ServerConnection, index: int, script: _Script | None) -> None:
        self.double = double
        self.index = index
        self._ws = ws
        request = ws.request
        assert request is not None
        self.path: str = request.path
        self.query: dict[str, str] = {k: v[-1] for k, v in parse_qs(urlsplit(request.path).query).items()}
        self.headers = request.headers
        self.model: str = self.query.get("model") or DEFAULT_MODEL

        seed = f"{double.seed}:{index}"
        self._ids = random.Random(f"{seed}:ids")
        self._rng = random.Random(f"{seed}:deltas")  # delta sizes only, so they stay reproducible

        script = script or _Script()
        self.transcripts: list[str] = list(script.transcripts if script.transcripts is not None else double.transcripts)
        self.answer_seconds: float = script.answer_seconds or double.answer_seconds
        self.greeting_seconds: float = script.greeting_seconds or double.greeting_seconds
        self.utterance_count = 0
        self.transcription_seconds: float = (script.transcription_seconds if script.transcription_seconds is not None
                                             else double.transcription_seconds)
        self._streams: dict[str, StreamedUtterance] = {}

        self._client_log = _EventLog(double.history_limit)
        self._server_log = _EventLog(double.history_limit)
        self.errors_sent: list[dict[str, Any]] = []
        self.responses: list[ResponseRecord] = []
        self.truncations: list[TruncationRecord] = []
        self.closed: ClosedInfo | None = None
        self._closed_event = asyncio.Event()
        self._server_closing = False

        self.conversation_id = self._new_id("conv")
        self.session: dict[str, Any] = self._default_session()
        self.voice_locked = False

        self._items: list[_Item] = []
        self._by_id: dict[str, _Item] = {}
        self._active: _Run | None = None  # the response writing to the default conversation
        self._runs: set[_Run] = set()  # every unfinished response, out-of-band ones included
        self._responses_started = 0
        self._asset_cursor = 0
        # (instructions, text tokens, audio tokens, truncations so far) of the previous response's input
        self._last_input: tuple[str, int, int, int] | None = None
        self.truncations_applied = 0  # times the conversation was cut to fit the truncation limit

        self._total_units = 0
        self._buffer_start_units = 0
        self._carry = b""
        self._speech_item_id: str | None = None
        self._speech_start_units = 0
        self._vad = EnergyVad()
        self._vad_on = False
        self._configure_turn_detection()

        self._tasks: set[asyncio.Task[Any]] = set()
        self._closers: set[asyncio.Task[Any]] = set()
        self._expiry: asyncio.TimerHandle | None = None

        self._handlers: dict[str, Callable[[ParsedClientEvent], Any]] = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.delete": self._on_item_delete,
            "conversation.item.retrieve": self._on_item_retrieve,
            "conversation.item.truncate": self._on_item_truncate,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
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
        return [_public(item) for item in self._items]

    @property
    def active_response(self) -> ResponseRecord | None:
        return self._active.record if self._active else None

    @property
    def audio_ms_appended(self) -> int:
        """Milliseconds of input audio appended over the whole session."""
        return self._total_units // UNITS_PER_MS

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
        message: str = "The server had an error while processing your request. Please retry.",
        *,
        error_type: str = "server_error",
        close_code: int = 1011,
        reason: str = "",
    ) -> None:
        """Send an `error` event, then close; what an upstream failure looks like to the client."""
        with contextlib.suppress(ConnectionClosed):
            await self._send_error(code, message, error_type=error_type)
        await self.close(close_code, reason)

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        ws = self._ws
        logger.info("realtime double: connection %d opened (%s)", self.index, self.path)
        try:
            beta = (ws.request.headers.get("OpenAI-Beta") or "") if ws.request else ""
            if "realtime=v1" in beta.replace(" ", "").lower():
                # Since 2026-05-12 the service accepts the upgrade, explains, and closes.
                await self._send_error(
                    "beta_api_shape_disabled",
                    "The Realtime Beta API is no longer supported. Remove the 'OpenAI-Beta: realtime=v1' "
                    "header and use the GA Realtime API.",
                )
                await self.close(BETA_CLOSE_CODE, "beta_api_shape_disabled")
                return
            await self._send({"type": "session.created", "session": copy.deepcopy(self.session)})
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
                await self._send_error(
                    "server_error", "The realtime double hit an internal error; see its log.", error_type="server_error"
                )
                await self.close(1011, "internal error")
        finally:
            await self._shutdown()

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
        for run in list(self._runs):
            run.done = True
            run.record.status, run.record.status_reason = "cancelled", "connection_closed"
        self._runs.clear()
        self._active = None
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

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{''.join(self._ids.choices(ID_ALPHABET, k=21))}"

    async def _send(self, event: dict[str, Any], record: dict[str, Any] | None = None) -> None:
        event["event_id"] = self._new_id("event")
        text = json.dumps(event, ensure_ascii=False)
        if self._ws.state is State.OPEN:
            if record is not None:
                record["event_id"] = event["event_id"]
            self._server_log.add(record if record is not None else event)
        await self._ws.send(text)

    async def _send_error(
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
        await self._send({"type": "error", "error": error})

    # -- receiving -------------------------------------------------------------------------

    async def _on_message(self, raw: str | bytes) -> None:
        try:
            event = parse_client_event(raw)
        except ClientEventError as exc:
            await self._send_error(
                exc.code, exc.message, exc.param, client_event_id=exc.event_id, error_type=exc.error_type
            )
            return
        handler = self._handlers.get(event.type, self._on_unsupported)
        units_before = self._total_units
        try:
            await handler(event)
        except ClientEventError as exc:
            await self._send_error(
                exc.code, exc.message, exc.param, client_event_id=event.event_id, error_type=exc.error_type
            )
        # Recorded once handled, so a test woken by it sees the handling's effects.
        self._client_log.add(self._client_record(event, self._total_units - units_before))

    @staticmethod
    def _client_record(event: ParsedClientEvent, units: int) -> dict[str, Any]:
        if event.type == "input_audio_buffer.append":
            record: dict[str, Any] = {"type": event.type, "audio_ms": units / UNITS_PER_MS}
            if event.event_id is not None:
                record["event_id"] = event.event_id
            return record
        if event.type == "conversation.item.create":
            return {**event.data, "item": _strip_audio(event.data["item"])}
        return event.data

    async def _on_unsupported(self, event: ParsedClientEvent) -> None:
        raise ClientEventError(None, f"The realtime double does not implement '{event.type}' yet.")

    async def _on_output_audio_buffer_clear(self, event: ParsedClientEvent) -> None:
        raise ClientEventError(
            None,
            "output_audio_buffer.clear is only supported for WebRTC and SIP connections; over a "
            "WebSocket, send response.cancel and flush your own playback buffer.",
        )

    # -- session ---------------------------------------------------------------------------

    def _default_session(self) -> dict[str, Any]:
        double = self.double
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": self._new_id("sess"),
            "model": self.model,
            "output_modalities": ["audio"],
            "instructions": double.instructions,
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "include": None,
            "expires_at": int(time.time()) + SESSION_LIFETIME_SECONDS,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": dict(DEFAULT_SERVER_VAD),
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": double.voice, "speed": 1.0},
            },
        }

    async def _on_session_update(self, event: ParsedClientEvent) -> None:
        update = event.data["session"]
        if update.get("type") != "realtime":
            raise ClientEventError(
                "invalid_value",
                f"Invalid value: '{update.get('type')}'. This session's type is 'realtime' and cannot be changed.",
                "session.type",
            )
        session = copy.deepcopy(self.session)
        for key, value in update.items():
            if key == "type":
                continue
            if key == "model":
                if value not in (None, session["model"]):
                    raise ClientEventError(
                        "invalid_value",
                        "The model of a session cannot be changed; open a new session.",
                        "session.model",
                    )
                continue
            if key == "audio":
                _merge_audio(session["audio"], value or {})
                continue
            if value is None and key in KEEP_ON_NULL:
                continue  # null leaves these as they are
            session[key] = value
        _check_modalities(session["output_modalities"], "session.output_modalities")
        _check_model_parameters(session)
        new_voice = session["audio"]["output"]["voice"]
        if self.voice_locked and new_voice != self.session["audio"]["output"]["voice"]:
            raise ClientEventError("cannot_update_voice", _VOICE_LOCKED_MESSAGE)
        old_kind = self._input_kind
        self.session = session
        if self._input_kind != old_kind:
            self._carry = b""
            self._vad.reset(self._total_units)
        self._configure_turn_detection()
        await self._send({"type": "session.updated", "session": copy.deepcopy(session)})

    @property
    def _input_kind(self) -> str:
        return FORMAT_KINDS[self.session["audio"]["input"]["format"].get("type") or "audio/pcm"]

    @property
    def _turn_detection(self) -> dict[str, Any] | None:
        return self.session["audio"]["input"]["turn_detection"]

    def _configure_turn_detection(self) -> None:
        detection = self._turn_detection
        if detection is None:
            self._vad_on = False
            return
        if not self._vad_on:
            self._vad.reset(self._total_units)
            self._vad_on = True
        if detection["type"] == "server_vad":
            self._vad.configure(detection["threshold"], detection["silence_duration_ms"])
        else:
            self._vad.configure(0.5, SEMANTIC_SILENCE_MS[detection.get("eagerness") or "auto"])

    # -- input audio -----------------------------------------------------------------------

    async def _on_append(self, event: ParsedClientEvent) -> None:
        raw = _decode_base64(event.data["audio"], "audio")
        kind = self._input_kind
        if kind == "pcm":
            if self._carry:
                raw, self._carry = self._carry + raw, b""
            if len(raw) % 2:  # a sample split across two appends
                raw, self._carry = raw[:-1], raw[-1:]
            pcm = raw
        elif kind == "pcmu":
            pcm = audioop.ulaw2lin(raw, 2)
        else:
            pcm = audioop.alaw2lin(raw, 2)
        rate = _RATE[kind]
        self._total_units += len(pcm) // 2 * (48000 // rate)
        if self._vad_on:
            for what, position in self._vad.feed(pcm, rate):
                if what == "start":
                    await self._on_speech_started(position)
                else:
                    await self._on_speech_stopped(position)
        if self._streams:
            await self._send_streamed_words()

    async def _on_speech_started(self, onset_units: int) -> None:
        detection = self._turn_detection or {}
        prefix_ms = detection.get("prefix_padding_ms", SEMANTIC_PREFIX_MS)
        start = max(onset_units - prefix_ms * UNITS_PER_MS, self._buffer_start_units)
        self._speech_item_id = self._new_id("item")
        self._speech_start_units = start
        if self._transcription_streams:
            self._streams[self._speech_item_id] = self._streamed(self._speech_item_id, onset_units)
        await self._send(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": start // UNITS_PER_MS,
                "item_id": self._speech_item_id,
            }
        )
        if detection.get("interrupt_response", True) and self._active is not None:
            await self._cancel(self._active, "turn_detected")

    async def _on_speech_stopped(self, end_units: int) -> None:
        detection = self._turn_detection or {}
        item_id = self._speech_item_id or self._new_id("item")
        self._speech_item_id = None
        await self._send(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": end_units // UNITS_PER_MS,
                "item_id": item_id,
            }
        )
        audio_ms = (end_units - self._speech_start_units) // UNITS_PER_MS
        self._buffer_start_units = end_units
        stream = self._streams.get(item_id)
        if stream is not None:  # the VAD waited for its silence: the caller stopped before that
            stream.speech_ended(max(end_units - self._vad.silence_ms * UNITS_PER_MS, stream.onset))
        await self._commit_user_audio(item_id, audio_ms)
        if detection.get("create_response", True):
            if self._active is not None:
                # Only reachable with interrupt_response false: the service refuses the same way.
                await self._send_error(
                    "conversation_already_has_active_response", _active_response_message(self._active.record.id)
                )
            else:
                await self._start_response({}, trigger="turn_detection")

    async def _on_commit(self, event: ParsedClientEvent) -> None:
        buffered = self._total_units - self._buffer_start_units
        if buffered < MIN_COMMIT_MS * UNITS_PER_MS:
            raise ClientEventError(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms "
                f"of audio, but buffer only has {buffered / UNITS_PER_MS:.2f}ms of audio.",
            )
        item_id = self._speech_item_id or self._new_id("item")
        self._speech_item_id = None
        stream = self._streams.get(item_id)
        if stream is None and self._transcription_streams:  # no VAD: the words stream from the commit
            stream = self._streams[item_id] = self._streamed(item_id, self._buffer_start_units)
        if stream is not None:
            stream.speech_ended(self._total_units)
        self._buffer_start_units = self._total_units
        self._vad.reset(self._total_units)
        await self._commit_user_audio(item_id, buffered // UNITS_PER_MS)

    async def _on_clear(self, event: ParsedClientEvent) -> None:
        self._buffer_start_units = self._total_units
        if self._speech_item_id is not None:
            self._streams.pop(self._speech_item_id, None)
        self._speech_item_id = None
        self._carry = b""
        self._vad.reset(self._total_units)
        await self._send({"type": "input_audio_buffer.cleared"})

    async def _commit_user_audio(self, item_id: str, audio_ms: int) -> None:
        previous = self._items[-1].data["id"] if self._items else None
        item = _Item(
            data={
                "id": item_id,
                "type": "message",
                "object": "realtime.item",
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            },
            audio_ms=audio_ms,
        )
        self._insert(item, len(self._items))
        await self._send({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous})
        await self._send({"type": "conversation.item.added", "item": _public(item), "previous_item_id": previous})
        await self._send({"type": "conversation.item.done", "item": _public(item), "previous_item_id": previous})
        stream = self._streams.get(item_id)
        item.heard = stream.transcript if stream is not None else self._next_transcript()
        if self.session["audio"]["input"]["transcription"] is None:
            self._streams.pop(item_id, None)
            return
        if stream is not None:
            stream.committed = True
            await self._send_streamed_words()
            return
        task = asyncio.get_running_loop().create_task(self._transcribe_committed(item, audio_ms))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- transcription of the caller -------------------------------------------------------

    @property
    def _transcription_model(self) -> str:
        return (self.session["audio"]["input"]["transcription"] or {}).get("model") or ""

    @property
    def _transcription_streams(self) -> bool:
        return models.streams_transcription(self._transcription_model)

    def _streamed(self, item_id: str, onset: int) -> StreamedUtterance:
        transcription = self.session["audio"]["input"]["transcription"] or {}
        lag = self.double.stream_lag_seconds
        if lag is None:
            lag = transcriber.STREAM_LAG_SECONDS[transcription.get("delay") or transcriber.DEFAULT_DELAY]
        return StreamedUtterance.start(item_id, self._next_transcript(), onset, lag, 48000)

    async def _send_streamed_words(self) -> None:
        """Words the streaming model has heard by now (the audio timeline), then completions."""
        for item_id, stream in list(self._streams.items()):
            text = stream.due(self._total_units)
            if text:
                await self._send({"type": "conversation.item.input_audio_transcription.delta",
                                  "item_id": item_id, "content_index": 0, "delta": text})
            if stream.completion_due():
                del self._streams[item_id]
                item = self._by_id.get(item_id)
                audio_ms = item.audio_ms if item is not None else 0
                await self._transcription_completed(item_id, stream.transcript, audio_ms)

    async def _transcribe_committed(self, item: _Item, audio_ms: int) -> None:
        """A model that does not stream: the whole text, some time after the commit."""
        await asyncio.sleep(self.transcription_seconds)
        transcript = item.heard or ""
        with contextlib.suppress(ConnectionClosed):
            for piece in _word_chunks(transcript, 3):
                await self._send({"type": "conversation.item.input_audio_transcription.delta",
                                  "item_id": item.data["id"], "content_index": 0, "delta": piece})
            await self._transcription_completed(item.data["id"], transcript, audio_ms)

    async def _transcription_completed(self, item_id: str, transcript: str, audio_ms: int) -> None:
        item = self._by_id.get(item_id)
        if item is not None and item.data.get("content"):
            item.data["content"][0]["transcript"] = transcript
        await self._send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
                "usage": transcriber.transcription_usage(self._transcription_model, transcript, audio_ms),
            }
        )

    def _next_transcript(self) -> str:
        number = self.utterance_count
        self.utterance_count += 1
        if number < len(self.transcripts):
            return self.transcripts[number]
        if self.transcripts and self.double.cycle_transcripts:
            return self.transcripts[number % len(self.transcripts)]
        return f"[question de l'appelant n°{number + 1}]"

    # -- conversation items ----------------------------------------------------------------

    def _insert(self, item: _Item, position: int) -> None:
        self._items.insert(position, item)
        self._by_id[item.data["id"]] = item

    def _previous_id(self, item: _Item) -> str | None:
        try:
            position = self._items.index(item)
        except ValueError:
            return None
        return self._items[position - 1].data["id"] if position > 0 else None

    async def _on_item_create(self, event: ParsedClientEvent) -> None:
        data = copy.deepcopy(event.data["item"])
        item_id = data.get("id") or self._new_id("item")
        if item_id in self._by_id:
            raise ClientEventError("invalid_value", f"Item with id '{item_id}' already exists.", "item.id")
        previous = event.data.get("previous_item_id")
        if previous is None:
            position = len(self._items)
        elif previous == "root":
            position = 0
        elif previous in self._by_id:
            position = self._items.index(self._by_id[previous]) + 1
        else:
            raise ClientEventError(
                "invalid_value", f"Previous item with id '{previous}' does not exist.", "previous_item_id"
            )
        item = _Item(data=data)
        if data["type"] == "message":
            for index, part in enumerate(data["content"]):
                if data["role"] == "assistant" and part.get("type") == "output_audio":
                    raise ClientEventError(
                        "invalid_value",
                        "Invalid value: 'output_audio'. Supported values are: 'output_text'.",
                        f"item.content[{index}].type",
                    )
                if part.get("type") == "input_audio" and part.get("audio"):
                    audio = part.pop("audio")
                    raw = _decode_base64(audio, f"item.content[{index}].audio")
                    item.input_audio[index] = audio
                    item.audio_ms += len(raw) // BYTES_PER_MS[self._input_kind]
        data.update(id=item_id, object="realtime.item", status="completed")
        self._insert(item, position)
        previous_id = self._items[position - 1].data["id"] if position > 0 else None
        await self._send({"type": "conversation.item.added", "item": _public(item), "previous_item_id": previous_id})
        await self._send({"type": "conversation.item.done", "item": _public(item), "previous_item_id": previous_id})

    async def _on_item_delete(self, event: ParsedClientEvent) -> None:
        item_id = event.data["item_id"]
        item = self._by_id.pop(item_id, None)
        if item is None:
            raise ClientEventError(
                "item_delete_invalid_item_id",
                f"Error deleting item: the item with id '{item_id}' does not exist.",
                "item_id",
            )
        self._items.remove(item)
        await self._send({"type": "conversation.item.deleted", "item_id": item_id})

    async def _on_item_retrieve(self, event: ParsedClientEvent) -> None:
        item_id = event.data["item_id"]
        item = self._by_id.get(item_id)
        if item is None:
            raise ClientEventError(
                "item_retrieve_invalid_item_id",
                f"Error retrieving item: the item with id '{item_id}' does not exist.",
                "item_id",
            )
        full = _public(item)
        run = item.run
        if run is not None and run.audio and full["content"]:
            audio = self.double.asset.slice_audio(run.format_kind, run.asset_start, item.audio_ms)
            full["content"][0]["audio"] = base64.b64encode(audio).decode("ascii")
        for index, audio_b64 in item.input_audio.items():
            full["content"][index]["audio"] = audio_b64
        await self._send(
            {"type": "conversation.item.retrieved", "item": full},
            record={"type": "conversation.item.retrieved", "item": _public(item)},  # without the audio
        )

    async def _on_item_truncate(self, event: ParsedClientEvent) -> None:
        item_id = event.data["item_id"]
        content_index = event.data["content_index"]
        audio_end_ms = event.data["audio_end_ms"]
        item = self._by_id.get(item_id)
        if item is None:
            raise ClientEventError(
                "item_truncate_invalid_item_id",
                f"Error truncating item: the item with id '{item_id}' does not exist.",
                "item_id",
            )
        run = item.run
        if run is None or not run.audio or item.generated_ms == 0:
            raise ClientEventError("unsupported_content_type", "Only model output audio messages can be truncated")
        if content_index != 0:
            raise ClientEventError(
                "invalid_value",
                f"Invalid value: {content_index}. Item '{item_id}' has its audio at content index 0.",
                "content_index",
            )
        if audio_end_ms > item.audio_ms:
            raise ClientEventError(None, f"Audio content of {item.audio_ms}ms is already shorter than {audio_end_ms}ms")
        self.truncations.append(TruncationRecord(item_id, content_index, audio_end_ms, item.audio_ms, run.record.id))
        item.audio_ms = audio_end_ms
        cut = snap_to_word(run.script, round(len(run.script) * audio_end_ms / run.record.planned_ms))
        item.data["content"][0]["transcript"] = run.script[:cut].rstrip()
        await self._send(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": audio_end_ms,
            }
        )

    # -- responses -------------------------------------------------------------------------

    async def _on_response_create(self, event: ParsedClientEvent) -> None:
        await self._start_response(event.data.get("response") or {}, trigger="client", references=event.item_references)

    async def _on_response_cancel(self, event: ParsedClientEvent) -> None:
        response_id = event.data.get("response_id")
        if response_id:
            run = next((run for run in self._runs if run.record.id == response_id), None)
        else:
            run = self._active
        if run is None or run.done:
            raise ClientEventError("response_cancel_not_active", "Cancellation failed: no active response found")
        await self._cancel(run, "client_cancelled")

    async def _start_response(
        self, params: dict[str, Any], *, trigger: str, references: dict[int, str] | None = None
    ) -> None:
        # Everything that can fail is checked before the first event goes out.
        conversation = params.get("conversation") or "auto"
        if conversation not in ("auto", "none"):
            raise ClientEventError(
                "invalid_value",
                f"Invalid value: '{conversation}'. Supported values are: 'auto' and 'none'.",
                "response.conversation",
            )
        oob = conversation == "none"
        if not oob and self._active is not None:
            raise ClientEventError(
                "conversation_already_has_active_response", _active_response_message(self._active.record.id)
            )
        session = self.session
        instructions = params.get("instructions")
        if instructions is None:
            instructions = session.get("instructions") or ""
        modalities = params.get("output_modalities") or session["output_modalities"]
        _check_modalities(modalities, "response.output_modalities")
        audio_params = (params.get("audio") or {}).get("output") or {}
        if audio_params.get("format"):
            output_format = _normalise_format(audio_params["format"])
        else:
            output_format = dict(session["audio"]["output"]["format"])
        voice = audio_params.get("voice") or session["audio"]["output"]["voice"]
        if self.voice_locked and voice != session["audio"]["output"]["voice"]:
            raise ClientEventError("cannot_update_voice", _VOICE_LOCKED_MESSAGE)
        context = self._response_context(params.get("input"), references or {})
        if params.get("input") is None:
            context = self._truncated(context, params.get("max_output_tokens") or session.get("max_output_tokens"))

        max_output_tokens = params.get("max_output_tokens")
        if max_output_tokens is None:
            max_output_tokens = session.get("max_output_tokens", "inf")
        tools = params["tools"] if params.get("tools") is not None else list(session.get("tools") or [])
        tool_choice = params.get("tool_choice") or session.get("tool_choice") or "auto"
        call = _planned_function_call(tools, tool_choice, context)
        if call is not None and not oob:
            await self._call_function(call, params, trigger, context, instructions, modalities, voice,
                                      output_format, max_output_tokens, tools)
            return
        kind = "greeting" if self._responses_started == 0 else "answer"
        planned_ms = max(1, round(1000 * (self.greeting_seconds if kind == "greeting" else self.answer_seconds)))
        limit_reason = None
        if isinstance(max_output_tokens, int) and planned_ms > max_output_tokens * 50:
            planned_ms, limit_reason = max_output_tokens * 50, "max_output_tokens"
        asset = self.double.asset
        asset_start = self._asset_cursor
        self._asset_cursor = (asset_start + planned_ms) % asset.duration_ms
        self._responses_started += 1

        audio = "audio" in modalities
        response_id, item_id = self._new_id("resp"), self._new_id("item")
        record = ResponseRecord(
            id=response_id,
            trigger=trigger,
            conversation=conversation,
            instructions=instructions,
            input_items=[_public(item) for item in context],
            conversation_items=[_public(item) for item in self._items],
            output_modalities=list(modalities),
            voice=voice,
            output_format=output_format,
            metadata=params.get("metadata"),
            kind=kind,
            planned_ms=planned_ms,
            item_id=item_id,
        )
        item = _Item(
            data={
                "id": item_id,
                "type": "message",
                "object": "realtime.item",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
        )
        run = _Run(
            record=record,
            item=item,
            context=context,
            audio=audio,
            format_kind=FORMAT_KINDS[output_format["type"]],
            asset_start=asset_start,
            script=asset.transcript(asset_start, planned_ms),
            max_output_tokens=max_output_tokens,
            tools=tools,
            limit_reason=limit_reason,
            oob=oob,
        )
        item.run = run
        self.responses.append(record)
        self._runs.add(run)
        if not oob:
            self._active = run

        await self._send({"type": "response.created", "response": self._response_object(run)})
        await self._send(
            {"type": "response.output_item.added", "response_id": response_id, "output_index": 0, "item": _public(item)}
        )
        if not oob:
            previous = self._items[-1].data["id"] if self._items else None
            self._insert(item, len(self._items))
            await self._send({"type": "conversation.item.added", "item": _public(item), "previous_item_id": previous})
        if audio:
            item.data["content"] = [{"type": "output_audio", "transcript": ""}]
            part: dict[str, Any] = {"type": "audio", "transcript": ""}
        else:
            item.data["content"] = [{"type": "output_text", "text": ""}]
            part = {"type": "text", "text": ""}
        await self._send({"type": "response.content_part.added", **self._part_ids(run), "part": part})
        if run.done:  # the connection is going away and _shutdown already settled it
            return
        task = asyncio.get_running_loop().create_task(
            self._stream(run), name=f"realtime-double-{self.index}-{response_id}"
        )
        run.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call_function(
        self,
        call: tuple[str, dict[str, Any]],
        params: dict[str, Any],
        trigger: str,
        context: list[_Item],
        instructions: str,
        modalities: list[str],
        voice: Any,
        output_format: dict[str, Any],
        max_output_tokens: Any,
        tools: list[Any],
    ) -> None:
        """A response whose only output is a function call, with the GA event sequence."""
        name, arguments = call[0], json.dumps(call[1], ensure_ascii=False)
        response_id, item_id, call_id = self._new_id("resp"), self._new_id("item"), self._new_id("call")
        self._responses_started += 1
        record = ResponseRecord(
            id=response_id, trigger=trigger, conversation="auto", instructions=instructions,
            input_items=[_public(item) for item in context],
            conversation_items=[_public(item) for item in self._items],
            output_modalities=list(modalities), voice=voice, output_format=output_format,
            metadata=params.get("metadata"), kind="function_call", planned_ms=0, item_id=item_id,
            function_call={"call_id": call_id, "name": name, "arguments": arguments},
        )
        item = _Item(data={"id": item_id, "type": "function_call", "object": "realtime.item",
                           "status": "in_progress", "call_id": call_id, "name": name, "arguments": ""})
        run = _Run(record=record, item=item, context=context, audio=False, format_kind="pcm16", asset_start=0,
                   script="", max_output_tokens=max_output_tokens, tools=tools, limit_reason=None, oob=False)
        item.run = run
        self.responses.append(record)
        self._runs.add(run)
        self._active = run
        ids = {"response_id": response_id, "item_id": item_id, "output_index": 0, "call_id": call_id}
        await self._send({"type": "response.created", "response": self._response_object(run)})
        await self._send({"type": "response.output_item.added", "response_id": response_id, "output_index": 0,
                          "item": _public(item)})
        previous = self._items[-1].data["id"] if self._items else None
        self._insert(item, len(self._items))
        await self._send({"type": "conversation.item.added", "item": _public(item), "previous_item_id": previous})
        task = asyncio.get_running_loop().create_task(self._stream_call(run, ids, name, arguments, previous))
        run.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stream_call(self, run: _Run, ids: dict[str, Any], name: str, arguments: str,
                           previous: str | None) -> None:
        """The call's arguments after the model's think time (`latency`), then the response's end."""
        record, item = run.record, run.item
        try:
            if self.double.latency > 0:
                await asyncio.sleep(self.double.latency)
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                await self._send({"type": "response.function_call_arguments.delta", **ids, "delta": piece})
            item.data["arguments"] = arguments
            await self._send({"type": "response.function_call_arguments.done", **ids, "name": name,
                              "arguments": arguments})
            self._detach(run)
            record.status = "completed"
            item.data["status"] = "completed"
            record.usage = self._usage(run)
            await self._send({"type": "response.output_item.done", "response_id": record.id, "output_index": 0,
                              "item": _public(item)})
            await self._send({"type": "conversation.item.done", "item": _public(item), "previous_item_id": previous})
            await self._send({"type": "response.done", "response": self._response_object(run)})
            await self._send_rate_limits(record.usage)
        except ConnectionClosed:
            pass

    def _truncated(self, conversation: list[_Item], max_output_tokens: Any) -> list[_Item]:
        """The conversation the model reads, after the session's truncation: "auto" drops the
        oldest items just enough to fit the context; a retention ratio, once over its limit,
        drops down to that fraction of the limit, so the next truncations come later."""
        policy = self.session.get("truncation") or "auto"
        visible = [item for item in conversation if not item.truncated_away]
        if policy == "disabled":
            return visible
        reserve = max_output_tokens if isinstance(max_output_tokens, int) else models.MAX_OUTPUT_TOKENS
        limit = models.context_window(self.model) - reserve
        keep = 1.0
        if isinstance(policy, dict):
            limit = min((policy.get("token_limits") or {}).get("post_instructions") or limit, limit)
            keep = policy["retention_ratio"]
        total = sum(_tokens(item) for item in visible)
        if total > limit:
            self.truncations_applied += 1
            while len(visible) > 1 and total > limit * keep:
                dropped = visible.pop(0)
                dropped.truncated_away = True
                total -= _tokens(dropped)
        return visible

    def _response_context(self, given: list[dict[str, Any]] | None, references: dict[int, str]) -> list[_Item]:
        if given is None:
            return list(self._items)
        context: list[_Item] = []
        for index, element in enumerate(given):
            if index in references:
                target = self._by_id.get(references[index])
                if target is None:
                    raise ClientEventError(
                        "invalid_value",
                        f"Invalid value: item reference '{references[index]}' does not match any item in this session.",
                        f"response.input[{index}].id",
                    )
                context.append(target)
                continue
            transient = _Item(data=_strip_audio(copy.deepcopy(element)))
            for part_index, part in enumerate(element.get("content") or []):
                if isinstance(part, dict) and part.get("type") == "input_audio" and part.get("audio"):
                    raw = _decode_base64(part["audio"], f"response.input[{index}].content[{part_index}].audio")
                    transient.audio_ms += len(raw) // BYTES_PER_MS[self._input_kind]
            context.append(transient)
        return context

    @staticmethod
    def _part_ids(run: _Run) -> dict[str, Any]:
        return {"response_id": run.record.id, "item_id": run.record.item_id, "output_index": 0, "content_index": 0}

    async def _stream(self, run: _Run) -> None:
        record, item, script = run.record, run.item, run.script
        asset, speed = self.double.asset, self.double.speed
        ids = self._part_ids(run)
        try:
            if self.double.latency > 0:
                await asyncio.sleep(self.double.latency)
            position = 0
            while position < record.planned_ms:
                step = min(self._rng.randint(*DELTA_MS_RANGE), record.planned_ms - position)
                chunk = asset.slice_audio(run.format_kind, run.asset_start + position, step) if run.audio else b""
                position += step
                upto = snap_to_word(script, round(len(script) * position / record.planned_ms))
                text = script[run.sent_chars : upto]
                # Count each piece right before its send: the write happens at once, and a cancel
                # can only land on the await after it, so the counts always match what was sent.
                if text:
                    run.sent_chars = upto
                    record.transcript += text
                    kind = "response.output_audio_transcript.delta" if run.audio else "response.output_text.delta"
                    await self._send({"type": kind, **ids, "delta": text})
                if run.audio:
                    record.audio_ms = position
                    item.audio_ms += step
                    item.generated_ms += step
                    self.voice_locked = True
                    delta = base64.b64encode(chunk).decode("ascii")
                    await self._send(
                        {"type": "response.output_audio.delta", **ids, "delta": delta},
                        record={"type": "response.output_audio.delta", **ids, "audio_ms": step},
                    )
                await asyncio.sleep(step / 1000 / speed if speed > 0 else 0)
            await self._finish(run)
        except ConnectionClosed:
            pass

    def _detach(self, run: _Run) -> None:
        run.done = True
        self._runs.discard(run)
        if self._active is run:
            self._active = None

    async def _finish(self, run: _Run) -> None:
        if run.done:
            return
        self._detach(run)
        record, item, script = run.record, run.item, run.script
        record.status = "incomplete" if run.limit_reason else "completed"
        record.status_reason = run.limit_reason
        record.transcript = script
        item.data["status"] = "completed" if record.status == "completed" else "incomplete"
        ids = self._part_ids(run)
        if run.audio:
            item.data["content"][0]["transcript"] = script
            part = {"type": "audio", "transcript": script}
        else:
            item.data["content"][0]["text"] = script
            part = {"type": "text", "text": script}
        record.usage = self._usage(run)
        if run.audio:
            await self._send({"type": "response.output_audio.done", **ids})
            await self._send({"type": "response.output_audio_transcript.done", **ids, "transcript": script})
        else:
            await self._send({"type": "response.output_text.done", **ids, "text": script})
        await self._send({"type": "response.content_part.done", **ids, "part": part})
        await self._send(
            {"type": "response.output_item.done", "response_id": record.id, "output_index": 0, "item": _public(item)}
        )
        if not run.oob and item.data["id"] in self._by_id:
            previous = self._previous_id(item)
            await self._send({"type": "conversation.item.done", "item": _public(item), "previous_item_id": previous})
        await self._send({"type": "response.done", "response": self._response_object(run)})
        await self._send_rate_limits(record.usage)

    async def _cancel(self, run: _Run, reason: str) -> None:
        """Stop a response the way the service does: no more deltas, then `response.done` cancelled.

        The service may also send the .done events of the part and item; clients must not
        depend on them, so the double sends only what is guaranteed.
        """
        if run.done:
            return
        self._detach(run)
        if run.task is not None and run.task is not asyncio.current_task():
            run.task.cancel()
        record, item = run.record, run.item
        record.status, record.status_reason = "cancelled", reason
        item.data["status"] = "incomplete"
        if item.data.get("content"):
            item.data["content"][0]["transcript" if run.audio else "text"] = record.transcript
        record.usage = self._usage(run)
        await self._send({"type": "response.done", "response": self._response_object(run)})
        await self._send_rate_limits(record.usage)

    def _response_object(self, run: _Run) -> dict[str, Any]:
        record = run.record
        details: dict[str, Any] | None = None
        if record.status in ("cancelled", "incomplete"):
            details = {"type": record.status, "reason": record.status_reason}
        return {
            "object": "realtime.response",
            "id": record.id,
            "status": record.status,
            "status_details": details,
            "output": [] if record.status == "in_progress" else [_public(run.item)],
            "conversation_id": None if run.oob else self.conversation_id,
            "output_modalities": record.output_modalities,
            "max_output_tokens": run.max_output_tokens,
            "audio": {"output": {"format": record.output_format, "voice": record.voice}},
            "usage": record.usage,
            "metadata": record.metadata,
        }

    def _usage(self, run: _Run) -> dict[str, Any]:
        """Plausible token counts: audio in 1/100 ms (user) or 1/50 ms (assistant), out 1/50 ms,
        text about 4 characters a token, and a prompt cache over the previous turn."""
        record = run.record
        text_chars = len(record.instructions) + (len(json.dumps(run.tools)) if run.tools else 0)
        audio_tokens = 0
        for item in run.context:
            chars, tokens = _item_cost(item)
            text_chars += chars
            audio_tokens += tokens
        text_tokens = math.ceil(text_chars / 4)
        input_tokens = text_tokens + audio_tokens
        cached_text = cached_audio = 0
        if not run.oob:
            previous = self._last_input
            if (previous is not None and previous[0] == record.instructions and previous[1] + previous[2] >= 1024
                    and previous[3] == self.truncations_applied):
                cached_text, cached_audio = min(text_tokens, previous[1]), min(audio_tokens, previous[2])
                cached = (cached_text + cached_audio) // 64 * 64  # the cache works in 64-token blocks
                cached_audio = min(cached_audio, cached)
                cached_text = cached - cached_audio
            self._last_input = (record.instructions, text_tokens, audio_tokens, self.truncations_applied)
        output_audio = math.ceil(record.audio_ms / 50) if run.audio else 0
        output_text = math.ceil(len(record.transcript) / 4)
        output_tokens = output_audio + output_text
        return {
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {
                "text_tokens": text_tokens,
                "audio_tokens": audio_tokens,
                "image_tokens": 0,
                "cached_tokens": cached_text + cached_audio,
                "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": output_text, "audio_tokens": output_audio},
        }

    async def _send_rate_limits(self, usage: dict[str, Any] | None) -> None:
        used = usage["total_tokens"] if usage else 0
        await self._send(
            {
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
                    {"name": "tokens", "limit": 800000, "remaining": max(0, 800000 - used), "reset_seconds": 0.6},
                ],
            }
        )


def _merge_audio(target: dict[str, Any], update: dict[str, Any]) -> None:
    for side in ("input", "output"):
        part = update.get(side)
        if not part:
            continue
        current = target[side]
        for key, value in part.items():
            if key == "format":
                if value is not None:
                    current["format"] = _normalise_format(value)
            elif key == "turn_detection":
                current[key] = None if value is None else _turn_detection_with_defaults(value)
            elif key == "noise_reduction":
                # The SDK documents that an omitted strength keeps the current one.
                current[key] = None if value is None else {**(current.get(key) or {}), **value}
            else:
                current[key] = value


def _turn_detection_with_defaults(value: dict[str, Any]) -> dict[str, Any]:
    base = DEFAULT_SERVER_VAD if value.get("type") == "server_vad" else DEFAULT_SEMANTIC_VAD
    return {**base, **{key: item for key, item in value.items() if item is not None}}


def _normalise_format(value: dict[str, Any]) -> dict[str, Any]:
    kind = value.get("type") or "audio/pcm"
    return {"type": "audio/pcm", "rate": 24000} if kind == "audio/pcm" else {"type": kind}


def _check_model_parameters(session: dict[str, Any]) -> None:
    """Settings the types document as model-specific are refused on other models."""
    if session.get("reasoning") is not None and not models.reasoning_model(session["model"]):
        raise ClientEventError(
            "unsupported_parameter",
            f"Unsupported parameter: 'reasoning' is not supported with the model '{session['model']}'.",
            "session.reasoning",
        )
    transcription = session["audio"]["input"].get("transcription") or {}
    model = transcription.get("model") or ""
    for key, supporting in (("delay", models.DELAY_TRANSCRIPTION), ("keywords", models.KEYWORD_TRANSCRIPTION),
                            ("languages", models.KEYWORD_TRANSCRIPTION)):
        if transcription.get(key) is not None and model not in supporting:
            raise ClientEventError(
                "unsupported_parameter",
                f"Unsupported parameter: '{key}' is not supported with the transcription model '{model}'.",
                f"session.audio.input.transcription.{key}",
            )
    if transcription.get("prompt") and model in models.PROMPTLESS_TRANSCRIPTION:
        raise ClientEventError(
            "unsupported_parameter",
            f"Unsupported parameter: 'prompt' is not supported with the transcription model '{model}'.",
            "session.audio.input.transcription.prompt",
        )


def _check_modalities(modalities: list[str], param: str) -> None:
    if len(set(modalities)) != 1:
        raise ClientEventError(
            "invalid_value",
            f"Invalid value: {json.dumps(modalities)}. Supported combinations are: ['text'] and ['audio'].",
            param,
        )


def _decode_base64(value: str, param: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ClientEventError("invalid_value", f"Invalid '{param}': expected base64-encoded audio.", param) from None


def _planned_function_call(
    tools: list[Any], tool_choice: Any, context: list[_Item]
) -> tuple[str, dict[str, Any]] | None:
    """Whether the model (as the double plays it) calls a tool: when one is offered and the newest
    item is the caller's message, it calls the first function tool with the caller's words as its
    first string parameter; once a function output follows, it answers in voice."""
    functions = [tool for tool in tools if isinstance(tool, dict) and tool.get("type") == "function"]
    if not functions or tool_choice == "none" or not context:
        return None
    newest = context[-1].data
    if newest.get("type") != "message" or newest.get("role") != "user":
        return None
    tool = functions[0]
    if isinstance(tool_choice, dict) and tool_choice.get("name"):
        tool = next((t for t in functions if t.get("name") == tool_choice["name"]), tool)
    words = context[-1].heard or " ".join(
        part.get("transcript") or part.get("text") or ""
        for part in newest.get("content") or [] if isinstance(part, dict)
    ).strip()
    properties = ((tool.get("parameters") or {}).get("properties") or {})
    first_string = next((key for key, spec in properties.items() if (spec or {}).get("type") == "string"), None)
    return tool.get("name") or "function", ({first_string: words} if first_string else {})


def _tokens(item: _Item) -> int:
    chars, audio = _item_cost(item)
    return math.ceil(chars / 4) + audio


def _item_cost(item: _Item) -> tuple[int, int]:
    """(text characters, audio tokens) an item adds to a model input."""
    data = item.data
    kind = data.get("type")
    if kind == "function_call":
        return len(data.get("name") or "") + len(data.get("arguments") or ""), 0
    if kind == "function_call_output":
        return len(data.get("output") or ""), 0
    if kind != "message":
        return len(json.dumps(data)), 0
    chars = audio = 0
    for part in data.get("content") or []:
        part_type = part.get("type")
        if part_type in ("input_text", "output_text"):
            chars += len(part.get("text") or "")
        elif part_type == "input_audio":
            audio = math.ceil(item.audio_ms / 100)
        elif part_type == "output_audio":
            audio = math.ceil(item.audio_ms / 50)
    return chars, audio


def _word_chunks(text: str, count: int) -> list[str]:
    """Split into at most `count` pieces on word boundaries; the pieces concatenate to `text`."""
    words = text.split(" ")
    size = max(1, math.ceil(len(words) / count))
    pieces = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [piece + " " for piece in pieces[:-1]] + pieces[-1:]


def _active_response_message(response_id: str) -> str:
    return (
        f"Conversation already has an active response in progress: {response_id}. "
        "Wait until the response is finished before creating a new one."
    )


# ---------------------------------------------------------------------------------------------
# The server


class RealtimeDouble:
    """Websocket server speaking the Realtime GA protocol.

    ``async with RealtimeDouble(port=0, transcripts=[...]) as double:`` then connect to
    ``double.url``. Options:

    - api_key: when set, `Authorization: Bearer <api_key>` must match (else HTTP 401); any
      non-empty bearer key is accepted otherwise.
    - transcripts: scripted ASR; the n-th committed utterance of a connection gets
      transcripts[n], then (cycle_transcripts) wraps around or gets a French placeholder.
    - speed: how many times faster than real time audio is streamed; 0 = as fast as possible.
    - answer_seconds / greeting_seconds: audio length of a response; a connection's first
      response is the greeting.
    - latency: seconds between `response.content_part.added` and the first delta.
    - voice, instructions: session defaults announced in `session.created`.
    - seed: makes ids and delta sizes reproducible (per connection index).
    - handshake_delay: seconds to wait before answering the opening handshake.
    - session_max_seconds: after this long a connection gets `session_expired` and is closed.
    - history_limit: events kept per direction per connection (None = all).
    - transcription_seconds: how long a model that does not stream takes to transcribe a
      committed turn.
    - stream_lag_seconds: how far a streaming model's words trail the audio (default: by
      `delay`, `transcriber.STREAM_LAG_SECONDS`).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        transcripts: Iterable[str] | None = None,
        cycle_transcripts: bool = False,
        speed: float = 4.0,
        answer_seconds: float = 4.0,
        greeting_seconds: float = 2.5,
        latency: float = 0.0,
        voice: str = DEFAULT_VOICE,
        instructions: str = DEFAULT_INSTRUCTIONS,
        seed: int | str = 0,
        handshake_delay: float = 0.0,
        session_max_seconds: float | None = None,
        history_limit: int | None = 20_000,
        asset_path: Path | str | None = None,
        transcription_seconds: float = transcriber.COMMITTED_TURN_SECONDS,
        stream_lag_seconds: float | None = None,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0 (0 streams as fast as possible)")
        if answer_seconds <= 0 or greeting_seconds <= 0:
            raise ValueError("answer_seconds and greeting_seconds must be > 0")
        self.host = host
        self._requested_port = port
        self.api_key = api_key
        self.transcripts: list[str] = list(transcripts or [])
        self.cycle_transcripts = cycle_transcripts
        self.speed = speed
        self.answer_seconds = answer_seconds
        self.greeting_seconds = greeting_seconds
        self.latency = latency
        self.voice = voice
        self.instructions = instructions
        self.seed = seed
        self.handshake_delay = handshake_delay
        self.session_max_seconds = session_max_seconds
        self.history_limit = history_limit
        self.transcription_seconds = transcription_seconds
        self.stream_lag_seconds = stream_lag_seconds
        self.refuse_connections = False
        self._asset_path = Path(asset_path) if asset_path else ASSET_PATH
        self.asset: VoiceAsset | None = None  # loaded by start(), off the event loop

        self.connections: list[DoubleConnection] = []
        self.rejected_handshakes: list[RejectedHandshake] = []
        self._live: set[DoubleConnection] = set()
        self._scripts: deque[_Script] = deque()
        self._handed_out = 0
        self._connection_waiters: list[asyncio.Future[None]] = []
        self._server: Server | None = None
        self._port: int | None = None
        self._stopping = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> RealtimeDouble:
        if self._server is not None:
            return self
        self._stopping = asyncio.Event()
        # File reading and resampling stay off the event loop.
        self.asset = await asyncio.to_thread(load_voice_asset, self._asset_path)
        self._server = await serve(
            self._handle,
            self.host,
            self._requested_port,
            process_request=self._process_request,
            max_size=32 * 2**20,  # the service takes appends of up to 15 MiB
            compression=None,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        logger.info("realtime double listening on %s", self.url)
        return self

    async def stop(self) -> None:
        """Close every connection (1001), stop listening and wait for all handlers to end."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.close()
        await server.wait_closed()

    async def __aenter__(self) -> RealtimeDouble:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the realtime double is not started")
        return self._port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else "::1" if self.host == "::" else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self.port}{DEFAULT_PATH}"

    @property
    def live_connections(self) -> list[DoubleConnection]:
        return [conn for conn in self.connections if conn in self._live]

    # -- scripting and observation ---------------------------------------------------------

    def script_next_connection(
        self,
        transcripts: Iterable[str] | None = None,
        *,
        answer_seconds: float | None = None,
        greeting_seconds: float | None = None,
        transcription_seconds: float | None = None,
    ) -> None:
        """Queue per-connection settings; the next accepted connection takes the oldest."""
        self._scripts.append(
            _Script(
                transcripts=list(transcripts) if transcripts is not None else None,
                answer_seconds=answer_seconds,
                greeting_seconds=greeting_seconds,
                transcription_seconds=transcription_seconds,
            )
        )

    async def wait_for_connection(self, timeout: float = 5.0) -> DoubleConnection:
        """The oldest connection not yet returned by this method, waiting for one if needed."""
        try:
            async with asyncio.timeout(timeout):
                while self._handed_out >= len(self.connections):
                    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    self._connection_waiters.append(waiter)
                    try:
                        await waiter
                    finally:
                        self._connection_waiters.remove(waiter)
        except TimeoutError:
            raise TimeoutError(f"no new connection reached the realtime double within {timeout}s") from None
        connection = self.connections[self._handed_out]
        self._handed_out += 1
        return connection

    # -- failure injection -----------------------------------------------------------------

    async def drop_all(self, code: int = 1011, reason: str = "realtime double: dropped", *, abort: bool = False) -> int:
        """Close every live connection (close frame `code`, or no handshake at all with `abort`)."""
        live = self.live_connections
        if abort:
            for connection in live:
                connection.abort()
        else:
            await asyncio.gather(*(connection.close(code, reason) for connection in live), return_exceptions=True)
        return len(live)

    async def fail_all(
        self,
        code: str | None = "server_error",
        message: str = "The server had an error while processing your request. Please retry.",
        *,
        error_type: str = "server_error",
        close_code: int = 1011,
    ) -> int:
        """Send an `error` event on every live connection, then close it."""
        live = self.live_connections
        await asyncio.gather(
            *(c.send_error_and_close(code, message, error_type=error_type, close_code=close_code) for c in live),
            return_exceptions=True,
        )
        return len(live)

    # -- websocket plumbing ----------------------------------------------------------------

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.handshake_delay > 0:
            # Wait on the stop signal, not a bare sleep, so stop() need not outlast the delay.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.handshake_delay):
                    await self._stopping.wait()
        if self.refuse_connections or self._stopping.is_set():
            return self._reject(
                connection,
                request,
                HTTPStatus.SERVICE_UNAVAILABLE,
                "server_error",
                None,
                "The service is temporarily unavailable (realtime double: refusing connections).",
            )
        authorization = request.headers.get("Authorization") or ""
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return self._reject(
                connection,
                request,
                HTTPStatus.UNAUTHORIZED,
                "invalid_request_error",
                None,
                "You didn't provide an API key. Send it in an Authorization header using Bearer auth "
                "(Authorization: Bearer YOUR_KEY).",
            )
        if self.api_key is not None and key != self.api_key:
            shown = f"{key[:3]}...{key[-4:]}" if len(key) > 8 else "***"
            return self._reject(
                connection,
                request,
                HTTPStatus.UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                f"Incorrect API key provided: {shown}.",
            )
        return None

    def _reject(
        self,
        connection: ServerConnection,
        request: Request,
        status: HTTPStatus,
        error_type: str,
        code: str | None,
        message: str,
    ) -> Response:
        body = json.dumps({"error": {"message": message, "type": error_type, "param": None, "code": code}})
        response = connection.respond(status, body + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        self.rejected_handshakes.append(RejectedHandshake(request.path, int(status), message))
        logger.info("realtime double: refused %s with HTTP %d", request.path, int(status))
        return response

    async def _handle(self, ws: ServerConnection) -> None:
        script = self._scripts.popleft() if self._scripts else None
        connection = DoubleConnection(self, ws, len(self.connections), script)
        self.connections.append(connection)
        self._live.add(connection)
        for waiter in self._connection_waiters:
            if not waiter.done():
                waiter.set_result(None)
        try:
            await connection.run()
        finally:
            self._live.discard(connection)


# ---------------------------------------------------------------------------------------------
# Command line


@click.command(name="realtime-double", context_settings=HELP_OPTIONS)
@click.option("--host", default="127.0.0.1", show_default=True, help="interface to listen on")
@click.option("--port", type=int, default=8765, show_default=True, help="port to listen on")
@click.option("--api-key", help="require this bearer key (default: accept any non-empty key)")
@click.option("--speed", type=click.FloatRange(min=0), default=4.0, show_default=True,
              help="audio streaming speed vs real time; 0 = no pacing")
@click.option("--answer-seconds", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="length of each spoken answer")
@click.option("--greeting-seconds", type=click.FloatRange(min=0, min_open=True), default=2.5, show_default=True,
              help="length of a connection's first answer")
@click.option("--transcript", "transcripts", multiple=True, metavar="TEXT",
              help="scripted transcript of the caller's n-th utterance; repeat in order")
@click.option("--transcription-seconds", type=float, default=transcriber.COMMITTED_TURN_SECONDS, show_default=True,
              help="time a non-streaming transcription model takes after a commit")
@click.option("--stream-lag-seconds", type=float,
              help="lag of a streaming transcription model's words behind the audio (default: by its delay)")
@click.option("--log-level", default="INFO", show_default=True, help="logging level")
def cli(host: str, port: int, api_key: str | None, speed: float, answer_seconds: float, greeting_seconds: float,
        transcripts: tuple[str, ...], transcription_seconds: float, stream_lag_seconds: float | None,
        log_level: str) -> None:
    """Run a local double of the OpenAI Realtime API (GA protocol) for offline calls."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    double = RealtimeDouble(
        host,
        port,
        api_key=api_key,
        speed=speed,
        answer_seconds=answer_seconds,
        greeting_seconds=greeting_seconds,
        transcripts=transcripts,
        transcription_seconds=transcription_seconds,
        stream_lag_seconds=stream_lag_seconds,
    )
    try:
        asyncio.run(_serve_until_cancelled(double))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how the double is meant to stop
    except OSError as exc:  # typically the port is taken
        print(f"realtime double: {exc}", flush=True)
        sys.exit(1)


async def _serve_until_cancelled(double: RealtimeDouble) -> None:
    async with double:
        key_hint = double.api_key or "any-non-empty-key"
        print(f"OpenAI Realtime double listening on {double.url}", flush=True)
        print("Point the phone line at it:", flush=True)
        print(f"  export OPENAI_REALTIME_URL={double.url}", flush=True)
        print(f"  export OPENAI_API_KEY={key_hint}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    cli()
