"""The simulated Twilio caller, driven against a small Twilio-customer server written here.

The server validates every signature with twilio's own RequestValidator and checks each
message the caller sends, so these tests pin the caller to Twilio's wire behaviour.
Assertions about time use the media clock (20 ms ticks, inbound `timestamp`s), never the
wall clock.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import re
import socket
import subprocess
import sys
import warnings
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.request_validator import RequestValidator

from app.simulators import twilio_wire as wire
from app.simulators.twilio_caller import (
    SKIP,
    CallScript,
    Playback,
    Utterance,
    place_call,
)
from tests.cli_runner import run_octi
from tests.harness import loopback_socket, serving_on

AUDIO = Path(__file__).parent / "audio"
TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC = "https://octi.example.test"
STREAM_URL = "wss://octi.example.test/voice/stream"
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SID_RE = re.compile(r"^[0-9a-f]{32}$")


# --------------------------------------------------------------------------- audio helpers


def tone_ulaw(ms: int, freq: float = 440.0, amplitude: float = 8000.0) -> bytes:
    t = np.arange(ms * 8) / 8000
    pcm = (amplitude * np.sin(2 * math.pi * freq * t)).astype("<i2").tobytes()
    return audioop.lin2ulaw(pcm, 2)


def write_wav(path: Path, *, rate: int, ms: int, freq: float, channels: int = 1, width: int = 2,
              amplitude: float = 8000.0) -> Path:
    t = np.arange(rate * ms // 1000) / rate
    mono = amplitude * np.sin(2 * math.pi * freq * t)
    frames = np.repeat(mono[:, None], channels, axis=1)
    if width == 1:
        data = np.clip(frames / 256 + 128, 0, 255).astype(np.uint8).tobytes()
    else:
        data = frames.astype("<i2").tobytes()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(data)
    return path


def peak_hz(ulaw: bytes) -> float:
    samples = np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / 8000)[spectrum.argmax()])


def is_silence(payload: bytes) -> bool:
    return payload == b"\xff" * len(payload)


# --------------------------------------------------------------------------- the test server


@dataclass
class StreamSession:
    """The server side of one media stream, as a scenario sees it."""

    ws: WebSocket
    received: list[Any] = field(default_factory=list)  # parsed JSON, or raw str/bytes when not JSON
    stream_sid: str = ""
    _inbox: asyncio.Queue = field(default_factory=asyncio.Queue)

    async def next(self, event: str) -> dict[str, Any]:
        """Wait for the next message of that event (messages in between are still recorded)."""
        while True:
            message = await self._inbox.get()
            if message is None:
                raise WebSocketDisconnect(1000)
            if isinstance(message, dict) and message.get("event") == event:
                return message

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            message = await self._inbox.get()
            if message is None:
                raise WebSocketDisconnect(1000)
            if isinstance(message, dict) and predicate(message):
                return message

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, bytes):
            await self.ws.send_bytes(message)
        elif isinstance(message, str):
            await self.ws.send_text(message)
        else:
            await self.ws.send_text(json.dumps(message))

    async def media(self, payload: bytes, chunk: int = 400) -> None:
        for offset in range(0, len(payload), chunk):
            data = base64.b64encode(payload[offset:offset + chunk]).decode()
            await self.send({"event": "media", "streamSid": self.stream_sid, "media": {"payload": data}})

    async def mark(self, name: str) -> None:
        await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def clear(self) -> None:
        await self.send({"event": "clear", "streamSid": self.stream_sid})

    def sent_after(self, index: int) -> list[Any]:
        return self.received[index:]


Scenario = Callable[[StreamSession], Awaitable[None]]


class Customer:
    """A Twilio customer's app: webhook, stream, status callback and Connect action, all validated."""

    def __init__(self, scenario: Scenario | None = None, *, twiml: str | None = None) -> None:
        self.validator = RequestValidator(TOKEN)
        self.scenario = scenario
        self.twiml = twiml
        self.webhooks: list[dict[str, Any]] = []
        self.stream_upgrades: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.actions: list[dict[str, Any]] = []
        self.session: StreamSession | None = None
        self.app = Starlette(routes=[
            Route("/voice/incoming", self.incoming, methods=["POST"]),
            Route("/voice/status", self.status, methods=["POST"]),
            Route("/voice/action", self.action, methods=["POST"]),
            WebSocketRoute("/voice/stream", self.stream),
        ])

    async def _signed_form(self, request: Request, store: list) -> tuple[dict[str, str], bool]:
        # parse_qsl rather than request.form(): no python-multipart needed for a urlencoded body.
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        valid = self.validator.validate(PUBLIC + request.url.path, form,
                                        request.headers.get("X-Twilio-Signature", ""))
        store.append({"form": form, "valid": valid, "user_agent": request.headers.get("user-agent")})
        return form, valid

    async def incoming(self, request: Request) -> Response:
        _, valid = await self._signed_form(request, self.webhooks)
        if not valid:
            return Response("forbidden", status_code=403)
        body = self.twiml or f"""<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Connect action="{PUBLIC}/voice/action" method="POST">
    <Stream url="{STREAM_URL}" statusCallback="{PUBLIC}/voice/status" statusCallbackMethod="POST">
      <Parameter name="token" value="tok-123"/>
      <Parameter name="from" value="+33612345678"/>
    </Stream>
  </Connect>
  <Say language="fr-FR">Au revoir.</Say>
  <Hangup/>
</Response>"""
        return Response(body, media_type="application/xml")

    async def status(self, request: Request) -> Response:
        await self._signed_form(request, self.statuses)
        return Response(status_code=204)

    async def action(self, request: Request) -> Response:
        _, valid = await self._signed_form(request, self.actions)
        if not valid:
            return Response("forbidden", status_code=403)
        return Response('<Response><Say language="fr-FR">Merci, au revoir.</Say><Hangup/></Response>',
                        media_type="application/xml")

    async def stream(self, ws: WebSocket) -> None:
        signature = ws.headers.get("x-twilio-signature", "")
        valid = bool(signature) and self.validator.validate(STREAM_URL, {}, signature)
        self.stream_upgrades.append({"valid": valid, "user_agent": ws.headers.get("user-agent")})
        if not valid:
            await ws.close(code=1008)  # before accept: uvicorn answers the upgrade with HTTP 403
            return
        await ws.accept()
        session = self.session = StreamSession(ws)

        async def read() -> None:
            try:
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    if message.get("bytes") is not None:
                        item: Any = message["bytes"]
                    else:
                        try:
                            item = json.loads(message["text"])
                        except ValueError:
                            item = message["text"]
                    session.received.append(item)
                    if isinstance(item, dict) and item.get("event") == "start":
                        session.stream_sid = item["streamSid"]
                    session._inbox.put_nowait(item)
            finally:
                session._inbox.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            if self.scenario is not None:
                await self.scenario(session)
        except WebSocketDisconnect:
            pass
        await reader


