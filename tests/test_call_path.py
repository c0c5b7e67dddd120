"""The whole call path over real sockets: simulated Twilio caller → server → realtime double."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from app.logs import CallContextFilter
from app.simulators.twilio_caller import CallScript, Utterance, place_call
from tests.harness import AUDIO, AUTH_TOKEN, PUBLIC_URL, STREAM_PUBLIC_URL, free_loopback_port, running_line

QUESTION = AUDIO / "question_followup.wav"
INTERRUPTION = AUDIO / "interruption.wav"


async def call(line, script: CallScript, **options):
    options.setdefault("auth_token", AUTH_TOKEN)
    return await place_call(line.url, public_url=PUBLIC_URL, script=script, tunnels=line.tunnels, **options)


def played_between(result, start_t: float, end_t: float) -> float:
    """Audio played in bursts that started in [start_t, end_t), whatever the bursts' count."""
    return sum(burst.played_ms for burst in result.bursts if start_t <= burst.start_t < end_t)


def ask_once(**script) -> CallScript:
    return CallScript(utterances=[Utterance(QUESTION)], hangup_after=30, hangup_when_done_after_s=2.5, **script)


async def test_greeting_first_then_a_spoken_answer(double, stream_on):
    double.script_next_connection(["Et pour les œufs de cane, c'est pareil ?"], answer_seconds=2.0)
    async with running_line(openai_realtime_url=double.url, **stream_on) as line:
        result = await call(line, ask_once())
        async with asyncio.timeout(5):  # the session ends once the recap is written
            while line.metrics.active_calls:
                await asyncio.sleep(0.05)

    assert result.status == "completed", result.summary()
    assert result.violations == []
    connection = double.connections[0]
    assert len(double.connections) == 1, "the pre-warmed connection is the one the stream used"
    assert connection.errors_sent == [], "every event we sent was valid GA protocol"
    # The caller's μ-law reaches the model as PCM16 24 kHz (AUDIO_CODEC); the model answers in
    # the phone's own μ-law, which is played as it comes.
    assert connection.session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert connection.session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert {r.output_format["type"] for r in connection.responses} == {"audio/pcmu"}

    greeting, answer = connection.responses[:2]
    assert greeting.trigger == "client" and "Bonjour, ici OCTI" in greeting.instructions
    # RAG injection (the default): we create the answer once the question's passages are in.
    assert answer.trigger == "client" and answer.status == "completed"
    assert answer.instructions.startswith(line.settings.agent_instructions)

    question = result.utterances[0]
    assert result.bursts[0].start_t < question.start_t, "OCTI speaks first"
    heard_greeting = played_between(result, 0, question.start_t)
    heard_answer = played_between(result, question.speech_end_t, float("inf"))
    # Everything generated was played, to the frame (the tail is padded to a whole 20 ms frame).
    assert 0 <= heard_greeting - greeting.audio_ms < 20, result.summary()
    assert 0 <= heard_answer - answer.audio_ms < 20, result.summary()
    assert result.clears == []


