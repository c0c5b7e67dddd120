"""Barn noise is not a barge-in, over real sockets: the simulated Twilio caller, the server and
the Realtime double (whose VAD finds a noise burst as a turn, and whose transcription hears no
words in it)."""

from __future__ import annotations

import pytest

from app.calllog.store import CallLogStore
from app.simulators.twilio_caller import CallScript, NoiseBurst, Utterance
from tests.harness import running_line
from tests.test_call_path import INTERRUPTION, QUESTION, call, played_between


async def stored(line, call_sid: str):
    assert await line.service.calllog.flush(timeout=15)
    async with await CallLogStore.open(line.settings.effective_database_url) as store:
        return await store.get_call(await store.find_call_id(call_sid))


def conversation_responses(connection):
    return [r for r in connection.responses if r.conversation == "auto"]


def first_time(connection, side: str, predicate) -> float:
    return next(at for at, who, event in connection.timed_events() if who == side and predicate(event))


def last_turn(connection) -> tuple[float, float]:
    """When the double reported the start and the end of the caller's last turn."""
    events = [(at, event["type"]) for at, who, event in connection.timed_events() if who == "server"]
    started = max(at for at, kind in events if kind == "input_audio_buffer.speech_started")
    stopped = min(at for at, kind in events if kind == "input_audio_buffer.speech_stopped" and at > started)
    return started, stopped


@pytest.mark.parametrize("speed", [4.0, 1.2], ids=["answer-fully-generated", "answer-still-generating"])
async def test_noise_bursts_over_an_answer_pause_it_and_the_whole_answer_is_heard_once(double, speed):
    double.speed = speed
    double.script_next_connection(["Et pour les œufs de cane ?"], answer_seconds=6.0)
    script = CallScript(
        utterances=[Utterance(QUESTION), NoiseBurst(after_answer_starts_ms=1000),
                    NoiseBurst(after_answer_starts_ms=1000)],
        hangup_after=40, hangup_when_done_after_s=2.5,
    )
    async with running_line(openai_realtime_url=double.url) as line:
        result = await call(line, script)
        assert line.metrics.value("octi_barge_ins_total", kind="real") == 0
        assert line.metrics.value("octi_barge_ins_total", kind="false") == 2
        detail = await stored(line, result.call_sid)
    connection = double.connections[0]

    assert result.status == "completed", result.summary()
    assert result.violations == [] and connection.errors_sent == []
    question, *noises = result.utterances
    assert len(noises) == 2 and all(noise.noise and noise.over_playback for noise in noises)
    # Each noise silenced OCTI at once, and nothing of the answer was given up.
    assert len(result.clears) == 2
    assert connection.truncations == []
    assert "response.cancel" not in connection.client_event_counts
    greeting, answer = conversation_responses(connection)  # no answer to a noise
    assert answer.status == "completed"
    # Every ms generated was heard, none twice: what was cleared came again from where it was cut
    # (to the 20 ms frame, at each of the two resumptions and the padded tail).
    heard = played_between(result, question.speech_end_t, float("inf"))
    assert abs(heard - answer.audio_ms) <= 3 * 20, (heard, answer.audio_ms)
    # The noises left the conversation: the question is the caller's only item.
    assert [item["role"] for item in connection.conversation if item["type"] == "message"] == [
        "assistant", "user", "assistant"]
    assert [event.type for event in detail.events] == ["false_barge_in", "false_barge_in"]
    assert [turn.role for turn in detail.turns] == ["assistant", "caller", "assistant"]
    assert not any(turn.interrupted for turn in detail.turns)


async def test_speech_over_an_answer_is_a_barge_in_cut_at_what_was_heard_before_the_pause(double):
    double.speed = 1.2  # the answer is still being generated when the caller cuts in
    double.script_next_connection(["Et pour les œufs de cane ?", "Attendez, une autre question."],
                                  answer_seconds=6.0)
    script = CallScript(
        utterances=[Utterance(QUESTION), Utterance(INTERRUPTION, after_answer_starts_ms=1500)],
        hangup_after=40, hangup_when_done_after_s=2.5,
    )
    async with running_line(openai_realtime_url=double.url) as line:
        result = await call(line, script)
        assert line.metrics.value("octi_barge_ins_total", kind="real") == 1
        assert line.metrics.value("octi_barge_ins_total", kind="false") == 0
        detail = await stored(line, result.call_sid)
    connection = double.connections[0]

    assert result.status == "completed", result.summary()
    assert connection.errors_sent == []
    (clear,) = result.clears
    interrupted = conversation_responses(connection)[1]
    # The service left the answer alone; we cancelled it once the sound proved to be speech.
    assert interrupted.status == "cancelled" and interrupted.status_reason == "client_cancelled"
    (truncation,) = connection.truncations
    assert truncation.item_id == interrupted.item_id
    assert abs(truncation.audio_end_ms - clear.played_ms) <= 40, (truncation, clear)
    # After the clear, the caller hears the answer to the interruption, not the rest of the old one.
    barge_in = result.utterances[1]
    assert all(burst.start_t > barge_in.speech_end_t for burst in result.bursts[clear.burst + 1:])
    heard_after = played_between(result, barge_in.speech_end_t, float("inf"))
    assert 0 <= heard_after - conversation_responses(connection)[2].audio_ms < 20
    assert "false_barge_in" not in [event.type for event in detail.events]
    assert [turn.interrupted for turn in detail.turns if turn.role == "assistant"] == [False, True, False]


async def test_words_confirm_a_barge_in_before_the_sound_has_lasted_the_minimum(double):
    double.speed = 1.2
    double.script_next_connection(["Et pour les œufs de cane ?", "Attendez."], answer_seconds=6.0)
    script = CallScript(
        utterances=[Utterance(QUESTION), Utterance(INTERRUPTION, after_answer_starts_ms=1000)],
        hangup_after=40, hangup_when_done_after_s=2.5,
    )
    # Longer than the interruption itself: only its words can make it a barge-in.
    async with running_line(openai_realtime_url=double.url, barge_in_min_ms=5000) as line:
        result = await call(line, script)
    connection = double.connections[0]

    assert result.status == "completed", result.summary()
    assert len(connection.truncations) == 1 and connection.errors_sent == []
    started, stopped = last_turn(connection)
    words = next(at for at, who, event in connection.timed_events() if who == "server" and at > started
                 and event["type"] == "conversation.item.input_audio_transcription.delta")
    truncated = first_time(connection, "client", lambda e: e["type"] == "conversation.item.truncate")
    assert words < truncated < stopped


async def test_a_sound_that_lasts_is_a_barge_in_before_it_ends_even_without_words(double):
    """A transcription that only comes after the turn: how long the sound lasts decides."""
    double.speed = 1.2
    double.script_next_connection(["Et pour les œufs de cane ?", "Attendez."], answer_seconds=6.0)
    script = CallScript(
        utterances=[Utterance(QUESTION), Utterance(INTERRUPTION, after_answer_starts_ms=1000)],
        hangup_after=40, hangup_when_done_after_s=2.5,
    )
    async with running_line(openai_realtime_url=double.url, openai_transcribe_model="gpt-transcribe") as line:
        result = await call(line, script)
    connection = double.connections[0]

    assert result.status == "completed", result.summary()
    assert len(connection.truncations) == 1 and connection.errors_sent == []
    started, stopped = last_turn(connection)
    truncated = first_time(connection, "client", lambda e: e["type"] == "conversation.item.truncate")
    assert started < truncated < stopped
