"""A call outlives its model session, over real sockets: the simulated Twilio caller, the server
and the Realtime double, which drops connections, refuses new ones and ends sessions at a cap."""

from __future__ import annotations

import asyncio
import wave

from app.agent.resilience import FILLER_WAV
from app.simulators.twilio_caller import CallScript, Utterance
from tests.harness import running_line
from tests.test_barge_in_noise import conversation_responses, stored
from tests.test_call_path import QUESTION, call, played_between

with wave.open(str(FILLER_WAV)) as _wav:
    FILLER_MS = _wav.getnframes() / _wav.getframerate() * 1000  # « Un instant. »


def messages(connection) -> list[tuple[str, str]]:
    """The conversation a double's session holds, as (role, text)."""
    return [(item["role"], item["content"][0].get("text") or item["content"][0].get("transcript") or "")
            for item in connection.conversation if item["type"] == "message"]


async def until(condition, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_a_connection_dropped_mid_answer_is_restored_and_the_question_answered_again(double):
    double.speed = 1.5  # the answer is still being generated when the connection drops
    double.script_next_connection(["Et pour les œufs de cane ?"], answer_seconds=6.0)
    double.script_next_connection([], answer_seconds=1.5)
    async with running_line(openai_realtime_url=double.url) as line:
        calling = asyncio.create_task(call(line, CallScript(utterances=[Utterance(QUESTION)], hangup_after=40,
                                                            hangup_when_done_after_s=2.5)))
        first = await double.wait_for_connection()
        await until(lambda: len(first.responses) > 1 and first.responses[1].audio_ms > 1500)
        await double.drop_all(code=1011)
        second = await double.wait_for_connection()
        result = await calling
        assert line.metrics.value("octi_engine_reconnects_total", outcome="restored") == 1
        detail = await stored(line, result.call_sid)

    assert result.status == "completed", result.summary()
    assert second.errors_sent == []
    greeting, cut_answer = conversation_responses(first)
    assert cut_answer.status != "completed"
    # The new session was given the conversation: the greeting, the question, and what the caller
    # heard of the answer, marked as cut off.
    restored = messages(second)
    assert restored[:2] == [("assistant", greeting.transcript), ("user", "Et pour les œufs de cane ?")]
    role, heard = restored[2]
    assert role == "assistant" and heard.endswith(" …")
    assert 0 < len(heard) - 2 and cut_answer.transcript.startswith(heard[:-2])
    # The question was asked again, with its passages, and its answer heard to the end.
    again = second.responses[0]
    assert again.trigger == "client" and again.status == "completed"
    assert any(item.get("role") == "system" for item in again.input_items), "the question's passages"
    question = result.utterances[0]
    heard_ms = played_between(result, question.speech_end_t, float("inf"))
    assert heard_ms >= FILLER_MS + again.audio_ms, "« Un instant. », then the answer"
    assert [event.type for event in detail.events] == ["engine_lost", "engine_reconnect"]
    assert detail.turns[-1].role == "assistant" and not detail.turns[-1].interrupted


async def test_a_question_asked_while_the_connection_drops_is_heard_whole_and_answered(double):
    double.script_next_connection([], greeting_seconds=1.0)
    double.script_next_connection(["Et pour les œufs de cane ?"], answer_seconds=1.5)
    async with running_line(openai_realtime_url=double.url) as line:
        calling = asyncio.create_task(call(line, CallScript(utterances=[Utterance(QUESTION)], hangup_after=40,
                                                            hangup_when_done_after_s=2.5)))
        first = await double.wait_for_connection()
        await first.wait_for_server(lambda e: e["type"] == "input_audio_buffer.speech_started", timeout=15)
        await asyncio.sleep(0.3)  # the caller is mid-question
        await double.drop_all(abort=True)
        second = await double.wait_for_connection()
        result = await calling

    assert result.status == "completed", result.summary()
    assert len(conversation_responses(first)) == 1, "the first session never answered"
    # The new session heard the question from its start (kept audio), then the rest of it.
    question = result.utterances[0]
    assert second.audio_ms_appended >= question.duration_ms - 100
    assert messages(second)[1] == ("user", "Et pour les œufs de cane ?")
    answer = second.responses[0]
    assert answer.trigger == "client" and answer.status == "completed"
    assert played_between(result, question.speech_end_t, float("inf")) >= answer.audio_ms


async def test_three_failed_reconnections_end_with_an_apology_and_the_voicemail(double):
    double.script_next_connection(answer_seconds=1.0)
    before = asyncio.all_tasks()
    async with running_line(openai_realtime_url=double.url) as line:
        calling = asyncio.create_task(call(line, CallScript(hangup_after=20)))
        connection = await double.wait_for_connection()
        double.refuse_next(3)
        await connection.wait_for_server(lambda e: e["type"] == "response.done", timeout=10)
        await double.drop_all(code=1011)
        result = await asyncio.wait_for(calling, 15)
        assert line.metrics.value("octi_engine_reconnects_total", outcome="failed") == 1
        assert not line.service.agent.reachable(), "the next callers go to the voicemail at once"
        detail = await stored(line, result.call_sid)
    assert len(double.connections) == 1 and len(double.rejected_handshakes) == 3
    assert result.closed_by == "server"
    assert any("problème technique" in text for text in result.after_stream["say_texts"])
    assert "<Record" in result.after_stream["twiml"]
    assert [event.type for event in detail.events] == ["engine_lost", "engine_reconnect_failed", "upstream_failure"]
    assert detail.summary.outcome == "error"
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    assert leaked == []


async def test_the_session_is_renewed_before_the_service_cap_between_turns_without_a_sound(double):
    """A 10 s session, as announced in `session.created`'s `expires_at` (the configured cap is
    the default hour): the session is renewed from 7.5 s on, once OCTI has answered the first
    question."""
    double.session_max_seconds = 10.0
    double.script_next_connection(["Et pour les œufs de cane ?"], answer_seconds=1.0, greeting_seconds=1.0)
    double.script_next_connection(["Et la température ?"], answer_seconds=1.0)
    script = CallScript(utterances=[Utterance(QUESTION), Utterance(QUESTION, at=8.5)], hangup_after=30,
                        hangup_when_done_after_s=1.0)
    async with running_line(openai_realtime_url=double.url) as line:
        assert line.settings.realtime_session_max_minutes == 60
        calling = asyncio.create_task(call(line, script))
        await double.wait_for_connection()
        double.session_max_seconds = None  # the renewed session lives on: one renewal in this call
        result = await calling
        assert line.metrics.value("octi_engine_recycles_total") >= 1
        assert line.metrics.value("octi_engine_reconnects_total", outcome="restored") == 0
        detail = await stored(line, result.call_sid)
    assert result.status == "completed", result.summary()
    for connection in double.connections:  # none reached the cap: each was closed by us
        assert connection.errors_sent == [] and (await connection.wait_closed()).initiated_by == "client"
    second = double.connections[1]
    assert second.session["audio"]["output"]["format"] == {"type": "audio/pcmu"}, "the phone's μ-law again"
    assert messages(second)[:2] == [("assistant", double.connections[0].responses[0].transcript),
                                    ("user", "Et pour les œufs de cane ?")]
    assert [role for role, _ in messages(second)] == ["assistant", "user", "assistant", "user", "assistant"]
    # The caller heard the sessions' answers and nothing else: no « Un instant. ».
    said_ms = sum(r.audio_ms for c in double.connections for r in conversation_responses(c))
    heard_ms = sum(burst.played_ms for burst in result.bursts)
    assert 0 <= heard_ms - said_ms < 3 * 20, (heard_ms, said_ms)
    assert "engine_recycled" in [event.type for event in detail.events]
    assert "engine_lost" not in [event.type for event in detail.events]


async def test_a_connection_dropped_while_the_session_is_renewed_is_replaced_by_the_renewed_one(double):
    """The old session drops while the renewal's handshake is under way: the renewed session
    carries the call on, with no second new session and no « Un instant. »."""
    double.session_max_seconds = 8.0
    double.script_next_connection(["Et pour les œufs de cane ?"], answer_seconds=1.0, greeting_seconds=1.0)
    double.script_next_connection(["Et la température ?"], answer_seconds=1.0)
    script = CallScript(utterances=[Utterance(QUESTION), Utterance(QUESTION, at=9.5)], hangup_after=30,
                        hangup_when_done_after_s=1.0)
    async with running_line(openai_realtime_url=double.url) as line:
        calling = asyncio.create_task(call(line, script))
        first = await double.wait_for_connection()
        double.session_max_seconds = None  # the renewed session lives on: one renewal in this call
        await first.wait_for_server(lambda e: e["type"] == "response.done", timeout=10)  # the greeting
        double.handshake_delay = 1.5
        await until(lambda: double.handshakes_waiting > 0, timeout=20)  # the renewal is connecting
        await double.drop_all(code=1011)
        result = await asyncio.wait_for(calling, 40)
        assert line.metrics.value("octi_engine_recycles_total") == 1
        assert line.metrics.value("octi_engine_reconnects_total", outcome="restored") == 0
        detail = await stored(line, result.call_sid)
    assert result.status == "completed", result.summary()
    assert len(double.connections) == 2, "the renewed session replaced the dropped one"
    second = double.connections[1]
    assert [role for role, _ in messages(second)][-2:] == ["user", "assistant"], "the second question was answered"
    said_ms = sum(r.audio_ms for c in double.connections for r in conversation_responses(c))
    heard_ms = sum(burst.played_ms for burst in result.bursts)
    assert 0 <= heard_ms - said_ms < 3 * 20, "no « Un instant. »"
    types = [event.type for event in detail.events]
    assert "engine_lost" in types and "engine_recycled" in types and "engine_reconnect" not in types


async def test_what_the_caller_says_during_a_failed_renewal_reaches_the_session_that_lives_on(double):
    """A 10 s cap (REALTIME_SESSION_MAX_MINUTES): the renewal from 7.5 s on is held 4 s by the
    service, then refused. The question asked meanwhile was kept for the new session; the old
    one, which lives on, hears it once the renewal has failed, and answers it."""
    double.script_next_connection(["Et pour les œufs de cane ?", "Et la température ?"], answer_seconds=1.0,
                                  greeting_seconds=1.0)
    script = CallScript(utterances=[Utterance(QUESTION), Utterance(QUESTION, at=8.0)], hangup_after=30,
                        hangup_when_done_after_s=1.0)
    async with running_line(openai_realtime_url=double.url, realtime_session_max_minutes=10 / 60) as line:
        calling = asyncio.create_task(call(line, script))
        first = await double.wait_for_connection()
        double.handshake_delay = 4.0
        double.refuse_next(1)
        await until(lambda: double.rejected_handshakes, timeout=20)
        double.handshake_delay = 0.0
        result = await asyncio.wait_for(calling, 40)
        assert line.metrics.value("octi_engine_reconnects_total", outcome="restored") == 0
    assert result.status == "completed", result.summary()
    assert [text for role, text in messages(first) if role == "user"] == [
        "Et pour les œufs de cane ?", "Et la température ?"], "the old session heard the second question"
    second_question = result.utterances[1]
    assert played_between(result, second_question.speech_end_t, float("inf")) > 0, "and its answer was heard"