async def test_log_lines_written_during_a_call_carry_its_call_sid(double, stream_on):
    double.script_next_connection(["Mes poules ne pondent plus."], answer_seconds=1.0)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(logging.INFO)
    keep.addFilter(CallContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(keep)
    root.setLevel(logging.INFO)
    try:
        async with running_line(openai_realtime_url=double.url, **stream_on) as line:
            result = await call(line, ask_once(dtmf=[(0.5, "5")]))
    finally:
        root.removeHandler(keep)
        root.setLevel(level)

    assert result.status == "completed", result.summary()
    # One from the caller's frames, one from the end of the session.
    pressed = [r for r in records if r.getMessage() == "caller pressed 5"]
    ended = [r for r in records if r.getMessage().startswith("call ended")]
    assert len(pressed) == 1 and len(ended) == 1
    assert {r.call for r in pressed + ended} == {result.call_sid}


@pytest.mark.parametrize("speed", [4.0, 1.2], ids=["answer-fully-generated", "answer-still-generating"])
async def test_without_a_minimum_a_barge_in_clears_and_truncates_at_once_at_what_was_heard(double, speed, stream_on):
    """BARGE_IN_MIN_MS=0: every sound over OCTI is a barge-in, and the service cancels the answer."""
    double.speed = speed
    double.script_next_connection(["Et pour les œufs de cane ?", "Attendez, une autre question."],
                                  answer_seconds=6.0)
    script = CallScript(
        utterances=[Utterance(QUESTION), Utterance(INTERRUPTION, after_answer_starts_ms=1500)],
        hangup_after=40, hangup_when_done_after_s=2.5,
    )
    async with running_line(openai_realtime_url=double.url, barge_in_min_ms=0, **stream_on) as line:
        result = await call(line, script)
        assert line.metrics.value("octi_barge_ins_total", kind="real") == 1
    connection = double.connections[0]

    assert result.status == "completed", result.summary()
    assert len(result.clears) == 1
    clear = result.clears[0]
    interrupted = connection.responses[1]
    if speed < 1.5:  # still generating when the caller cut in: the server cancels it itself
        assert interrupted.status == "cancelled" and interrupted.status_reason == "turn_detected"
    assert clear.flushed_ms > 0, "the answer was still queued at Twilio when the caller cut in"

    # The truncation point is what the caller actually heard.
    (truncation,) = connection.truncations
    assert truncation.item_id == interrupted.item_id
    assert abs(truncation.audio_end_ms - clear.played_ms) <= 40, (truncation, clear)
    assert connection.errors_sent == []
    assert "response.cancel" not in connection.client_event_counts, "the server auto-interrupts"

    barge_in = result.utterances[1]
    assert barge_in.barge_in and barge_in.clear_after_ms is not None
    # After the clear, the caller hears the answer to the interruption, not the rest of the old one.
    interrupted_burst = result.bursts[clear.burst]
    assert interrupted_burst.ended_by == "clear"
    assert all(burst.start_t > barge_in.speech_end_t for burst in result.bursts[clear.burst + 1 :])
    heard_after = played_between(result, barge_in.speech_end_t, float("inf"))
    assert 0 <= heard_after - connection.responses[2].audio_ms < 20


async def test_without_auto_interrupt_the_bridge_cancels_the_answer_itself(double):
    double.speed = 1.2  # the answer is still being generated when the caller cuts in
    double.script_next_connection(["Et pour les œufs de cane ?", "Attendez."], answer_seconds=6.0)
    script = CallScript(
        utterances=[Utterance(QUESTION), Utterance(INTERRUPTION, after_answer_starts_ms=1000)],
        hangup_after=40, hangup_when_done_after_s=2.5,
    )
    async with running_line(openai_realtime_url=double.url, vad_interrupt_response=False) as line:
        result = await call(line, script)
    connection = double.connections[0]
    assert connection.session["audio"]["input"]["turn_detection"]["interrupt_response"] is False
    assert connection.client_event_counts["response.cancel"] == 1
    interrupted = connection.responses[1]
    assert interrupted.status == "cancelled" and interrupted.status_reason == "client_cancelled"
    assert len(result.clears) == 1 and len(connection.truncations) == 1
    assert connection.errors_sent == []


async def test_signatures_are_required_on_webhook_and_stream(double, stream_on):
    async with running_line(openai_realtime_url=double.url, **stream_on) as line:
        script = CallScript(hangup_after=1)
        forged = await call(line, script, auth_token="not-the-auth-token")
        unsigned = await call(line, script, sign_stream=False)
        wrong_url = await place_call(line.url, public_url="https://attacker.example", auth_token=AUTH_TOKEN,
                                     script=script)
        refusals = line.metrics.value("octi_refusals_total", reason="signature")

    assert forged.status == "refused_webhook" and forged.http_status == 403
    assert wrong_url.status == "refused_webhook" and wrong_url.http_status == 403
    assert unsigned.status == "refused_stream" and unsigned.stream_http_status == 403
    assert refusals == 3


async def test_the_stream_listener_serves_only_the_media_stream(double):
    port = free_loopback_port()
    async with running_line(openai_realtime_url=double.url, stream_port=port,
                            stream_public_url=STREAM_PUBLIC_URL) as line:
        async with httpx.AsyncClient() as http:
            health = (await http.get(line.url + "/health")).json()
        assert health["twilio"]["stream_url"] == STREAM_PUBLIC_URL + "/voice/stream"
        with pytest.raises(InvalidStatus) as elsewhere:
            async with connect(f"ws://127.0.0.1:{port}/ws/realtime"):
                pass
        with pytest.raises(InvalidStatus) as unsigned:
            async with connect(f"ws://127.0.0.1:{port}/voice/stream"):
                pass
    assert elsewhere.value.response.status_code == 404
    assert unsigned.value.response.status_code == 403


async def test_a_stream_with_a_forged_or_replayed_token_is_closed(double, stream_on):
    def forge(message):
        if message.get("event") == "start":
            message["start"]["customParameters"]["token"] = "9999999999.deadbeef"
            return message
        return None

    async with running_line(openai_realtime_url=double.url, **stream_on) as line:
        result = await call(line, CallScript(hangup_after=3), send_hook=forge)
        assert line.metrics.value("octi_refusals_total", reason="stream_token") == 1
    assert result.closed_by == "server" and result.close_code == 1008
    assert not result.bursts, "nothing was played to a stream we could not tie to a call"


async def test_two_simultaneous_calls_do_not_share_state(double):
    double.transcripts = ["Et pour les œufs de cane ?", "Attendez."]
    double.answer_seconds = 5.0
    interrupting = CallScript(
        utterances=[Utterance(QUESTION), Utterance(INTERRUPTION, after_answer_starts_ms=1200)],
        hangup_after=40, hangup_when_done_after_s=2.5,
    )
    async with running_line(openai_realtime_url=double.url) as line:
        a, b = await asyncio.gather(call(line, interrupting, call_sid="CA" + "a" * 32),
                                    call(line, ask_once(), call_sid="CA" + "b" * 32))
    assert a.status == b.status == "completed"
    assert a.stream_sid != b.stream_sid
    assert len(a.clears) == 1 and not any(b.clears)
    assert len(double.connections) == 2
    truncated = [c for c in double.connections if c.truncations]
    assert len(truncated) == 1 and len(truncated[0].truncations) == 1
    calm = next(c for c in double.connections if not c.truncations)
    # The calm caller heard exactly its own greeting and answer, nothing of the other call.
    question = b.utterances[0]
    greeting, answer = calm.responses[:2]
    assert 0 <= played_between(b, 0, question.start_t) - greeting.audio_ms < 20
    assert 0 <= played_between(b, question.speech_end_t, float("inf")) - answer.audio_ms < 20


async def test_hang_up_releases_every_task_and_socket(double, stream_on):
    before = asyncio.all_tasks()
    async with running_line(openai_realtime_url=double.url, **stream_on) as line:
        results = await asyncio.gather(*(call(line, CallScript(hangup_after=1.5)) for _ in range(3)))
        assert all(r.status == "completed" and r.closed_by == "caller" for r in results)
        for connection in double.connections:
            closed = await connection.wait_closed(timeout=5)
            assert closed.initiated_by == "client"
        assert line.metrics.active_calls == 0 and len(line.prewarm) == 0
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    assert leaked == []


async def test_pcmu_passthrough_reaches_the_model_as_mulaw(double):
    double.script_next_connection(["Et pour les œufs de cane ?"], answer_seconds=1.5)
    async with running_line(openai_realtime_url=double.url, audio_codec="pcmu", rag_mode="off") as line:
        result = await call(line, ask_once())
    connection = double.connections[0]
    assert connection.session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert connection.errors_sent == []
    assert result.status == "completed"
    answer = connection.responses[1]
    # Without RAG we still ask for each answer: the service would answer a noise too.
    assert answer.trigger == "client"
    assert 0 <= played_between(result, result.utterances[0].speech_end_t, float("inf")) - answer.audio_ms < 20


async def test_without_an_openai_key_callers_leave_a_voicemail_and_health_reports_it():
    async with running_line(openai_api_key=None) as line:
        result = await call(line, CallScript(hangup_after=1))
        async with httpx.AsyncClient() as http:
            health = (await http.get(line.url + "/health")).json()
    assert result.status == "spoken_only" and result.hangup and "Record" in result.verbs
    assert "indisponible" in " ".join(result.say_texts)
    assert health["status"] == "degraded" and any("OPENAI_API_KEY" in problem for problem in health["problems"])
    # The seed backend's fields, beside ours: an ISO 8601 UTC time of the answer and the service.
    assert health["service"] == "octi-phone-line"
    answered = datetime.fromisoformat(health["timestamp"].replace("Z", "+00:00"))
    assert health["timestamp"].endswith("Z") and abs(datetime.now(timezone.utc) - answered) < timedelta(seconds=30)


async def test_an_unreachable_realtime_service_is_apologised_for():
    async with running_line(openai_realtime_url="ws://127.0.0.1:9/v1/realtime") as line:
        result = await call(line, CallScript(hangup_after=5))
        assert line.metrics.value("octi_engine_unavailable_total") == 1
    assert result.closed_by == "server"
    assert any("problème technique" in text for text in result.after_stream["say_texts"])


async def test_a_call_at_its_maximum_length_hears_a_warning_then_a_goodbye_then_hangs_up(double):
    """MAX_CALL_MINUTES (here 6 s): a warning before the end, a goodbye heard to its last frame,
    then our side ends the stream and Twilio hangs up."""
    double.script_next_connection(greeting_seconds=1.0, answer_seconds=1.0)
    async with running_line(openai_realtime_url=double.url, max_call_minutes=0.1) as line:
        result = await call(line, CallScript(utterances=[], hangup_after=30))
        assert line.metrics.active_calls == 0
    assert result.status == "completed" and result.closed_by == "server", result.summary()
    assert result.after_stream["hangup"] and not result.after_stream["say_texts"]
    connection = double.connections[0]
    greeting, warning, goodbye = connection.responses[:3]
    assert "Il nous reste 2 secondes" in warning.instructions
    assert "au revoir" in goodbye.instructions and goodbye.status == "completed"
    # The caller heard all three, whole: the stream closed only once the goodbye had played.
    heard_ms = sum(burst.played_ms for burst in result.bursts)
    assert 0 <= heard_ms - (greeting.audio_ms + warning.audio_ms + goodbye.audio_ms) < 60, result.summary()
    assert 6.0 <= result.duration_s < 9.0


async def test_a_draining_instance_sends_new_calls_back_to_the_public_url_when_others_share_it(double):
    async with running_line(openai_realtime_url=double.url, drain_redirect=True) as line:
        line.service.begin_drain()
        result = await call(line, CallScript(hangup_after=2))
    assert result.status == "spoken_only" and result.verbs == ["Redirect"]
    assert f"<Redirect method=\"POST\">{PUBLIC_URL}/voice/incoming</Redirect>" in result.twiml
    assert double.connections == []  # no engine was opened for it
