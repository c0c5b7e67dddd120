"""The browser channel's limits over real sockets, between a page and the Realtime double: how
fast a page may send what costs, and when a conversation is refused."""

from __future__ import annotations

import asyncio
import contextlib
import time
import wave

import httpx
import websockets
from twilio.request_validator import RequestValidator

from app.agent import phrases
from app.calllog.store import CallLogStore
from app.channels.browser import pacing, wire
from app.channels.twilio.line import INCOMING_PATH
from app.channels.twilio.security import STATUS_PATH
from tests.browser_client import PASSWORD, open_page, sign_in, started, stored_calls
from tests.harness import AUTH_TOKEN, PUBLIC_URL, running_line
from tests.test_softphone_browser import open_softphone, sign_in_by_api

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
        # All of it, the last quiet part too, which may wait for more audio until the page leaves.
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


# ------------------------------------------------------------------ who is let in


async def signed_post(line, path: str, form: dict[str, str]) -> httpx.Response:
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + path, form)
    async with httpx.AsyncClient() as http:
        return await http.post(line.url + path, data=form, headers={"X-Twilio-Signature": signature})


async def refusal(line, token: str) -> tuple[int | None, list[dict]]:
    """A page asking for a conversation: how its socket closed, and what it was told."""
    async with open_page(line.url, token=token) as page:
        await page.send_json({"type": "start_conversation"})
        code, _ = await page.wait_closed()
    return code, page.texts


async def test_a_full_instance_tells_pages_the_lines_are_busy(double):
    """MAX_CONCURRENT_CALLS counts the phone's calls and the browser's conversations alike, phone
    calls admitted whose stream has not started yet included; a page refused is not charged
    one of its conversations of the hour."""
    async with running_line(openai_realtime_url=double.url, max_concurrent_calls=1, web_sessions_per_hour=1) as line:
        token = await sign_in(line)
        phoning = {"CallSid": "CA" + "7" * 32, "AccountSid": "AC" + "7" * 32, "From": "+33633333333",
                   "To": "+33100000000"}
        assert "<Stream" in (await signed_post(line, INCOMING_PATH, phoning)).text
        behind_the_phone = await refusal(line, token)
        # The caller hangs up before the stream opens: the place is free.
        await signed_post(line, STATUS_PATH, {**phoning, "CallStatus": "completed"})
        async with open_page(line.url, token=token) as page:
            await started(page)
            behind_a_page = await refusal(line, token)
            phoned = await signed_post(line, INCOMING_PATH, {**phoning, "CallSid": "CA" + "8" * 32})
    for code, texts in (behind_the_phone, behind_a_page):
        assert code == 1008 and [m["code"] for m in texts] == ["busy"] and "occupées" in texts[0]["message"]
    assert "occupées" in phoned.text and "<Stream" not in phoned.text
    assert line.metrics.refusals.labels("web_busy")._value.get() == 2


async def test_pages_are_told_at_once_while_the_model_cannot_be_reached(double):
    """As phone callers go to voicemail: once a conversation found the model down, the next
    pages are refused at once (1008) instead of each waiting for a connection that fails and
    keeping the model counted unreachable."""
    double.refuse_connections = True
    async with running_line(openai_realtime_url=double.url) as line:
        token = await sign_in(line)
        first, second = await refusal(line, token), await refusal(line, token)
    assert [m["code"] for m in first[1]] == ["unavailable"] and first[0] == 1011  # it tried
    assert second == (1008, [{"type": "error", "code": "unavailable", "message": phrases.UNAVAILABLE}])
    assert len(double.rejected_handshakes) == 1


async def test_pages_are_told_at_once_without_an_openai_key(double):
    async with running_line(openai_realtime_url=double.url, openai_api_key=None) as line:
        token = await sign_in(line)
        refused = await refusal(line, token)
    assert refused == (1008, [{"type": "error", "code": "unavailable", "message": phrases.UNAVAILABLE}])
    assert double.rejected_handshakes == [] and double.connections == []


async def test_the_softphone_says_the_lines_are_busy_and_does_not_retry(double, browser):
    async with running_line(openai_realtime_url=double.url, max_concurrent_calls=1) as line:
        await line.service.browser.users.add("marie", PASSWORD)
        phoning = {"CallSid": "CA" + "7" * 32, "AccountSid": "AC" + "7" * 32, "From": "+33633333333",
                   "To": "+33100000000"}
        assert "<Stream" in (await signed_post(line, INCOMING_PATH, phoning)).text  # the last place
        page = await open_softphone(browser, line, microphone=False)
        await sign_in_by_api(page)
        await page.click("#talk")
        await page.wait_for_function("document.querySelector('#talk').dataset.state === 'error'")
        said = await page.inner_text("#status")
        softphone = await page.evaluate("window.octiSoftphone")
    assert "occupées" in said
    # Refused (1008): no « nouvelle tentative », no connecting again.
    assert softphone["states"] == ["idle", "connecting", "error"] and softphone["errors"][-1] == "busy"
