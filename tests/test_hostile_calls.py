"""Malformed and oversized messages in live calls, over real sockets: each is dropped, counted
and journaled, the call goes on, and another call at the same time notices nothing."""

from __future__ import annotations

import asyncio
import json

from app.calllog.store import CallLogStore
from app.calllog.views import CallQuery
from app.channels.twilio import wire
from app.simulators.twilio_caller import CallScript
from app.channels.websocket_io import WEBSOCKET_FRAME_LIMIT
from app.web import server_config
from tests.harness import running_line
from tests.browser_client import open_page, sign_in, started
from tests.test_call_path import ask_once, call, played_between

MiB = 1024 * 1024


def media(stream_sid: str, payload: str, **fields) -> str:
    return json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload, **fields}})


def padded(stream_sid: str, size: int) -> str:
    """A media message of exactly `size` characters."""
    shell = media(stream_sid, "")
    return media(stream_sid, "A" * (size - len(shell)))


# The 8 kinds of malformed message, each built for the call's stream, and its metric reason.
MALFORMED_KINDS = [
    ("oversized", lambda sid: padded(sid, 4 * MiB)),  # the 4 MiB frame
    ("binary", lambda sid: b"\x7f\xff" * 80),
    ("not_json", lambda sid: '{"event": "media", "streamSid": '),
    ("not_object", lambda sid: json.dumps(["media", sid])),
    ("no_event", lambda sid: json.dumps({"streamSid": sid, "media": {"payload": "//8="}})),
    ("bad_field", lambda sid: media(sid, "//8=", timestamp="soon")),
    ("bad_base64", lambda sid: media(sid, "%%% not base64")),
    ("wrong_stream", lambda sid: json.dumps({"event": "stop", "streamSid": "MZ" + "0" * 32,
                                             "stop": {"callSid": "CA" + "0" * 32}})),
]
# Not malformed, and not counted: ignored as Twilio may add events, and the call's identity is
# the first `start`'s.
IGNORED = [
    lambda sid: json.dumps({"event": "someday-new", "streamSid": sid}),
    lambda sid: json.dumps({"event": "start", "streamSid": sid, "start": {
        "streamSid": sid, "callSid": "CA" + "f" * 32, "accountSid": "AC" + "f" * 32,
        "customParameters": {"from": "+33700000000"}}}),
]


def injecting(builders, from_chunk: int = 5):
    """A send_hook replacing media frames from `from_chunk` on, one per builder, during the greeting."""
    schedule = dict(enumerate(builders, start=from_chunk))

    def hook(message):
        if message.get("event") != "media":
            return None
        build = schedule.pop(int(message["media"]["chunk"]), None)
        return None if build is None else build(message["streamSid"])
    return hook


def test_the_websocket_server_closes_only_past_a_16_mib_message():
    assert WEBSOCKET_FRAME_LIMIT == 16 * MiB
    assert server_config(None, "127.0.0.1", 8000).ws_max_size == WEBSOCKET_FRAME_LIMIT


async def test_every_malformed_kind_is_dropped_and_the_call_goes_on_beside_a_calm_one(double, stream_on):
    double.transcripts = ["Et pour les œufs de cane ?"]
    double.answer_seconds = 1.5
    builders = [build for _, build in MALFORMED_KINDS] + IGNORED
    async with running_line(openai_realtime_url=double.url, **stream_on) as line:
        hostile, calm = await asyncio.gather(
            call(line, ask_once(), call_sid="CA" + "a" * 32, send_hook=injecting(builders)),
            call(line, ask_once(), call_sid="CA" + "b" * 32))
        dropped = {reason: line.metrics.value("octi_stream_messages_dropped_total", reason=reason)
                   for reason in [*wire.REASONS, "oversized"]}
        assert await line.service.calllog.flush(timeout=15)
        async with await CallLogStore.open(line.settings.effective_database_url) as store:
            calls, _ = await store.list_calls(CallQuery())
            details = {c.summary.call_sid: c for c in [await store.get_call(s.id) for s in calls]}

    assert dropped == {reason: 1 for reason, _ in MALFORMED_KINDS}
    for result in (hostile, calm):
        assert result.status == "completed" and result.closed_by == "caller", result.summary()
    answered = [connection.responses[1].status for connection in double.connections]
    assert answered == ["completed", "completed"], "OCTI answered both callers after the junk"
    journaled = sorted(e.detail.split(":")[0] for e in details[hostile.call_sid].events if e.type == "message_dropped")
    assert journaled == sorted(reason for reason, _ in MALFORMED_KINDS)
    assert not [e for e in details[calm.call_sid].events if e.type == "message_dropped"]
    assert set(details) == {hostile.call_sid, calm.call_sid}, "the second start named no other call"
    # The calm caller heard a whole greeting and a whole answer (to the 20 ms frame).
    question = calm.utterances[0]
    greeting, answer = double.connections[0].responses[:2]
    assert 0 <= played_between(calm, 0, question.start_t) - greeting.audio_ms < 20
    assert 0 <= played_between(calm, question.speech_end_t, float("inf")) - answer.audio_ms < 20


async def test_a_message_over_the_server_limit_ends_only_its_own_stream(double, stream_on):
    double.script_next_connection(["Et pour les œufs de cane ?"], answer_seconds=1.5)
    too_big = padded("MZ", WEBSOCKET_FRAME_LIMIT + 1)
    async with running_line(openai_realtime_url=double.url, **stream_on) as line:
        result = await call(line, CallScript(raw_messages=[(0.3, too_big)], hangup_after=30))
        assert line.metrics.active_calls == 0

    # The websocket server refuses it before we see it (1009, message too big): the call is over.
    assert result.closed_by == "server" and result.close_code == 1009, result.summary()
    assert result.status == "completed", result.summary()


async def test_oversized_browser_frames_are_refused_and_the_conversation_goes_on(double):
    async with running_line(openai_realtime_url=double.url) as line:
        token = await sign_in(line)
        async with open_page(line.url, token=token) as page:
            await started(page)
            await page.ws.send(b"\x00" * (4 * MiB))
            await page.ws.send(json.dumps({"type": "user_text", "text": "a" * (2 * MiB)}))
            await page.until(lambda m: m.get("code") == "message_too_large")
            codes = [m.get("code") for m in page.texts if m["type"] == "error"]
            assert codes == ["audio_too_large", "message_too_large"]
            await page.send_json({"type": "user_text", "text": "Quelle température pour la couveuse ?"})
            await page.until(lambda m: m["type"] == "bot_audio_end")
            assert page.closed is None
        assert line.metrics.value("octi_stream_messages_dropped_total", reason="message_too_large") == 1
