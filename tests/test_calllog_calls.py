"""Calls through the real call path leave complete call records (and recordings)."""

from __future__ import annotations

import asyncio
import wave

import httpx
import numpy as np
import pytest

from app.calllog.store import CallLogStore
from app.simulators.twilio_caller import CallScript, Utterance, place_call
from tests.harness import AUDIO, AUTH_TOKEN, PUBLIC_URL, running_line

QUESTION = AUDIO / "question_followup.wav"
LONG_QUESTION = AUDIO / "question_incubation.wav"  # 5.1 s
INTERRUPTION = AUDIO / "interruption.wav"
ASKED = "Euh, à quelle température je dois mettre la couveuse pour des œufs de poule ?"


async def call(line, script: CallScript):
    return await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, script=script)


async def stored_call(line, call_sid: str):
    """The call as stored, once the session has ended and the writer has flushed."""
    while line.metrics.active_calls:
        await asyncio.sleep(0.05)
    assert await line.service.calllog.flush(timeout=15)
    async with await CallLogStore.open(line.settings.effective_database_url) as store:
        call_id = await store.find_call_id(call_sid)
        return await store.get_call(call_id), await store.recording_path(call_id)


def channel_levels(path, window_s: float = 0.1) -> tuple[np.ndarray, np.ndarray, int]:
    """RMS per window of each channel of a stereo WAV."""
    with wave.open(str(path)) as wav:
        assert wav.getnchannels() == 2 and wav.getsampwidth() == 2
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2).astype(np.float64)
    size = int(rate * window_s)
    windows = samples[: len(samples) // size * size].reshape(-1, size, 2)
    rms = np.sqrt((windows**2).mean(axis=1))
    return rms[:, 0], rms[:, 1], size


def loud(levels: np.ndarray, start_s: float, end_s: float, window_s: float = 0.1) -> float:
    """Share of windows in [start, end) with sound in them."""
    part = levels[int(start_s / window_s) : int(end_s / window_s)]
    return float((part > 300).mean()) if part.size else 0.0


async def test_a_call_leaves_its_record_turns_passages_latencies_and_recording(double):
    double.script_next_connection([ASKED, "Attendez, une autre question."], answer_seconds=6.0)
    script = CallScript(
        utterances=[Utterance(QUESTION), Utterance(INTERRUPTION, after_answer_starts_ms=1500)],
        hangup_after=40, hangup_when_done_after_s=2.5,
    )
    async with running_line(openai_realtime_url=double.url, record_calls=True) as line:
        result = await call(line, script)
        detail, recording = await stored_call(line, result.call_sid)
        left, right, _ = channel_levels(recording)
    assert result.status == "completed", result.summary()
    connection = double.connections[0]
    assert "enregistré" in connection.responses[0].instructions, "the greeting says the call is recorded"
    summary = detail.summary
    assert summary.outcome == "caller_hung_up" and summary.barge_ins == 1 and summary.recorded
    assert summary.caller_masked == "+336••••••78" and "12345" not in detail.caller_hash
    settings = line.settings
    assert detail.codec == "pcm16" and detail.rag_mode == "inject" and detail.model == settings.openai_realtime_model
    assert detail.transcription_model == settings.openai_transcribe_model
    assert detail.input_tokens > 0 and detail.output_audio_tokens > 0
    assert summary.cost_usd is not None and summary.cost_usd > 0   # the default models have prices

    roles = [turn.role for turn in detail.turns]
    assert roles == ["assistant", "caller", "assistant", "caller", "assistant"]
    greeting, question, interrupted, barge_in, answer = detail.turns
    assert question.text == ASKED and question.retrieval_outcome == "ok"
    # Among the passages, not necessarily first: the search follows the words as they stream in,
    # and on a loaded machine the one used may have had fewer of them.
    assert "sample_pack/incubation-temperature-humidite.md" in [passage.source for passage in question.passages]
    assert question.start_ms is not None and question.end_ms > question.start_ms
    # Offsets on the call timeline: the caller's own speech, not the VAD's silence after it.
    asked = result.utterances[0]
    assert abs(question.end_ms / 1000 - asked.speech_end_t) < 0.25, (question, asked)
    assert abs(question.start_ms / 1000 - asked.speech_start_t) < 0.45  # the VAD's prefix padding
    clear = result.clears[0]
    assert interrupted.interrupted and abs(interrupted.heard_ms - clear.played_ms) <= 40
    assert interrupted.text.endswith("…") and len(interrupted.text) < len(connection.responses[1].transcript)
    for turn in (interrupted, answer):
        assert turn.speech_end_to_model_audio_ms > 0 and turn.model_audio_to_caller_ms >= 0
    assert greeting.speech_end_to_model_audio_ms is None  # nobody had spoken yet

    # The recording: the caller on the left, OCTI on the right, where they happened.
    spoken = result.utterances[0]
    assert loud(left, spoken.speech_start_t + 0.2, spoken.speech_end_t - 0.2) > 0.6
    assert loud(left, 0.2, result.bursts[0].end_t - 0.2) == 0, "the caller was silent during the greeting"
    assert loud(right, result.bursts[0].start_t + 0.1, result.bursts[0].end_t - 0.1) > 0.6
    cut = result.bursts[clear.burst]
    assert loud(right, cut.start_t + 0.1, clear.t - 0.1) > 0.6, "OCTI heard until the barge-in"
    next_burst = result.bursts[clear.burst + 1]
    assert loud(right, clear.t + 0.15, next_burst.start_t - 0.15) == 0, "silent from the clear on"


@pytest.mark.parametrize("answer_seconds", [20.0, 60.0], ids=["answer-generated", "answer-being-generated"])
async def test_a_hang_up_during_an_answer_logs_it_as_far_as_the_caller_heard_it(double, answer_seconds):
    # The double generates 4x faster than real time: 20 s of answer are all generated before
    # the hang-up, 60 s are still being generated; the caller hears either from ~6 s to 14 s.
    double.script_next_connection([ASKED], answer_seconds=answer_seconds)
    script = CallScript(utterances=[Utterance(QUESTION)], hangup_after=14)
    async with running_line(openai_realtime_url=double.url) as line:
        result = await call(line, script)
        detail, _ = await stored_call(line, result.call_sid)
    assert result.status == "completed", result.summary()
    assert [turn.role for turn in detail.turns] == ["assistant", "caller", "assistant"]
    assert detail.summary.turns == 3, "every turn the call counted has its row"
    answer = detail.turns[2]
    heard = result.bursts[1].played_ms
    assert 3000 < heard < 10000, result.bursts
    assert answer.interrupted and abs(answer.heard_ms - heard) <= 250, (answer, heard)
    assert answer.text.endswith("…")


async def test_a_hang_up_in_the_middle_of_a_question_logs_the_question_so_far(double):
    # The caller starts once the greeting (1.5 s) was heard, and hangs up 2 to 3 s into the question.
    double.script_next_connection(["Bonjour, à quelle température faut-il mettre la couveuse pour des œufs ?"])
    script = CallScript(utterances=[Utterance(LONG_QUESTION)], hangup_after=5.5)
    async with running_line(openai_realtime_url=double.url) as line:
        result = await call(line, script)
        detail, _ = await stored_call(line, result.call_sid)
    assert result.status == "completed", result.summary()
    assert result.utterances[0].speech_start_t + 1 < 5.5 < result.utterances[0].speech_end_t, result.utterances
    assert [turn.role for turn in detail.turns] == ["assistant", "caller"]
    assert detail.summary.turns == 2, "every turn the call counted has its row"
    question = detail.turns[1]
    assert question.start_ms is not None and question.end_ms is None


async def test_the_database_down_during_a_call_loses_nothing(double, tmp_path):
    double.script_next_connection([ASKED], answer_seconds=1.5)
    unreachable = f"sqlite+aiosqlite:///{tmp_path}/missing-dir/calls.sqlite3"
    (tmp_path / "missing-dir").write_text("a file where the database's directory should be")
    script = CallScript(utterances=[Utterance(QUESTION)], hangup_after=30, hangup_when_done_after_s=2.5)
    async with running_line(openai_realtime_url=double.url, database_url=unreachable) as line:
        writer = line.service.calllog
        result = await call(line, script)
        assert result.status == "completed" and double.connections[0].responses[1].status == "completed"
        while line.metrics.active_calls:
            await asyncio.sleep(0.05)
        assert not await writer.flush(timeout=1)
        assert writer.status()["spool_pending"] > 0, "records wait in the spool"

        # The database comes back.
        working = f"sqlite+aiosqlite:///{tmp_path}/calls.sqlite3"
        writer.url = working
        assert await writer.flush(timeout=30)
    async with await CallLogStore.open(working) as store:
        detail = await store.get_call(await store.find_call_id(result.call_sid))
    assert detail.summary.outcome == "caller_hung_up"
    assert [turn.role for turn in detail.turns] == ["assistant", "caller", "assistant"]


async def test_refusals_are_logged_and_reviewers_see_calls_through_the_api(double):
    double.script_next_connection([ASKED], answer_seconds=1.0)
    async with running_line(openai_realtime_url=double.url, review_token="review-secret") as line:
        forged = await place_call(line.url, public_url=PUBLIC_URL, auth_token="wrong", script=CallScript(),
                                  call_sid="CA" + "f" * 32)
        result = await call(line, CallScript(utterances=[Utterance(QUESTION)], hangup_after=30,
                                             hangup_when_done_after_s=2.5))
        await stored_call(line, result.call_sid)
        async with httpx.AsyncClient(base_url=line.url) as http:
            refused = await http.get("/api/calls")
            listed = await http.get("/api/calls", params={"text": "couveuse"},
                                    headers={"Authorization": "Bearer review-secret"})
            forged_id = next(c["id"] for c in (await http.get(
                "/api/calls", headers={"Authorization": "Bearer review-secret"})).json()["items"]
                if c["call_sid"] == forged.call_sid)
            forged_detail = (await http.get(f"/api/calls/{forged_id}",
                                            headers={"Authorization": "Bearer review-secret"})).json()
    assert forged.status == "refused_webhook"
    assert refused.status_code == 401
    items = listed.json()["items"]
    assert [item["call_sid"] for item in items] == [result.call_sid], "search across transcripts"
    assert [event["type"] for event in forged_detail["events"]] == ["signature_refused"]
