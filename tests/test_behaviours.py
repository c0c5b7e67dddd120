"""Ways out of a call besides hanging up, over real sockets: the simulated Twilio caller, the
server and the Realtime double. The keypad and the caller's silence."""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx
import pytest
from twilio.request_validator import RequestValidator

from app.agent import phrases
from app.calllog.store import CallLogStore
from app.config import Settings
from app.simulators.twilio_caller import CallScript, NoiseBurst, Utterance
from tests.test_call_path import QUESTION, call
from app.channels.twilio.line import INCOMING_PATH
from app.channels.twilio.security import STATUS_PATH
from tests.harness import AUTH_TOKEN, PUBLIC_URL, running_line


async def stored(line, call_sid: str):
    async with asyncio.timeout(10):  # the session ends once the recap is written
        while line.metrics.active_calls:
            await asyncio.sleep(0.05)
    assert await line.service.calllog.flush(timeout=15)
    async with await CallLogStore.open(line.settings.effective_database_url) as store:
        return await store.get_call(await store.find_call_id(call_sid))


def creates(connection) -> list[str]:
    """The instructions of each response asked for in the conversation (the recap aside)."""
    return [e["response"].get("instructions") or "" for e in connection.client_events
            if e["type"] == "response.create" and e["response"].get("conversation") != "none"]


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


async def test_zero_without_a_transfer_number_makes_octi_say_no_advisor_can_be_reached(double):
    double.script_next_connection(greeting_seconds=1.0)
    async with running_line(openai_realtime_url=double.url, silence_prompt_seconds=0) as line:
        result = await call(line, CallScript(utterances=[], dtmf=[(2.0, "0")], hangup_after=5))
        detail = await stored(line, result.call_sid)
    assert phrases.NO_PERSON in creates(double.connections[0])[1]
    assert [e.type for e in detail.events] == ["dtmf", "person_requested", "transfer_refused"]


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


async def test_barn_noise_on_a_line_nobody_speaks_on_does_not_keep_the_call_going(double):
    """The phone left in the barn: a clang every second and a half, never a word. The noises are
    not the caller answering: the prompt and the goodbye come as on a silent line."""
    double.script_next_connection(greeting_seconds=1.0, answer_seconds=1.0)
    noises = [NoiseBurst(at=2.0 + 1.5 * n) for n in range(12)]
    async with running_line(openai_realtime_url=double.url, silence_prompt_seconds=2,
                            silence_goodbye_seconds=2) as line:
        result = await call(line, CallScript(utterances=noises, hangup_after=25))
        detail = await stored(line, result.call_sid)
    assert result.closed_by == "server", result.summary()
    assert detail.summary.outcome == "timeout"
    kinds = [e.type for e in detail.events]
    assert [kind for kind in kinds if kind.startswith("silence")] == ["silence_prompt", "silence_goodbye"]
    assert "noise_unanswered" in kinds and result.duration_s < 15
    instructions = creates(double.connections[0])  # the greeting, the prompt, the goodbye: no « Pardon ? »
    assert len(instructions) == 3 and phrases.STILL_THERE in instructions[1]

async def test_the_time_limit_reached_during_another_goodbye_waits_for_it_and_the_call_ends_well(double):
    """MAX_CALL_MINUTES (6 s) falls while the goodbye of « # » (at 5 s, 3 s long) plays: the limit
    lets that ending finish instead of ending the call as if the service had failed."""
    double.script_next_connection(greeting_seconds=1.0, answer_seconds=3.0)
    async with running_line(openai_realtime_url=double.url, max_call_minutes=0.1, silence_prompt_seconds=0) as line:
        result = await call(line, CallScript(utterances=[], dtmf=[(5.0, "#")], hangup_after=30))
        detail = await stored(line, result.call_sid)
    assert result.status == "completed" and result.closed_by == "server", result.summary()
    assert result.after_stream["hangup"] and not result.after_stream["say_texts"]  # no failure voicemail
    assert detail.summary.outcome == "agent_ended"
    assert [e.type for e in detail.events] == ["dtmf", "caller_ended", "time_limit"]
    goodbyes = [text for text in creates(double.connections[0]) if "au revoir" in text.lower()]
    assert len(goodbyes) == 1  # the time limit's own goodbye was never asked for