@contextlib.asynccontextmanager
async def serving(app: Starlette):
    sock, port = loopback_socket()
    async with serving_on(sock, uvicorn.Config(app, lifespan="off", log_level="warning", ws="websockets-sansio")):
        yield f"http://127.0.0.1:{port}"


async def call(customer: Customer, script: CallScript, **kwargs: Any):
    async with serving(customer.app) as url:
        kwargs.setdefault("auth_token", TOKEN)
        kwargs.setdefault("public_url", PUBLIC)
        return await place_call(url, script=script, **kwargs)


def numbered(messages: list[Any]) -> list[dict[str, Any]]:
    return [m for m in messages if isinstance(m, dict) and "sequenceNumber" in m]


# --------------------------------------------------------------------------- end-to-end


async def test_call_is_signed_and_speaks_twilio_media_streams_exactly() -> None:
    customer = Customer()  # listens only
    script = CallScript(hangup_after=1.0, dtmf=[(0.2, "5")],
                        raw_messages=[(0.3, "hello, not json"), (0.3, b"\x01\x02\x03")])
    result = await call(customer, script)

    assert result.status == "completed", result.summary()
    # Webhook: Twilio's inbound voice request, signed over the public URL.
    hook = customer.webhooks[0]
    assert hook["valid"] and hook["user_agent"] == "TwilioProxy/1.1"
    form = hook["form"]
    assert form["CallSid"].startswith("CA") and SID_RE.match(form["CallSid"][2:])
    assert form["AccountSid"].startswith("AC") and SID_RE.match(form["AccountSid"][2:])
    assert (form["From"], form["To"], form["Caller"], form["Called"]) == (
        "+33612345678", "+33198765432", "+33612345678", "+33198765432")
    assert (form["CallStatus"], form["Direction"], form["ApiVersion"]) == ("ringing", "inbound", "2010-04-01")
    assert form["FromCountry"] == form["ToCountry"] == "FR"
    assert result.http_status == 200 and result.verbs == ["Connect", "Say", "Hangup"]
    assert result.say_texts == ["Au revoir."] and result.hangup
    # Stream: the upgrade signed over the wss:// URL of the TwiML, with empty params.
    assert customer.stream_upgrades == [{"valid": True, "user_agent": "Twilio.TmeWs/1.0"}]
    assert result.stream_url == STREAM_URL and result.stream_connect_url.startswith("ws://127.0.0.1:")
    assert result.stream_http_status == 101
    assert result.custom_parameters == {"token": "tok-123", "from": "+33612345678"}

    got = customer.session.received
    assert got[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = got[1]
    assert start == {
        "event": "start", "sequenceNumber": "1", "streamSid": result.stream_sid,
        "start": {"streamSid": result.stream_sid, "accountSid": form["AccountSid"], "callSid": form["CallSid"],
                  "tracks": ["inbound"], "customParameters": {"token": "tok-123", "from": "+33612345678"},
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
    }
    assert result.stream_sid.startswith("MZ") and SID_RE.match(result.stream_sid[2:])

    # Every numbered message counts, as strings, with no gap; start is 1.
    seqs = [int(m["sequenceNumber"]) for m in numbered(got)]
    assert all(isinstance(m["sequenceNumber"], str) for m in numbered(got))
    assert seqs == list(range(1, len(seqs) + 1))

    media = [m for m in got if isinstance(m, dict) and m["event"] == "media"]
    assert len(media) == 50  # one per 20 ms for the whole second
    for i, m in enumerate(media):
        assert set(m) == {"event", "sequenceNumber", "streamSid", "media"} and m["streamSid"] == result.stream_sid
        assert set(m["media"]) == {"track", "chunk", "timestamp", "payload"}
        assert m["media"]["track"] == "inbound"
        assert m["media"]["chunk"] == str(i + 1) and m["media"]["timestamp"] == str(20 * i)
        payload = base64.b64decode(m["media"]["payload"])
        assert len(payload) == 160 and is_silence(payload)

    dtmf = next(m for m in got if isinstance(m, dict) and m["event"] == "dtmf")
    assert dtmf["dtmf"] == {"track": "inbound_track", "digit": "5"} and dtmf["streamSid"] == result.stream_sid
    # DTMF goes out at its time: after the 0.18 s frame, before the 0.2 s one.
    index = got.index(dtmf)
    assert got[index - 1]["media"]["timestamp"] == "180" and got[index + 1]["media"]["timestamp"] == "200"
    assert "hello, not json" in got and b"\x01\x02\x03" in got

    stop = got[-1]
    assert stop == {"event": "stop", "sequenceNumber": str(seqs[-1]), "streamSid": result.stream_sid,
                    "stop": {"accountSid": form["AccountSid"], "callSid": form["CallSid"]}}
    assert result.closed_by == "caller" and result.close_code == 1000

    # Status callbacks: signed, with Twilio's fields.
    assert [s["form"]["StreamEvent"] for s in customer.statuses] == ["stream-started", "stream-stopped"]
    for s in customer.statuses:
        assert s["valid"]
        assert {"AccountSid", "CallSid", "StreamSid", "StreamName", "Timestamp"} <= set(s["form"])
        assert s["form"]["StreamSid"] == result.stream_sid
    assert [cb["http_status"] for cb in result.status_callbacks] == [204, 204]

    # What the caller sent and heard covers the whole stream.
    assert result.duration_s == pytest.approx(1.0) and result.media_frames_sent == 50
    assert result.sent_audio == b"\xff" * 8000 and result.played_audio == b"\xff" * 8000
    assert result.violations == [] and result.bursts == [] and result.after_stream is None
    events = [(e["direction"], e["event"]) for e in result.timeline]
    assert events[:4] == [("sent", "webhook"), ("received", "webhook_response"), ("sent", "stream_connect"),
                          ("sent", "connected")]
    assert ("sent", "dtmf") in events and events.count(("sent", "raw")) == 2
    assert [e["t"] for e in result.timeline if e["event"] == "start"] == [0.0]
    assert all(e["t"] < 0 for e in result.timeline[:3])


@pytest.mark.parametrize("token", ["wrong-token", None])
async def test_webhook_with_a_bad_or_missing_signature_is_refused(token: str | None) -> None:
    customer = Customer()
    result = await call(customer, CallScript(hangup_after=1.0), auth_token=token)
    assert result.status == "refused_webhook" and result.http_status == 403
    assert customer.webhooks[0]["valid"] is False
    assert customer.stream_upgrades == [] and result.stream_sid is None
    assert result.played_audio == b""


@pytest.mark.parametrize("variant", ["unsigned", "signed_over_https", "wrong_token"])
async def test_stream_upgrade_with_a_bad_signature_is_refused(variant: str) -> None:
    customer = Customer()
    kwargs: dict[str, Any] = {}
    if variant == "unsigned":
        kwargs["sign_stream"] = False
    elif variant == "signed_over_https":
        # The classic server bug in reverse: the signature must cover the wss:// URL.
        kwargs["extra_stream_headers"] = {
            "X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(PUBLIC + "/voice/stream", {})}
    else:
        kwargs["extra_stream_headers"] = {
            "X-Twilio-Signature": RequestValidator("nope").compute_signature(STREAM_URL, {})}
    result = await call(customer, CallScript(hangup_after=1.0), **kwargs)
    assert result.status == "refused_stream" and result.stream_http_status == 403
    assert customer.webhooks[0]["valid"] and customer.stream_upgrades[0]["valid"] is False
    assert customer.session is None
    assert [s["form"]["StreamEvent"] for s in customer.statuses] == ["stream-error"]
    assert "StreamError" in customer.statuses[0]["form"]


async def test_marks_are_echoed_only_after_their_audio_played() -> None:
    first, second = tone_ulaw(300, 440), tone_ulaw(200, 660)
    seen: dict[str, str] = {}

    async def scenario(s: StreamSession) -> None:
        await s.next("start")
        await s.media(first)
        await s.mark("first")
        await s.media(second)
        await s.mark("second")
        for _ in range(2):
            echoed = await s.next("mark")
            # The reader may already be further on: look at what came just before the echo.
            before = s.received[:next(i for i, m in enumerate(s.received) if m is echoed)]
            media = [m for m in before if isinstance(m, dict) and m["event"] == "media"]
            seen[echoed["mark"]["name"]] = media[-1]["media"]["timestamp"]

    customer = Customer(scenario)
    result = await call(customer, CallScript(hangup_after=1.2))

    assert [b.played_ms for b in result.bursts] == [500]
    burst = result.bursts[0]
    assert burst.underruns == 0 and burst.ended_by == "drained"
    assert burst.end_t == pytest.approx(burst.start_t + 0.5)
    assert [(m.name, m.played) for m in result.marks_echoed] == [("first", True), ("second", True)]
    # On Twilio's clock: "first" came back right after the frame that finished its 300 ms.
    start_ms = round(burst.start_t * 1000)
    assert seen == {"first": str(start_ms + 280), "second": str(start_ms + 480)}
    # The caller heard exactly the server's audio, at the burst's offset, and silence around it.
    offset = start_ms * 8
    heard = result.played_audio
    assert heard[offset:offset + 4000] == first + second
    assert is_silence(heard[:offset]) and is_silence(heard[offset + 4000:])
    assert len(heard) == len(result.sent_audio) == 1.2 * 8000
    # The timeline records every received message and, in order, the echoes after the audio.
    received = [e for e in result.timeline if e["direction"] == "received" and e["event"] in ("media", "mark")]
    assert sum(e["bytes"] for e in received if e["event"] == "media") == 4000
    assert [e["name"] for e in received if e["event"] == "mark"] == ["first", "second"]
    echoes = [e for e in result.timeline if e["direction"] == "sent" and e["event"] == "mark"]
    assert echoes[0]["t"] <= echoes[1]["t"]
    assert result.violations == []


async def test_clear_flushes_the_queue_and_releases_pending_marks() -> None:
    speech = tone_ulaw(2000, 500)
    order: list[str] = []

    async def scenario(s: StreamSession) -> None:
        await s.next("start")
        await s.media(speech)
        await s.mark("end-of-answer")
        begun = int((await s.until(lambda m: m["event"] == "media"))["media"]["timestamp"])
        await s.until(lambda m: m["event"] == "media" and int(m["media"]["timestamp"]) >= begun + 400)
        order.append("clear")
        await s.clear()
        echoed = await s.next("mark")
        order.append(echoed["mark"]["name"])
        await s.mark("after-clear")  # nothing queued any more: echoed at once
        order.append((await s.next("mark"))["mark"]["name"])

    customer = Customer(scenario)
    result = await call(customer, CallScript(hangup_after=1.2))

    assert order == ["clear", "end-of-answer", "after-clear"]
    [clear] = result.clears
    assert clear.burst == 0 and clear.marks == ["end-of-answer"]
    assert 0 < clear.played_ms < 2000 and clear.played_ms + clear.flushed_ms == 2000
    assert result.bursts[0].ended_by == "clear" and result.bursts[0].played_ms == clear.played_ms
    assert [(m.name, m.played) for m in result.marks_echoed] == [("end-of-answer", False), ("after-clear", True)]
    # Exactly the played part was heard, then silence.
    offset = round(result.bursts[0].start_t * 8000)
    played = int(clear.played_ms * 8)
    assert result.played_audio[offset:offset + played] == speech[:played]
    assert is_silence(result.played_audio[offset + played:])
    # In the timeline the released mark follows the clear directly.
    events = [(e["direction"], e["event"]) for e in result.timeline]
    i = events.index(("received", "clear"))
    assert events[i + 1] == ("sent", "mark") and result.timeline[i + 1]["played"] is False
    assert result.timeline[i]["flushed_ms"] == clear.flushed_ms


async def test_malformed_server_messages_are_recorded_and_server_close_ends_the_call() -> None:
    async def scenario(s: StreamSession) -> None:
        # Before `start` arrives the server cannot know the streamSid: Twilio ignores this.
        await s.send({"event": "clear"})
        await s.next("start")
        sid = s.stream_sid
        riff = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40
        for bad in [
            b"\x00\x01binary",
            "{not json",
            {"event": "dance", "streamSid": sid},
            {"event": "media", "streamSid": sid, "media": {"payload": base64.b64encode(riff).decode()}},
            {"event": "media", "streamSid": sid, "media": {"payload": "***not base64***"}},
            {"event": "mark", "streamSid": sid, "mark": {}},
            {"event": "media", "streamSid": "MZ" + "0" * 32, "media": {"payload": "//8="}},
            {"event": "media", "streamSid": sid, "media": {"payload": "//8=", "track": "outbound"}},
        ]:
            await s.send(bad)
        await s.mark("still-alive")
        await s.next("mark")
        await s.ws.close(code=4000, reason="bye")

    async def slow_start(message: dict[str, Any]) -> None:
        if message.get("event") == "start":
            await asyncio.sleep(0.2)  # let the early server message arrive first

    customer = Customer(scenario)
    result = await call(customer, CallScript(hangup_after=3.0), send_hook=slow_start)

    assert result.status == "completed"
    kinds = [v["kind"] for v in result.violations]
    assert set(kinds) >= {"before_start", "binary_frame", "non_json", "unknown_event", "wav_header",
                          "invalid_base64", "mark_without_name", "wrong_stream_sid", "extra_field"}
    assert next(v for v in result.violations if v["kind"] == "binary_frame")["code"] == "31950"
    assert next(v for v in result.violations if v["kind"] == "unknown_event")["code"] == "31951"
    assert [m.name for m in result.marks_echoed] == ["still-alive"]
    # The RIFF media is played (as noise) and the extra-field media too: 2 + 56 bytes queued.
    media_entries = [e for e in result.timeline if e["direction"] == "received" and e["event"] == "media"]
    assert [e.get("dropped", False) for e in media_entries] == [False, True, True, False]
    assert sum(b.played_ms for b in result.bursts) == (len(b"RIFF\x24\x00\x00\x00WAVEfmt ") + 40 + 2) / 8
    # The server hung up: no stop from the caller, and Twilio went on to the Connect action.
    assert result.closed_by == "server" and result.close_code == 4000 and result.close_reason == "bye"
    assert not any(isinstance(m, dict) and m.get("event") == "stop" for m in customer.session.received)
    assert result.duration_s < 3.0
    assert customer.actions and customer.actions[0]["valid"]
    assert customer.actions[0]["form"]["CallSid"] == result.call_sid
    assert result.after_stream["source"] == "action" and result.after_stream["http_status"] == 200
    assert result.after_stream["say_texts"] == ["Merci, au revoir."] and result.after_stream["hangup"]
    assert ("received", "close") in [(e["direction"], e["event"]) for e in result.timeline]
    assert "stream-stopped" in [s["form"]["StreamEvent"] for s in customer.statuses]


async def test_turns_wait_for_silence_and_barge_in_talks_over_the_answer(tmp_path: Path) -> None:
    question = write_wav(tmp_path / "question.wav", rate=16000, ms=300, freq=700, channels=2)
    interruption = write_wav(tmp_path / "interruption.wav", rate=22050, ms=300, freq=900, width=1)
    greeting, answer = tone_ulaw(400, 440), tone_ulaw(1000, 550)
    speech_starts: list[int] = []
    question_audio = bytearray()

    async def scenario(s: StreamSession) -> None:
        await s.next("start")
        await s.media(greeting)
        await s.mark("greeting")
        talking = False
        answered = False
        while True:
            m = await s.next("media")
            payload = base64.b64decode(m["media"]["payload"])
            if not is_silence(payload) and not talking:
                talking = True
                speech_starts.append(int(m["media"]["timestamp"]))
                if answered:
                    await s.clear()  # barge-in: stop talking at once
                    return
            if talking and not answered:
                question_audio.extend(payload)
            if talking and is_silence(payload):
                talking = False
                if not answered:
                    answered = True
                    await s.media(answer)
                    await s.mark("answer")

    customer = Customer(scenario)
    script = CallScript(utterances=[Utterance(question), Utterance(interruption, after_answer_starts_ms=200)],
                        hangup_after=6.0, hangup_when_done_after_s=0.3)
    result = await call(customer, script)

    assert result.status == "completed" and result.closed_by == "caller", result.summary()
    q, b = result.utterances
    greet, ans = result.bursts
    # The first turn waits for the greeting to end plus 700 ms of silence.
    assert greet.played_ms == 400 and greet.ended_by == "drained"
    assert q.start_t >= greet.end_t + 0.7 and not q.over_playback and not q.barge_in
    assert q.duration_ms == pytest.approx(300, abs=1) and q.end_t == pytest.approx(q.start_t + 0.3, abs=0.001)
    # The server heard the question from that exact media timestamp, converted to 8 kHz μ-law.
    assert speech_starts[0] == round(q.start_t * 1000)
    expected = wire.wav_to_ulaw(question)
    assert bytes(question_audio[:len(expected)]) == expected
    assert (q.speech_start_t, q.speech_end_t) == (q.start_t, pytest.approx(q.end_t))  # a tone: all voice
    assert q.answer_latency_ms == pytest.approx((ans.start_t - q.speech_end_t) * 1000) and q.answer_latency_ms >= 0
    assert b.answer_latency_ms is None  # OCTI never answered the interruption before the hang-up
    # The barge-in starts 200 ms into the answer, over it, and the server's clear cut it.
    assert b.barge_in and b.over_playback and b.burst == ans.index
    assert b.start_t == pytest.approx(ans.start_t + 0.2)
    assert speech_starts[1] == round(b.start_t * 1000)
    [clear] = result.clears
    assert clear.burst == ans.index and clear.played_ms >= 200 and clear.played_ms + clear.flushed_ms == 1000
    assert ans.ended_by == "clear" and b.clear_after_ms is not None and b.clear_after_ms >= 0
    assert [(m.name, m.played) for m in result.marks_echoed] == [("greeting", True), ("answer", False)]
    # Hung up 0.3 s after the last utterance once the line was quiet, well before hangup_after.
    assert result.duration_s == pytest.approx(b.end_t + 0.3, abs=0.021)
    assert "barge-in" in result.summary()


async def test_virtual_time_runs_a_long_call_without_waiting(tmp_path: Path) -> None:
    async def scenario(s: StreamSession) -> None:
        await s.next("start")
        await s.media(tone_ulaw(100))
        await s.mark("m")

    customer = Customer(scenario)
    result = await call(customer, CallScript(hangup_after=20.0, comfort_noise_dbfs=-60), realtime=False)
    assert result.status == "completed" and result.duration_s == 20.0
    media = [m for m in customer.session.received if isinstance(m, dict) and m.get("event") == "media"]
    assert len(media) == 1000 and media[-1]["media"]["timestamp"] == "19980"
    assert customer.session.received[-1]["event"] == "stop"
    assert [m.name for m in result.marks_echoed] == ["m"]
    assert len(result.played_audio) == len(result.sent_audio) == 20 * 8000
    # Comfort noise: not digital silence, yet far below speech.
    noise = np.frombuffer(audioop.ulaw2lin(result.sent_audio, 2), "<i2").astype(float)
    assert not is_silence(result.sent_audio) and 5 < np.sqrt(np.mean(noise ** 2)) < 100
    # The stereo recording: caller left, OCTI right.
    path = tmp_path / "both.wav"
    await asyncio.to_thread(result.write_wav, path, stereo=True)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getnframes()) == (2, 20 * 8000)
        frames = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert frames[:, 0].tobytes() == audioop.ulaw2lin(result.sent_audio, 2)
    assert frames[:, 1].tobytes() == audioop.ulaw2lin(result.played_audio, 2)


async def test_twiml_without_a_stream_is_spoken_only() -> None:
    twiml = ('<?xml version="1.0"?><Response><Say language="fr-FR">Ligne indisponible.</Say><Hangup/></Response>')
    customer = Customer(twiml=twiml)
    result = await call(customer, CallScript(hangup_after=1.0))
    assert result.status == "spoken_only" and result.say_texts == ["Ligne indisponible."] and result.hangup
    assert customer.stream_upgrades == [] and result.stream_url is None


async def test_the_webhook_goes_to_the_path_given() -> None:
    # benchmarks/relay.py calls servers other than octi, whose webhook route differs.
    customer = Customer()
    result = await call(customer, CallScript(hangup_after=1.0), webhook_path="/voice/action")
    assert customer.webhooks == [] and [action["valid"] for action in customer.actions] == [True]
    assert result.status == "spoken_only" and result.say_texts == ["Merci, au revoir."]


async def test_server_down_is_reported_not_raised() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await place_call(f"http://127.0.0.1:{port}", script=CallScript(hangup_after=1.0), auth_token=TOKEN)
    assert result.status == "webhook_unreachable" and result.errors
    assert "no answer" in result.summary()


async def test_send_hook_can_rewrite_or_drop_messages() -> None:
    async def scenario(s: StreamSession) -> None:
        await s.next("start")

    def hook(message: dict[str, Any]) -> Any:
        if message["event"] == "media" and message["media"]["chunk"] == "2":
            return SKIP
        if message["event"] == "media" and message["media"]["chunk"] == "3":
            return {**message, "streamSid": "MZbogus"}
        return None

    customer = Customer(scenario)
    result = await call(customer, CallScript(hangup_after=0.2), send_hook=hook)
    media = [m for m in customer.session.received if isinstance(m, dict) and m.get("event") == "media"]
    assert [m["media"]["chunk"] for m in media] == ["1", "3", "4", "5", "6", "7", "8", "9", "10"]
    assert media[1]["streamSid"] == "MZbogus" and media[1]["sequenceNumber"] == "4"
    assert result.media_frames_sent == 10


async def test_cli_calls_and_writes_the_recording(tmp_path: Path) -> None:
    async def scenario(s: StreamSession) -> None:
        await s.next("start")
        await s.media(tone_ulaw(200))

    customer = Customer(scenario)
    out_wav, timeline = tmp_path / "heard.wav", tmp_path / "call.json"
    async with serving(customer.app) as url:
        result = await asyncio.to_thread(
            run_octi, "call", "--url", url, "--public-url", PUBLIC, "--auth-token", TOKEN, "--duration", "0.6",
            "--dtmf", "0.1:7", "--out-wav", str(out_wav), "--timeline", str(timeline))
    assert result.exit_code == 0
    printed = result.stdout
    assert "completed" in printed and "Greeting heard after" in printed and "caller hung up" in printed
    with wave.open(str(out_wav)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getnframes()) == (8000, 2, 1, 4800)
    record = json.loads(timeline.read_text())
    assert record["status"] == "completed" and record["bursts"][0]["played_ms"] == 200
    assert any(e["event"] == "dtmf" for e in record["timeline"])


def test_module_runs_as_a_program() -> None:
    done = subprocess.run([sys.executable, "-m", "app.simulators.twilio_caller", "--help"],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.returncode == 0 and "--barge-in-wav" in done.stdout


# --------------------------------------------------------------------------- pure parts


def test_playback_buffer_semantics() -> None:
    p = Playback()
    assert p.add_mark("idle") is True  # nothing queued: echoed at once
    p.append(b"\x01" * 200)
    assert p.add_mark("after-200") is False
    assert p.play(0) == b"\x01" * 160 and p.due_marks() == []
    frame = p.play(20)
    assert frame == b"\x01" * 40 + b"\xff" * 120  # a short frame is padded with silence
    assert p.due_marks() == ["after-200"]
    assert p.current is not None and p.current.played_ms == 25
    p.append(b"\x02" * 160)  # resumes after an underrun: same burst
    p.play(40)
    assert len(p.bursts) == 1 and p.bursts[0].underruns == 1
    for tick in range(60, 60 + 220, 20):
        assert p.play(tick) == b"\xff" * 160
    assert p.bursts[0].ended_by == "drained" and p.bursts[0].end_t == pytest.approx(0.06)
    p.append(b"\x03" * 800)
    p.add_mark("x")
    p.add_mark("y")
    p.play(300)
    record = p.clear(0.31)
    assert (record.burst, record.played_ms, record.flushed_ms, record.marks) == (1, 20, 80, ["x", "y"])
    assert p.idle and p.play(320) == b"\xff" * 160 and p.bursts[1].ended_by == "clear"


def test_playback_refuses_audio_beyond_twilios_buffer() -> None:
    p = Playback()
    assert p.append(b"\x00" * wire.PLAYBACK_LIMIT_BYTES) == 0
    assert p.append(b"\x00" * 500) == 500 and p.backlog == wire.PLAYBACK_LIMIT_BYTES
    p.play(0)
    assert p.append(b"\x00" * 500) == 340


def test_server_frame_checks() -> None:
    sid = "MZ" + "a" * 32

    def check(frame: Any, stream_sid: str | None = sid) -> tuple[Any, list[str]]:
        result = wire.check_server_frame(frame if isinstance(frame, (str, bytes)) else json.dumps(frame),
                                         stream_sid=stream_sid)
        return result.message, [v.kind for v in result.violations]

    ok = {"event": "media", "streamSid": sid, "media": {"payload": base64.b64encode(b"\x00\x01").decode()}}
    assert check(ok) == (wire.ServerMessage("media", payload=b"\x00\x01"), [])
    assert check({"event": "clear", "streamSid": sid}) == (wire.ServerMessage("clear"), [])
    assert check({"event": "mark", "streamSid": sid, "mark": {"name": "n"}})[0].name == "n"
    assert check(ok, stream_sid=None) == (None, ["before_start"])
    assert check({"event": "mark", "streamSid": sid, "mark": {"name": ""}}) == (None, ["mark_without_name"])
    assert check({"event": "mark", "streamSid": sid}) == (None, ["mark_without_name"])
    assert check({"event": "clear"}) == (None, ["missing_field"])
    assert check({"event": "media", "streamSid": sid, "media": {}}) == (None, ["missing_field"])
    assert check({"event": "clear", "streamSid": sid, "extra": 1})[1] == ["extra_field"]
    assert check("[1, 2]") == (None, ["non_json"])
    assert check({"streamSid": sid}) == (None, ["missing_field"])
    au = {"event": "media", "streamSid": sid, "media": {"payload": base64.b64encode(b".snd" + b"\0" * 20).decode()}}
    message, kinds = check(au)
    assert message is not None and kinds == ["wav_header"]


def test_twiml_parsing_and_url_mapping() -> None:
    doc = wire.parse_twiml(
        '<Response><Say>Un</Say><Connect action="/voice/action"><Stream url="/voice/stream" name="octi" '
        'statusCallback="https://pub.example/voice/status" statusCallbackMethod="get">'
        '<Parameter name="a" value="1"/><Parameter name="b"/></Stream></Connect>'
        '<Say>Deux</Say><Hangup/></Response>')
    assert doc.verbs == ["Say", "Connect", "Say", "Hangup"] and doc.says == ["Un", "Deux"]
    assert doc.says_after_connect == ["Deux"] and doc.hangup_after_connect
    assert doc.stream.parameters == {"a": "1", "b": ""} and doc.stream.status_callback_method == "GET"
    assert doc.stream.name == "octi" and doc.connect_action == "/voice/action"
    with pytest.raises(wire.TwimlError):
        wire.parse_twiml("<Reponse/>")
    with pytest.raises(wire.TwimlError):
        wire.parse_twiml("not xml")

    webhook = "https://pub.example/voice/incoming"
    assert wire.resolve_twiml_url("/voice/stream", document_url=webhook, websocket=True) == \
        "wss://pub.example/voice/stream"
    assert wire.resolve_twiml_url("ws://x:1/s", document_url=webhook, websocket=True) == "ws://x:1/s"
    assert wire.map_to_server("wss://pub.example/voice/stream", server_url="http://127.0.0.1:8000",
                              public_url="https://pub.example", websocket=True) == "ws://127.0.0.1:8000/voice/stream"
    assert wire.map_to_server("wss://pub.example/octi/voice/stream", server_url="https://srv:8443/api",
                              public_url="https://pub.example/octi", websocket=True) == \
        "wss://srv:8443/api/voice/stream"
    assert wire.map_to_server("https://pub.example/voice/status", server_url="http://h:1",
                              public_url="https://pub.example", websocket=False) == "http://h:1/voice/status"
    # A URL on another tunnel's host (the media stream's own listener) lands on that tunnel's server.
    tunnels = {"https://media.example": "http://127.0.0.1:9001"}
    assert wire.map_to_server("wss://media.example/voice/stream", server_url="http://127.0.0.1:8000",
                              public_url="https://pub.example", websocket=True, tunnels=tunnels) == \
        "ws://127.0.0.1:9001/voice/stream"
    assert wire.map_to_server("wss://pub.example/voice/stream", server_url="http://127.0.0.1:8000",
                              public_url="https://pub.example", websocket=True, tunnels=tunnels) == \
        "ws://127.0.0.1:8000/voice/stream"
    assert [v.kind for v in wire.stream_url_warnings("ws://h/s?x=1", {"p": "v" * 600})] == [
        "stream_url_scheme", "stream_url_query", "parameter_too_long"]


@pytest.mark.parametrize("name, seconds", [("question_followup.wav", 2.90025), ("question_incubation.wav", 5.118125),
                                           ("interruption.wav", 3.452063)])
def test_wav_files_of_any_rate_become_8khz_ulaw(name: str, seconds: float) -> None:
    ulaw = wire.wav_to_ulaw(AUDIO / name)
    assert abs(len(ulaw) - seconds * 8000) <= 2
    assert not is_silence(ulaw)


def test_wav_conversion_keeps_the_voice_band_and_drops_what_would_alias(tmp_path: Path) -> None:
    # 8-bit stereo at 44.1 kHz: mixed to mono, resampled, the tone stays at 440 Hz.
    ulaw = wire.wav_to_ulaw(write_wav(tmp_path / "a.wav", rate=44100, ms=500, freq=440, channels=2, width=1))
    assert len(ulaw) == pytest.approx(4000, abs=2) and peak_hz(ulaw) == pytest.approx(440, abs=20)
    # 6 kHz cannot exist at 8 kHz: it is filtered out rather than folded to 2 kHz.
    loud = np.frombuffer(audioop.ulaw2lin(tone_ulaw(500, 440), 2), "<i2").astype(float)
    aliased = wire.wav_to_ulaw(write_wav(tmp_path / "b.wav", rate=16000, ms=500, freq=6000))
    rest = np.frombuffer(audioop.ulaw2lin(aliased, 2), "<i2").astype(float)
    assert np.sqrt(np.mean(rest[200:-200] ** 2)) < 0.05 * np.sqrt(np.mean(loud ** 2))
    # 4 channels, 24-bit
    path = tmp_path / "c.wav"
    t = np.arange(8000) / 16000
    samples = (0.25 * np.sin(2 * math.pi * 300 * t) * 2**23).astype(np.int32)
    frames = np.repeat(samples[:, None], 4, axis=1).reshape(-1)
    raw = b"".join(int(x).to_bytes(4, "little", signed=True)[:3] for x in frames)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(4)
        out.setsampwidth(3)
        out.setframerate(16000)
        out.writeframes(raw)
    ulaw = wire.wav_to_ulaw(path)
    assert len(ulaw) == pytest.approx(4000, abs=2) and peak_hz(ulaw) == pytest.approx(300, abs=20)


def test_speech_bounds_skip_the_silence_around_the_words() -> None:
    quiet = b"\xff" * 800  # 100 ms
    assert wire.speech_bounds(quiet + tone_ulaw(300) + quiet + quiet) == (100.0, 400.0)
    assert wire.speech_bounds(quiet) is None and wire.speech_bounds(b"") is None
    start, end = wire.speech_bounds(wire.wav_to_ulaw(AUDIO / "question_followup.wav"))
    assert 0 <= start < end <= 2900.25


def test_utterance_rejects_two_triggers() -> None:
    with pytest.raises(ValueError):
        Utterance(AUDIO / "interruption.wav", at=1.0, after_answer_starts_ms=200)
    assert Utterance(AUDIO / "interruption.wav").label == "interruption"
