"""The browser channel's limits over real sockets, between a page and the Realtime double: how
fast a page may send what costs."""

from __future__ import annotations

import asyncio
import contextlib
import time
import wave

import websockets

from app.calllog.store import CallLogStore
from app.channels.browser import pacing, wire
from tests.browser_client import open_page, sign_in, started, stored_calls
from tests.harness import running_line

UNITS_PER_SECOND = 48_000  # the double's audio timeline


async def test_audio_faster_than_real_time_is_dropped_then_the_socket_closed(double):
    """Past its burst, audio a page sends faster than a microphone could is dropped, each frame
    with an error; a page that keeps on is closed (1008). Neither the model nor the recording
    gets more than real time and the burst."""
    async with running_line(openai_realtime_url=double.url, record_calls=True) as line:
        token = await sign_in(line)
        async with open_page(line.url, token=token) as page:
            began = time.monotonic()  # before the conversation: what follows took no longer
            await started(page)
            connection = await double.wait_for_connection()
            largest = b"\x00\x00" * (wire.MAX_AUDIO_BYTES // 2)  # 2 s at 24 kHz
            with contextlib.suppress(websockets.ConnectionClosed):
                for _ in range(30):  # a minute of audio, at once
                    await page.ws.send(largest)
            code, _ = await page.wait_closed()
            lasted_s = time.monotonic() - began
        await connection.wait_for(lambda e: e["type"] == "input_audio_buffer.append", timeout=5)
        errors = [m for m in page.texts if m["type"] == "error"]
        [call] = await stored_calls(line)
        async with await CallLogStore.open(line.settings.effective_database_url) as store:
            with wave.open(str(await store.recording_path(call.summary.id))) as recording:
                recorded_s = recording.getnframes() / recording.getframerate()
        dropped = line.metrics.stream_messages_dropped.labels("audio_too_fast")._value.get()
    assert code == 1008 and errors[-1]["code"] == "audio_flood"
    assert {m["code"] for m in errors[:-1]} == {"audio_too_fast"} and all(m["message"] for m in errors)
    allowed_s = pacing.AUDIO_BURST_SECONDS + lasted_s * pacing.CATCH_UP
    assert 0 < connection.input_audio.total_units / UNITS_PER_SECOND <= allowed_s
    # The caller's side holds what was forwarded; OCTI's, the greeting.
    assert recorded_s <= max(allowed_s, lasted_s + connection.responses[0].audio_ms / 1000)
    assert sorted(e.detail.split(":")[0] for e in call.events if e.type == "message_dropped") == [
        "audio_flood", "audio_too_fast"]
    assert dropped == len(errors) - 1


async def test_a_page_catching_up_after_a_network_hiccup_loses_nothing(double):
    """A second and a half of microphone held up by the network arrives at once: within the burst."""
    async with running_line(openai_realtime_url=double.url) as line:
        token = await sign_in(line)
        async with open_page(line.url, token=token) as page:
            await started(page)
            connection = await double.wait_for_connection()
            for _ in range(75):
                await page.ws.send(b"\x00\x00" * 480)  # 20 ms at 24 kHz
            await page.send_json({"type": "raccrocher"})  # its error comes once the audio is handled
            await page.until(lambda m: m.get("code") == "unknown_type")
            async with asyncio.timeout(5):
                while connection.input_audio.total_units < 1.5 * UNITS_PER_SECOND:
                    await asyncio.sleep(0.02)
        assert [m["code"] for m in page.texts if m["type"] == "error"] == ["unknown_type"]


async def test_typed_questions_and_resets_past_a_small_burst_are_refused(double):
    """Each typed question stops OCTI, joins the model's conversation and starts a search; a
    reset opens a new model session: a few at once, then one a second. Past that they are
    refused with an error the page shows, and never reach the model."""
    async with running_line(openai_realtime_url=double.url) as line:
        token = await sign_in(line)
        async with open_page(line.url, token=token) as page:
            await started(page)
            began = time.monotonic()
            for n in range(10):
                await page.send_json({"type": "user_text", "text": f"Question {n} : " + "poussin " * 240})
            await page.send_json({"type": "reset_session"})
            await page.send_json({"type": "raccrocher"})  # its error comes once the others are handled
            await page.until(lambda m: m.get("code") == "unknown_type", timeout=20)
            lasted_s = time.monotonic() - began
        refused = [m for m in page.texts if m.get("code") == "too_many_messages"]
        [call] = await stored_calls(line)
    typed = [turn for turn in call.turns if turn.role == "caller"]
    resets = [event for event in call.events if event.type == "conversation_reset"]
    assert len(typed) + len(resets) + len(refused) == 11
    assert len(typed) + len(resets) <= pacing.MESSAGE_BURST + lasted_s * pacing.MESSAGES_PER_SECOND
    assert all("attendez" in m["message"] for m in refused)
    user_items = [item for c in double.connections for item in c.conversation if item.get("role") == "user"]
    assert len(user_items) == len(typed)