async def test_a_caller_who_answers_the_prompt_is_not_told_goodbye(double):
    double.script_next_connection(greeting_seconds=1.0, answer_seconds=1.0)
    async with running_line(openai_realtime_url=double.url, silence_prompt_seconds=2,
                            silence_goodbye_seconds=3) as line:
        # The prompt comes 3-4.5 s in (silence is looked at once a second); the caller answers
        # it at 5.5 s, then hangs up after the answer.
        script = CallScript(utterances=[Utterance(QUESTION, at=5.5)], hangup_after=30, hangup_when_done_after_s=1.0)
        result = await call(line, script)
        detail = await stored(line, result.call_sid)
    assert result.closed_by == "caller", result.summary()
    assert [e.type for e in detail.events] == ["silence_prompt"]


def test_numbers_twilio_could_never_match_and_meaningless_search_settings_are_refused_at_start_up():
    """Twilio gives callers' numbers in E.164: « 06 12 34 56 78 » in ALLOWED_CALLERS would turn
    every member away. No passage per answer, a search with no time, or a fusion weight out
    of 0..1 would make every search fail or mislead."""
    for bad in ({"allowed_callers": "+33612345678, 06 12 34 56 78"}, {"transfer_number": "0612345678"},
                {"rag_top_k": 0}, {"rag_timeout_ms": 0}, {"rag_alpha": 7}, {"rag_hold_ms": -1}):
        with pytest.raises(ValueError):
            Settings(_env_file=None, **bad)
    members = Settings(_env_file=None, allowed_callers="+33 6 12 34 56 78,+33 (1) 00 00 00 00").allowed_callers
    assert "+33 6 12" in members

def test_a_malformed_key_map_is_refused_at_start_up():
    for bad in ("9=dance", "00=end", "#", "a=end"):
        with pytest.raises(ValueError):
            Settings(_env_file=None, dtmf_keys=bad)
    assert Settings(_env_file=None, dtmf_keys="9=end, 1=repeat").dtmf_actions == {"9": "end", "1": "repeat"}


# ------------------------------------------------------------------ which calls the line takes


async def refused_outcome(line, call_sid: str) -> str | None:
    detail = await stored(line, call_sid)
    return detail.summary.outcome if detail else None


async def test_a_number_off_the_allow_list_is_told_so_in_french_and_logged(double):
    async with running_line(openai_realtime_url=double.url, allowed_callers="+33 6 00 00 00 01, +33600000002") as line:
        member = await call(line, CallScript(utterances=[], hangup_after=2), from_number="+33600000002")
        stranger = await call(line, CallScript(utterances=[], hangup_after=2), from_number="+33699999999")
        assert await refused_outcome(line, stranger.call_sid) == "not_allowed"
    assert member.status == "completed" and member.stream_sid
    assert stranger.stream_sid is None and stranger.hangup and "réservé aux adhérents" in stranger.say_texts[0]
    assert len(double.connections) == 1  # no engine was opened for the refused call


async def test_too_many_calls_from_one_number_in_an_hour_are_refused(double):
    async with running_line(openai_realtime_url=double.url, calls_per_caller_per_hour=2) as line:
        results = [await call(line, CallScript(utterances=[], hangup_after=1.5)) for _ in range(3)]
        other = await call(line, CallScript(utterances=[], hangup_after=1.5), from_number="+33611111111")
        assert await refused_outcome(line, results[2].call_sid) == "rate_limited"
    assert [bool(r.stream_sid) for r in results] == [True, True, False] and other.stream_sid
    assert "plusieurs fois" in results[2].say_texts[0]


