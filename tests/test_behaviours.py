"""Ways out of a call besides hanging up, over real sockets: the simulated Twilio caller, the
server and the Realtime double. The keypad and the caller's silence."""

from __future__ import annotations

import pytest

from app.agent import phrases
from app.calllog.store import CallLogStore
from app.config import Settings
from app.simulators.twilio_caller import CallScript, Utterance
from tests.test_call_path import QUESTION, call
from tests.harness import running_line


async def stored(line, call_sid: str):
    assert await line.service.calllog.flush(timeout=15)
    async with await CallLogStore.open(line.settings.effective_database_url) as store:
        return await store.get_call(await store.find_call_id(call_sid))


def creates(connection) -> list[str]:
    return [e["response"].get("instructions") or "" for e in connection.client_events if e["type"] == "response.create"]


async def test_hash_says_goodbye_and_hangs_up_once_it_was_heard(double):
    double.script_next_connection(greeting_seconds=1.0, answer_seconds=1.0)
    async with running_line(openai_realtime_url=double.url) as line:
        result = await call(line, CallScript(utterances=[], dtmf=[(2.0, "#")], hangup_after=20))
        assert line.metrics.active_calls == 0
        detail = await stored(line, result.call_sid)
    assert result.status == "completed" and result.closed_by == "server", result.summary()
    connection = double.connections[0]
    greeting, goodbye = connection.responses[:2]
    assert phrases.GOODBYE in creates(connection)[1]
    heard_ms = sum(burst.played_ms for burst in result.bursts)
    assert 0 <= heard_ms - (greeting.audio_ms + goodbye.audio_ms) < 40, result.summary()
    assert detail.summary.outcome == "agent_ended"
    assert [e.type for e in detail.events] == ["dtmf", "caller_ended"]


async def test_star_repeats_the_last_answer_word_for_word(double):
    double.script_next_connection(greeting_seconds=1.0)
    async with running_line(openai_realtime_url=double.url, silence_prompt_seconds=0) as line:
        result = await call(line, CallScript(utterances=[], dtmf=[(2.5, "*")], hangup_after=6))
    connection = double.connections[0]
    greeting_text = connection.responses[0].transcript
    assert greeting_text and f"« {greeting_text} »" in creates(connection)[1]
    assert result.status == "completed"


async def test_zero_asks_for_a_person_and_octi_says_none_can_be_reached_yet(double):
    double.script_next_connection(greeting_seconds=1.0)
    async with running_line(openai_realtime_url=double.url, silence_prompt_seconds=0) as line:
        result = await call(line, CallScript(utterances=[], dtmf=[(2.0, "0")], hangup_after=5))
        detail = await stored(line, result.call_sid)
    assert phrases.NO_PERSON in creates(double.connections[0])[1]
    assert [e.type for e in detail.events] == ["dtmf", "person_requested"]


async def test_a_silent_caller_is_asked_if_they_are_there_then_told_goodbye(double):
    double.script_next_connection(greeting_seconds=1.0, answer_seconds=1.0)
    async with running_line(openai_realtime_url=double.url, silence_prompt_seconds=2,
                            silence_goodbye_seconds=2) as line:
        result = await call(line, CallScript(utterances=[], hangup_after=30))
        detail = await stored(line, result.call_sid)
    assert result.closed_by == "server", result.summary()
    instructions = creates(double.connections[0])
    assert phrases.STILL_THERE in instructions[1] and phrases.SILENCE_GOODBYE in instructions[2]
    assert detail.summary.outcome == "timeout"
    assert [e.type for e in detail.events] == ["silence_prompt", "silence_goodbye"]
    # greeting (1 s) + 2 s + prompt + 2 s + goodbye: well under the caller's 30 s
    assert result.duration_s < 12


async def test_a_caller_who_answers_the_prompt_is_not_told_goodbye(double):
    double.script_next_connection(greeting_seconds=1.0, answer_seconds=1.0)
    async with running_line(openai_realtime_url=double.url, silence_prompt_seconds=2,
                            silence_goodbye_seconds=3) as line:
        # The prompt comes ~3 s in; the caller answers it at 4 s, then hangs up after the answer.
        script = CallScript(utterances=[Utterance(QUESTION, at=4.0)], hangup_after=30, hangup_when_done_after_s=1.0)
        result = await call(line, script)
        detail = await stored(line, result.call_sid)
    assert result.closed_by == "caller", result.summary()
    assert [e.type for e in detail.events] == ["silence_prompt"]


def test_a_malformed_key_map_is_refused_at_start_up():
    for bad in ("9=dance", "00=end", "#", "a=end"):
        with pytest.raises(ValueError):
            Settings(_env_file=None, dtmf_keys=bad)
    assert Settings(_env_file=None, dtmf_keys="9=end, 1=repeat").dtmf_actions == {"9": "end", "1": "repeat"}
