"""Property-based tests of everything a peer sends us: whatever arrives, a parsed message or a
clean refusal, never another exception, and what is valid survives the round trip.

Bounded by the "ci" profile (tests/hostile_inputs.py); `python -m benchmarks.fuzz` runs each
property on 100 000 inputs.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from functools import cache
from typing import Any, get_args
from urllib.parse import urlencode

import httpx
from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from app.channels.browser import wire as browser_wire
from app.channels.twilio import wire as twilio_wire
from app.channels.twilio.line import INCOMING_PATH, STATUS_PATH, STREAM_ENDED_PATH
from app.channels.twilio.transfer import DIAL_ENDED_PATH, WHISPER_PATH
from app.channels.twilio.voicemail import VOICEMAIL_PATH
from app.config import Settings
from app.engines.contract import EngineEvent
from app.engines.openai_realtime.engine import RealtimeEngine, RealtimeOptions
from app.simulators import twilio_wire as twilio_side
from app.web import create_app
from tests.hostile_inputs import (
    STREAM_SID, browser_frames, browser_messages, realtime_events, twilio_frames, webhook_forms,
)

# ------------------------------------------------------------------ Twilio Media Streams


@given(twilio_frames, st.sampled_from((None, STREAM_SID)))
def test_any_twilio_frame_parses_or_is_refused_with_a_reason(frame, stream_sid):
    try:
        message = twilio_wire.parse_inbound(frame, stream_sid)
    except twilio_wire.MalformedMessage as refused:
        assert refused.reason in twilio_wire.REASONS and str(refused)
    else:
        assert message is None or isinstance(message, get_args(twilio_wire.InboundMessage))


@given(st.binary(max_size=2000), st.integers(min_value=0, max_value=10**9), st.text(min_size=1, max_size=30),
       st.sampled_from("0123456789*#"))
def test_what_twilio_sends_is_read_back_exactly(audio, timestamp_ms, mark, digit):
    def read(message: dict[str, Any]) -> twilio_wire.InboundMessage | None:
        return twilio_wire.parse_inbound(json.dumps(message), STREAM_SID)

    sent = twilio_side.media_message(3, stream_sid=STREAM_SID, chunk=2, timestamp_ms=timestamp_ms, payload=audio)
    assert read(sent) == twilio_wire.Media(audio, timestamp_ms)
    assert read(twilio_side.mark_message(4, stream_sid=STREAM_SID, name=mark)) == twilio_wire.Mark(mark)
    assert read(twilio_side.dtmf_message(5, stream_sid=STREAM_SID, digit=digit)) == twilio_wire.Dtmf(digit)


@given(st.binary(max_size=2000), st.text(min_size=1, max_size=30))
def test_what_we_send_twilio_passes_its_checks_and_carries_the_audio_and_mark(audio, mark):
    media = twilio_side.check_server_frame(twilio_wire.media_message(STREAM_SID, audio), stream_sid=STREAM_SID)
    # μ-law that happens to start like a file header is still sent; Twilio only warns about it.
    assert [v.kind for v in media.violations] in ([], ["wav_header"]) and media.message.payload == audio
    echoed = twilio_side.check_server_frame(twilio_wire.mark_message(STREAM_SID, mark), stream_sid=STREAM_SID)
    assert echoed.violations == [] and echoed.message.name == mark


# ------------------------------------------------------------------ the browser protocol

BROWSER_CODES = {"bad_json", "bad_message", "unknown_type", "bad_audio", "audio_too_large", "json_as_audio",
                 "message_too_large"}


@given(browser_frames)
def test_any_browser_frame_parses_or_is_refused_with_a_code(frame):
    try:
        message = browser_wire.parse_client(frame)
    except browser_wire.WireError as refused:
        assert refused.code in BROWSER_CODES and str(refused)
    else:
        assert isinstance(message, get_args(browser_wire.ClientMessage))
        if isinstance(message, bytes):
            assert message == frame and len(message) % 2 == 0


@given(browser_messages)
def test_browser_control_messages_mean_what_they_say(message):
    try:
        parsed = browser_wire.parse_client(json.dumps(message))
    except browser_wire.WireError:
        return
    if isinstance(parsed, browser_wire.Playback):
        assert parsed.samples == message["samples"]
    elif isinstance(parsed, browser_wire.UserText):
        assert parsed.text == message["text"].strip() and parsed.text


@given(st.text(max_size=200), st.text(max_size=20))
def test_what_we_send_the_page_is_json_it_reads_back(text, code):
    assert json.loads(browser_wire.transcript_delta(text)) == {"type": "transcript_delta", "text": text}
    assert json.loads(browser_wire.error(text, code)) == {"type": "error", "message": text, "code": code}


@cache
def event_loop() -> asyncio.Runner:
    """One event loop for every example of the async properties (a new loop each costs more)."""
    return asyncio.Runner()


# ------------------------------------------------------------------ Realtime server events


class ScriptedConnection:
    """The engine's connection, replaying server events (as `RealtimeConnection.events` yields
    them: objects with a string `type`) and accepting every client event."""

    is_open = True
    close_code = None
    last_received_at = 0.0

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self._events = events

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        for event in self._events:
            yield event

    async def send(self, event: object) -> bool:
        return True


async def translated(events: list[dict[str, Any]], client_turns: bool) -> list[EngineEvent]:
    engine = RealtimeEngine(ScriptedConnection(events), Settings(_env_file=None, openai_api_key="sk-test"),
                            RealtimeOptions(client_turns=client_turns))
    await engine.answer(context="[1] Couveuse à 37,7 °C")  # a context to forget on `response.done`
    return [event async for event in engine.events()]


@given(st.lists(realtime_events, max_size=6), st.booleans())
def test_any_server_event_becomes_an_engine_event_or_is_dropped(events, client_turns):
    translated_events = event_loop().run(translated(events, client_turns))
    assert all(isinstance(event, get_args(EngineEvent)) for event in translated_events)
    assert len(translated_events) <= len(events)


# ------------------------------------------------------------------ Twilio webhooks

AUTH_TOKEN = "hostile-auth-token-0123456789abcd"
PUBLIC_URL = "https://octi.example.test"
WEBHOOK_PATHS = (INCOMING_PATH, STREAM_ENDED_PATH, WHISPER_PATH, DIAL_ENDED_PATH, VOICEMAIL_PATH, STATUS_PATH)


@cache
def webhooks() -> httpx.AsyncClient:
    """The service's routes in process, on one event loop for every example. No OpenAI key:
    an incoming call is answered with the voicemail, and no model is ever dialled."""
    settings = Settings(_env_file=None, twilio_auth_token=AUTH_TOKEN, public_base_url=PUBLIC_URL,
                        data_dir=tempfile.mkdtemp(prefix="octi-hostile-"))
    transport = httpx.ASGITransport(app=create_app(settings))
    return httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL)


@given(st.sampled_from(WEBHOOK_PATHS), webhook_forms, st.dictionaries(st.text(max_size=8), st.text(max_size=20),
                                                                       max_size=2),
       st.sampled_from(("signed", "forged", "unsigned")))
def test_any_webhook_form_is_answered_or_refused_never_a_server_error(path, form, query, signing):
    query_string = urlencode(query)
    url = f"{PUBLIC_URL}{path}" + (f"?{query_string}" if query_string else "")
    headers = {}
    if signing != "unsigned":
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, form)
        headers["X-Twilio-Signature"] = signature if signing == "signed" else signature[::-1] + "x"
    runner, client = event_loop(), webhooks()
    response = runner.run(client.post(url, data=form, headers=headers))
    assert response.status_code in ((200, 204) if signing == "signed" else (403,)), (response.status_code,
                                                                                      response.text)


@given(st.sampled_from(WEBHOOK_PATHS), st.binary(max_size=300),
       st.sampled_from(("application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                        "multipart/form-data", "text/plain", "")))
def test_a_garbled_webhook_body_is_refused_never_a_server_error(path, body, content_type):
    runner, client = event_loop(), webhooks()
    response = runner.run(client.post(path, content=body, headers={"content-type": content_type}))
    assert response.status_code in (400, 403), (response.status_code, response.text)


def test_the_webhook_signature_covers_the_form():
    """The check the properties rely on: a valid signature of another form is refused."""
    form = {"CallSid": "CA" + "1" * 32, "From": "+33612345678"}
    url = f"{PUBLIC_URL}{STREAM_ENDED_PATH}"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, form)
    runner, client = event_loop(), webhooks()
    assert runner.run(client.post(url, data=form, headers={"X-Twilio-Signature": signature})).status_code == 200
    form["From"] = "+33700000000"
    assert runner.run(client.post(url, data=form, headers={"X-Twilio-Signature": signature})).status_code == 403