async def test_callers_who_withhold_their_number_are_not_counted_as_one(double):
    """Twilio gives every withheld caller the same `From` (a word, or a number that spells one):
    counting them per number would turn all of them away after two calls."""
    async with running_line(openai_realtime_url=double.url, calls_per_caller_per_hour=2) as line:
        results = [await call(line, CallScript(utterances=[], hangup_after=1.5), from_number=number)
                   for number in ("+266696687", "+266696687", "+266696687", "anonymous")]
    assert all(r.stream_sid for r in results), [r.say_texts for r in results]


async def test_a_full_instance_says_the_lines_are_busy(double):
    async with running_line(openai_realtime_url=double.url, max_concurrent_calls=1) as line:
        first = asyncio.create_task(call(line, CallScript(utterances=[], hangup_after=4)))
        while line.metrics.active_calls < 1:
            await asyncio.sleep(0.05)
        second = await call(line, CallScript(utterances=[], hangup_after=2), from_number="+33622222222")
        assert (await first).stream_sid and await refused_outcome(line, second.call_sid) == "busy"
        # Once the first call is over, the line takes calls again.
        third = await call(line, CallScript(utterances=[], hangup_after=1.5), from_number="+33622222222")
    assert second.stream_sid is None and "occupées" in second.say_texts[0]
    assert third.stream_sid


async def test_a_call_whose_engine_is_still_connecting_is_held_for_a_drain(double):
    """Between its stream's start and its conversation (its pre-warmed engine still connecting,
    here 1.5 s), a call must count in what a drain waits for: seen nowhere, the drain would
    stop the server under it."""
    double.handshake_delay = 1.5
    seen: list[tuple[float, int]] = []  # (when, calls held), every 5 ms or so until the conversation
    async with running_line(openai_realtime_url=double.url) as line:
        calling = asyncio.create_task(call(line, CallScript(utterances=[], hangup_after=4)))
        while line.metrics.active_calls == 0 and not calling.done():
            seen.append((time.monotonic(), line.service.calls_held))
            await asyncio.sleep(0.005)
        result = await calling
    assert result.status == "completed", result.summary()
    held_from = next(i for i, (_, held) in enumerate(seen) if held)  # the webhook was answered
    assert seen[-1][0] - seen[held_from][0] > 0.5  # the engine took a while: this watched the gap
    assert all(held >= 1 for _, held in seen[held_from:]), seen[held_from:]


async def signed_post(line, path: str, form: dict[str, str]) -> httpx.Response:
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + path, form)
    async with httpx.AsyncClient() as http:
        return await http.post(line.url + path, data=form, headers={"X-Twilio-Signature": signature})


async def test_calls_arriving_together_do_not_get_past_the_capacity(double, redis_url):
    """Four calls ring at once on an instance with room for two; the count per caller, in Redis,
    makes each webhook wait a moment after it saw the room left. Two calls are taken and two
    hear that the lines are busy."""
    async with running_line(openai_realtime_url=double.url, max_concurrent_calls=2, redis_url=redis_url) as line:
        forms = [{"CallSid": "CA" + str(n) * 32, "AccountSid": "AC" + "9" * 32, "To": "+33100000000",
                  "From": "+3369" + str(secrets.randbelow(10**7)).zfill(7)} for n in range(1, 5)]
        answers = await asyncio.gather(*(signed_post(line, INCOMING_PATH, form) for form in forms))
        held = line.service.calls_held
    assert [answer.status_code for answer in answers] == [200] * 4
    assert sum("<Stream" in answer.text for answer in answers) == 2 and held == 2
    assert sum("occupées" in answer.text for answer in answers) == 2

