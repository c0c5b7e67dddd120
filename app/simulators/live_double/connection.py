"""One primary websocket session of the GPT-Live double.

Every client event is parsed by the shared strict parser over `openai.types.live.ClientEvent`
(unknown fields refused) and refused, when the service would, with a Live `error` event: the
error's `type`, `code`, `message`, `param` and the command's `client_event_id`. Nothing but
`session.start` is taken before the session started; audio is taken only after it. The types
name no codes for the refusals they do not describe (`session_not_started`, …): those are the
double's own words.

The model's side is a mixer that streams `session.output_audio.delta` every `DELTA_MS` in real
time, silence included (μ-law idle code); speech goes out `lead_ms` ahead of the clock, as a
server that generates faster than real time fills its client's buffer (the service publishes
no figure for it: it is the double's assumption, and a parameter). What it says comes from a queue of speeches cut from the French recording, each with
its transcript pieces (`session.output_transcript.delta` on the session timeline):

* the greeting or a notice: a `session.commentary.append` without delegation;
* a delegation: once the caller's turn ended (energy VAD on the audio timeline) with words in it
  (the script's next transcript, streamed as `session.input_transcript.delta` while they speak,
  `app.simulators.transcriber`), the model delegates (`session.delegation.created`, target
  client) and says a short acknowledgement meanwhile (or first, then delegates:
  `speaks_before_delegating`); the answer is spoken once the application appends commentary
  for that delegation (thinking: it knows, and says nothing). Words in `unanswered` it lets
  pass: no delegation, not a word;
* full duplex: when the caller talks over the model it keeps talking `overlap_ms`, then yields
  (drops what it was saying) if they are still talking; a shorter sound (a clang) it talks over;
* fixtures: `session.output_audio.fixture.play`, validated whole first, interrupts the model
  (what it was saying and had queued is dropped) and plays the given PCM16 24 kHz audio, caller
  audio dropped meanwhile (not replayed), between `fixture.playing` (accepted) and
  `fixture.played` (the mixer has sent it all); one at a time: another one meanwhile is refused.
  The model's own first turn starts at the mixer's next chunk, as any speech: the double
  assumes no generation time, the service's is not published.

Usage: `session.usage.updated` every `usage_interval` seconds with the cumulative whole seconds
(the active/paused split is for WebRTC sessions), and the final usage in `session.closed`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from openai.types.live import ClientEvent
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from app.simulators.live_double.records import Delegation, Record, Speech
from app.simulators.realtime_double.formats import (
    UNITS_PER_MS, decode_base64, downsample_24k_to_8k, g711_to_pcm16, pcm16_to_g711,
)
from app.simulators.realtime_double.vad import EnergyVad
from app.simulators.realtime_schema import ClientEventError, StrictEventParser
from app.simulators.transcriber import StreamedUtterance

if TYPE_CHECKING:
    from app.simulators.live_double.server import LiveDouble

logger = logging.getLogger(__package__)

PARSER = StrictEventParser(ClientEvent)
MODELS = ("gpt-live-1", "gpt-live-1.1")
DELTA_MS = 100
SILENCE = b"\xff" * (8 * DELTA_MS)  # μ-law idle code
SESSION_SECONDS = 120 * 60
FIXTURE_MAX_MS = 30_000
APPENDS = {"session.instructions.append": "session.instructions.appended",
           "session.thinking.append": "session.thinking.appended",
           "session.commentary.append": "session.commentary.appended"}
# Server events that carry no event_id (openai.types.live declares none for them).
WITHOUT_EVENT_ID = frozenset({"session.output_audio.delta"})


class LiveConnection:
    def __init__(self, double: LiveDouble, ws: ServerConnection, index: int) -> None:
        self.double = double
        self.index = index
        self._ws = ws
        self.record = Record()
        self.session: dict[str, Any] | None = None
        self.delegations: dict[str, Delegation] = {}
        self.closed_reason: str | None = None
        self.dropped_at: float | None = None  # loop time of `drop`, for a test to put it on a call's timeline
        self._events = 0
        self._started_at = 0.0
        self._vad = EnergyVad(threshold=0.5, silence_ms=double.silence_ms)
        self._utterance: StreamedUtterance | None = None
        self._onset = 0
        self._sent_to_ms = 0.0  # input timeline: where the last transcript piece ended
        self._speaking: Speech | None = None
        self._queue: deque[Speech] = deque()
        self._asset_ms = 0
        self._output_ms = 0
        self._yield_at: int | None = None
        self._fixture_event_id: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._done = asyncio.Event()

    # -- lifecycle

    async def run(self) -> None:
        try:
            async for raw in self._ws:
                await self._on_message(raw)
                if self._done.is_set():
                    break
        except ConnectionClosed:
            pass
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.closed_reason is None:
                self.closed_reason = "connection_lost"

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def session_ms(self) -> int:
        return int((time.perf_counter() - self._started_at) * 1000) if self._started_at else 0

    async def send(self, event: dict[str, Any]) -> None:
        self._events += 1
        if event["type"] not in WITHOUT_EVENT_ID:
            event = {"event_id": f"event_{self.index}_{self._events}", **event}
        self.record.sent.append(event)
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(json.dumps(event, ensure_ascii=False))
        await self._drop_if_chosen(event)

    async def send_error(self, error: ClientEventError, client_event_id: str | None) -> None:
        detail = {"type": error.error_type, "code": error.code or "invalid_request", "message": error.message,
                  "param": error.param, "client_event_id": client_event_id}
        self.record.errors.append(detail)
        event: dict[str, Any] = {"type": "error", "error": detail}
        if client_event_id is not None:
            event["client_event_id"] = client_event_id
        await self.send(event)

    # -- client events

    async def _on_message(self, raw: str | bytes) -> None:
        event_id = None
        try:
            data, kind, event_id = PARSER.envelope(raw)
            PARSER.validate(kind, data, event_id)
            await self._handle(kind, data, event_id)
        except ClientEventError as error:
            await self.send_error(error, event_id)
            return
        if kind == "session.input_audio.append":
            self.record.received.append({"type": kind})
        else:
            self.record.received.append(data)
        await self._drop_if_chosen(data)

    async def _handle(self, kind: str, data: dict[str, Any], event_id: str | None) -> None:
        if kind == "session.start":
            await self._start(data["session"], event_id)
            return
        if self.session is None:
            raise ClientEventError("session_not_started", "Send session.start first and wait for session.started.")
        if kind == "session.input_audio.append":
            await self._audio(decode_base64(data["audio"], "audio"))
        elif kind in APPENDS:
            await self._append(kind, data, event_id)
        elif kind == "session.output_audio.fixture.play":
            await self._fixture(decode_base64(data["audio"], "audio"), event_id)
        elif kind == "session.close":
            await self._close(event_id)
        else:
            raise ClientEventError("unsupported_command", f"The live double does not implement '{kind}'.")

    async def _start(self, config: dict[str, Any], event_id: str | None) -> None:
        if self.session is not None:
            raise ClientEventError("session_already_started", "The session has already started.", "type")
        if config["model"] not in MODELS:
            raise ClientEventError("invalid_value", f"Invalid value: '{config['model']}'. Supported values are: "
                                   f"'{MODELS[0]}' and '{MODELS[1]}'.", "session.model")
        fmt = (config.get("audio") or {}).get("format") or {}
        if fmt.get("type") != "audio/pcmu" or fmt.get("rate") != 8000:
            raise ClientEventError("unsupported_value", "The live double speaks audio/pcmu at 8000 Hz only.",
                                   "session.audio.format")
        if (config.get("delegation") or {"type": "client"}).get("type") != "client":
            raise ClientEventError("unsupported_value", "The live double answers client delegation only.",
                                   "session.delegation")
        await asyncio.sleep(self.double.start_seconds)
        self._started_at = time.perf_counter()
        voice = ((config.get("audio") or {}).get("output") or {}).get("voice") or "marin"
        self.session = {"id": f"sess_double_{self.index}", "expires_at": int(time.time() + self.double.session_seconds),
                        "model": config["model"], "status": "active",
                        "audio": {"format": fmt, "output": {"voice": voice}},
                        "delegation": {"type": "client", "acknowledgement_delay_ms": 0},
                        "instructions": config.get("instructions") or "", "input": config.get("input") or []}
        started: dict[str, Any] = {"type": "session.started", "session": self.session}
        if event_id is not None:
            started["client_event_id"] = event_id
        await self.send(started)
        self._spawn(self._mixer())
        self._spawn(self._usage_ticks())
        self._spawn(self._expire())

    async def _append(self, kind: str, data: dict[str, Any], event_id: str | None) -> None:
        if self._speaking is not None and self._speaking.kind == "fixture":
            raise ClientEventError("fixture_active", f"{kind} is rejected while an audio fixture is active.")
        delegation_id = data["delegation_id"]
        delegation = self.delegations.get(delegation_id) if delegation_id is not None else None
        if delegation_id is not None and delegation is None:
            raise ClientEventError("invalid_value", f"Unknown delegation: '{delegation_id}'.", "delegation_id")
        now = self.session_ms
        acknowledged: dict[str, Any] = {"type": APPENDS[kind], "start_ms": now, "end_ms": now}
        if event_id is not None:
            acknowledged["client_event_id"] = event_id
        await self.send(acknowledged)
        if kind == "session.instructions.append":
            return
        if delegation is not None:
            delegation.result, delegation.content = kind.rsplit(".", 2)[1], data["content"]
            if kind == "session.commentary.append":
                self._queue.append(Speech("answer", int(self.double.answer_seconds * 1000)))
        elif kind == "session.commentary.append":
            # A session carrying a call on (initial items) has greeted already.
            kind_of = "greeting" if not self.record.spoken and not self.session["input"] else "notice"
            self._queue.append(Speech(kind_of, int(self.double.greeting_seconds * 1000)))

    async def _fixture(self, pcm24k: bytes, event_id: str | None) -> None:
        if len(pcm24k) % 2 or len(pcm24k) // 48 > FIXTURE_MAX_MS or not pcm24k:
            raise ClientEventError("invalid_value", "The fixture must be mono PCM16 at 24 kHz, at most 30 seconds.",
                                   "audio")
        if self._speaking is not None and self._speaking.kind == "fixture":
            raise ClientEventError("fixture_active", "Only one audio fixture can be active.")
        audio = pcm16_to_g711(downsample_24k_to_8k(pcm24k), "pcmu")
        self._queue.clear()
        self._yield_at = None
        self._speaking = Speech("fixture", len(audio) // 8, audio=audio)
        self.record.spoken.append("fixture")
        self._fixture_event_id = event_id
        await self.send(self._fixture_event("playing"))

    def _fixture_event(self, stage: str) -> dict[str, Any]:
        echo = {} if self._fixture_event_id is None else {"client_event_id": self._fixture_event_id}
        return {"type": f"session.output_audio.fixture.{stage}", **echo}

    async def _close(self, event_id: str | None, reason: str = "close_requested") -> None:
        closed: dict[str, Any] = {"type": "session.closed", "reason": reason, "session": self.session,
                                  "usage": self._usage()}
        if event_id is not None:
            closed["client_event_id"] = event_id
        self.closed_reason = reason
        await self.send(closed)
        self._done.set()
        await self._ws.close(1000)

    # -- the caller

    async def _audio(self, ulaw: bytes) -> None:
        self.record.audio_in_ms += len(ulaw) // 8
        if self._speaking is not None and self._speaking.kind == "fixture":
            self._vad.feed(b"\0\0" * len(ulaw), 8000)  # input is dropped while a fixture plays
            return
        for change, position in self._vad.feed(g711_to_pcm16(ulaw, "pcmu"), 8000):
            if change == "start":
                self._onset = position
                if self._speaking is not None and self._yield_at is None:
                    self._yield_at = self._output_ms + self.double.overlap_ms  # talks over them a while
            else:
                self._yield_at = None
                if self._utterance is not None:
                    self._utterance.speech_ended(max(position, self._utterance.onset))
                    self._utterance.committed = True
        if self._vad.speaking and self._utterance is None and self._vad.heard_voice:
            text = self.double.next_transcript()
            self._utterance = StreamedUtterance.start(f"utt_{self.index}", text, self._onset,
                                                      self.double.stream_lag_seconds, UNITS_PER_MS * 1000)
        await self._send_due_words()

    async def _send_due_words(self) -> None:
        utterance = self._utterance
        if utterance is None:
            return
        text = utterance.due(self._vad.position)
        if text:
            # Words come `lag` behind the audio: they were said by then.
            start = max(self._sent_to_ms, utterance.onset / UNITS_PER_MS)
            end = max(start, (self._vad.position - utterance.lag) / UNITS_PER_MS)
            self._sent_to_ms = end
            await self.send({"type": "session.input_transcript.delta", "delta": text,
                             "start_ms": int(start), "end_ms": int(end)})
        if utterance.completion_due():
            utterance.completed = True
            self._utterance = None
            if utterance.transcript not in self.double.unanswered:
                self._spawn(self._delegate(utterance.transcript))

    async def _delegate(self, question: str) -> None:
        await asyncio.sleep(self.double.delegation_delay)
        acknowledgement = Speech("acknowledgement", int(self.double.acknowledgement_seconds * 1000))
        if self.double.speaks_before_delegating:
            self._queue.append(acknowledgement)
            while self._speaking is acknowledgement or any(speech is acknowledgement for speech in self._queue):
                await asyncio.sleep(DELTA_MS / 1000)  # until it is said, or dropped (a yield, a fixture)
        delegation = Delegation(f"deleg_{self.index}_{len(self.delegations) + 1}", question)
        self.delegations[delegation.id] = delegation
        await self.send({"type": "session.delegation.created", "offset_ms": self.session_ms,
                         "delegation": {"id": delegation.id, "target": "client", "type": "delegation"}})
        if not self.double.speaks_before_delegating:
            self._queue.append(acknowledgement)

    # -- the model

    async def _mixer(self) -> None:
        """Output in real time; speech `lead_ms` ahead of the clock (sent as it is generated,
        faster than it plays, into the client's buffer), silence at the clock's pace."""
        start = time.perf_counter()
        chunk = 0
        while not self._done.is_set():
            lead = self.double.lead_ms if self._speaking is not None or self._queue else 0
            due = start + (chunk * DELTA_MS - lead) / 1000
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._next_chunk()
            chunk += 1

    async def _next_chunk(self) -> None:
        speech = self._speaking
        if speech is not None and speech.kind != "fixture" and self._yield_at is not None \
                and self._output_ms >= self._yield_at and self._vad.speaking:
            self.record.yields += 1  # the caller is still talking: the model stops for them
            self._speaking, self._yield_at = None, None
            self._queue.clear()
            speech = None
        if speech is None and self._queue:
            speech = self._speaking = self._queue.popleft()
            if speech.kind != "fixture":
                speech.asset_ms = self._asset_ms
                self._asset_ms += speech.ms
            self.record.spoken.append(speech.kind)
        if speech is not None and speech.kind == "fixture" and speech.sent_ms >= self.double.fixture_cancelled_at_ms:
            self._speaking = speech = None  # a cancelled playback: no `fixture.played`
        self._output_ms += DELTA_MS
        if speech is None:
            await self.send({"type": "session.output_audio.delta", "delta": base64.b64encode(SILENCE).decode()})
            return
        asset = self.double.asset
        assert asset is not None
        take = min(DELTA_MS, speech.ms - speech.sent_ms)
        if speech.audio is not None:
            audio = speech.audio[speech.sent_ms * 8 : (speech.sent_ms + take) * 8]
        else:
            audio = asset.slice_audio("pcmu", speech.asset_ms + speech.sent_ms, take)
            words = asset.transcript(speech.asset_ms + speech.sent_ms, take)
            if words:
                now = self.session_ms
                await self.send({"type": "session.output_transcript.delta", "delta": f" {words}",
                                 "start_ms": now, "end_ms": now + take})
        speech.sent_ms += take
        await self.send({"type": "session.output_audio.delta",
                         "delta": base64.b64encode(audio.ljust(8 * DELTA_MS, b"\xff")).decode()})
        if speech.sent_ms >= speech.ms:
            self._speaking = None
            if speech.kind == "fixture":
                await self.send(self._fixture_event("played"))

    # -- usage

    def _usage(self) -> dict[str, Any]:
        # A WebSocket session reports its seconds only: the active/paused split is WebRTC's.
        return {"seconds": self.session_ms // 1000}

    async def _usage_ticks(self) -> None:
        while not self._done.is_set():
            await asyncio.sleep(self.double.usage_interval)
            await self.send({"type": "session.usage.updated", "usage": self._usage()})

    async def _expire(self) -> None:
        """The session's duration limit, as announced in `expires_at`: it ends, reason `expired`."""
        await asyncio.sleep(self.double.session_seconds)
        await self._close(None, "expired")

    async def drop(self) -> None:
        """The service going away mid-session (tests of reconnection)."""
        self.dropped_at = asyncio.get_running_loop().time()
        self._done.set()
        await self._ws.close(1011, "live double: dropped")

    async def _drop_if_chosen(self, event: dict[str, Any]) -> None:
        """The test chose this event as the moment the service goes away (`LiveDouble.drop_when`)."""
        chosen = self.double.drop_when
        if chosen is not None and not self._done.is_set() and chosen(event):
            self.double.drop_when = None
            await self.drop()