async def test_a_caller_who_hangs_up_before_the_stream_frees_the_place_at_once(double):
    """Twilio's call status callback says the call is over: its place and its pre-warmed engine
    go at once, not STREAM_TOKEN_TTL_SECONDS later."""
    async with running_line(openai_realtime_url=double.url, max_concurrent_calls=1) as line:
        gone = {"CallSid": "CA" + "9" * 32, "AccountSid": "AC" + "9" * 32, "From": "+33633333333", "To": "+33100000000"}
        answered = await signed_post(line, INCOMING_PATH, gone)
        prewarmed = await double.wait_for_connection(timeout=10)
        assert "<Stream" in answered.text and line.service.calls_held == 1 and len(line.prewarm) == 1
        busy = await call(line, CallScript(utterances=[], hangup_after=1.5), from_number="+33622222222")
        # The caller hangs up while Twilio fetches the TwiML: no stream, only the call's status.
        status = await signed_post(line, STATUS_PATH, {**gone, "CallStatus": "completed"})
        closed = await prewarmed.wait_closed(timeout=5)
        held, prewarms = line.service.calls_held, len(line.prewarm)
        taken = await call(line, CallScript(utterances=[], hangup_after=1.5), from_number="+33622222222")
    assert busy.stream_sid is None and "occupées" in busy.say_texts[0]
    assert status.status_code == 204 and closed.initiated_by == "client"
    assert held == 0 and prewarms == 0
    assert taken.stream_sid and taken.status == "completed", taken.summary()


async def test_the_count_per_caller_is_shared_through_redis(double, redis_url):
    number = "+3369" + str(secrets.randbelow(10**7)).zfill(7)  # runs sharing the Redis never count each other's
    async with (running_line(openai_realtime_url=double.url, calls_per_caller_per_hour=1, redis_url=redis_url) as a,
                running_line(openai_realtime_url=double.url, calls_per_caller_per_hour=1, redis_url=redis_url) as b):
        taken = await call(a, CallScript(utterances=[], hangup_after=1.5), from_number=number)
        refused = await call(b, CallScript(utterances=[], hangup_after=1.5), from_number=number)
    assert taken.stream_sid and refused.stream_sid is None


# ------------------------------------------------------------------ after the call


async def test_after_a_call_octi_s_advice_is_summarised_out_of_band_and_shown_first_in_the_review(double):
    double.script_next_connection(["Quelle température pour la couveuse ?"], answer_seconds=1.0)
    async with running_line(openai_realtime_url=double.url, review_token="review-token-0123456789abcdef") as line:
        result = await call(line, CallScript(utterances=[Utterance(QUESTION)], hangup_after=20,
                                             hangup_when_done_after_s=1.0))
        while line.metrics.active_calls:
            await asyncio.sleep(0.05)
        detail = await stored(line, result.call_sid)
        async with httpx.AsyncClient(base_url=line.url) as client:
            page = (await client.get(f"/calls/{detail.summary.id}?token=review-token-0123456789abcdef",
                                     follow_redirects=True)).text
    connection = double.connections[0]
    recap_request = [e for e in connection.client_events if e["type"] == "response.create"][-1]["response"]
    assert recap_request["conversation"] == "none" and recap_request["output_modalities"] == ["text"]
    assert recap_request["instructions"] == phrases.RECAP_INSTRUCTIONS
    recap_response = connection.responses[-1]
    assert recap_response.conversation == "none" and recap_response.transcript
    # Nothing joined the conversation, and the caller had hung up before it was asked for.
    assert all(item.get("id") != recap_response.item_id for item in connection.conversation)
    passages = [p.title for turn in detail.turns if turn.role == "caller" for p in turn.passages]
    assert detail.recap == f"{recap_response.transcript}\n\nFiches : {' ; '.join(dict.fromkeys(passages))}."
    assert page.index("Récapitulatif des conseils") < page.index("Conversation")
    assert recap_response.transcript in page


async def test_a_call_without_a_question_gets_no_recap(double):
    async with running_line(openai_realtime_url=double.url) as line:
        result = await call(line, CallScript(utterances=[], hangup_after=2))
        while line.metrics.active_calls:
            await asyncio.sleep(0.05)
        detail = await stored(line, result.call_sid)
    assert detail.recap is None
    assert all(e["response"].get("conversation") != "none"
               for e in double.connections[0].client_events if e["type"] == "response.create")
