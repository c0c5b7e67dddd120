"""A whole phone call with ENGINE=gpt-live over real sockets: the simulated Twilio caller → the
real server → the GPT-Live double. Greeting, a knowledge question answered through a client
delegation (its passages in the call log), a barge-in the model yields to (`clear` sent, what
was heard recorded), hang-up."""

from __future__ import annotations

import asyncio
import json

import pytest

from app.agent import phrases
from app.agent.tools import NOTHING_TO_SEARCH
from app.calllog.store import CallLogStore
from app.engines.gpt_live import protocol, translator
from app.knowledge.retrieval import Retriever
from app.simulators.live_double import LiveDouble
from app.simulators.twilio_caller import CallScript, Utterance, place_call
from tests.cli_runner import run_octi
from tests.harness import AUDIO, AUTH_TOKEN, PUBLIC_URL, running_line
from tests.test_call_path import played_between
from tests.test_call_tools import ACCOUNT, CALLER, line_with_rest
from tests.test_reconnect import FILLER_MS

QUESTION = AUDIO / "question_incubation.wav"
INTERRUPTION = AUDIO / "interruption.wav"
ASKED = "À quelle température je dois mettre la couveuse pour des œufs de poule ?"
CUT_IN = "Attendez, et pour l'humidité ?"


async def stored_call(line, call_sid: str):
    while line.metrics.active_calls:
        await asyncio.sleep(0.05)
    assert await line.service.calllog.flush(timeout=15)
    async with await CallLogStore.open(line.settings.effective_database_url) as store:
        return await store.get_call(await store.find_call_id(call_sid))


async def call_until_the_answer_starts(line, double: LiveDouble, script: CallScript):
    """The call under way (its task), and its first live session once the model starts its answer."""
    calling = asyncio.create_task(place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, script=script))
    first = await double.wait_for_connection(timeout=10)
    async with asyncio.timeout(30):
        while "answer" not in first.record.spoken:
            await asyncio.sleep(0.05)
    return calling, first

@pytest.mark.parametrize("lead_ms", [1000, 200], ids=["answer-still-queued-at-twilio", "answer-all-played"])
async def test_a_whole_call_with_gpt_live(lead_ms):
    """`lead_ms`: how far ahead of real time the service sends its audio. The bridge tells a
    yield from a pause between sentences only after `YIELD_QUIET_MS` of quiet: with a deeper
    send buffer than that, Twilio still holds the answer then and is cleared; with a shallow
    one, the caller has heard it all (its silence included) and nothing is left to clear."""
    script = CallScript(
        utterances=[Utterance(QUESTION), Utterance(INTERRUPTION, after_answer_starts_ms=1500)],
        hangup_after=45, hangup_when_done_after_s=2.5,
    )
    async with LiveDouble(transcripts=[ASKED, CUT_IN], greeting_seconds=2.0, answer_seconds=6.0,
                          lead_ms=lead_ms) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url) as line:
            result = await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, script=script)
            detail = await stored_call(line, result.call_sid)
            barge_ins = line.metrics.value("octi_barge_ins_total", kind="real")
            health = (await line.service.health())["realtime"]
            assert (health["engine"], health["model"], health["url"]) == ("gpt-live", "gpt-live-1.1", double.url)

    assert result.status == "completed", result.summary()
    assert result.violations == []
    assert len(double.connections) == 1, "the engine pre-warmed at the webhook is the one the call used"
    live = double.connections[0]
    assert live.record.errors == [], "every client event was valid GPT-Live protocol"
    assert live.record.received[0]["session"]["audio"]["format"] == {"type": "audio/pcmu", "rate": 8000}

    # The greeting: the model's own first turn, before the caller says anything.
    asked, cut_in = result.utterances
    assert live.record.spoken[0] == "greeting"
    assert result.bursts[0].start_t < asked.start_t

    # The question went to us as a client delegation; the passages went back as commentary.
    first, second = live.delegations.values()
    assert (first.question, second.question) == (ASKED, CUT_IN)
    assert first.result == "commentary" and first.content.startswith("Réponds à l'éleveur à partir de ces fiches")
    summary = detail.summary
    assert summary.outcome == "caller_hung_up"
    assert (detail.model, detail.codec, detail.rag_mode) == ("gpt-live-1.1", "pcmu", "delegation")
    assert detail.transcription_model == "gpt-live-1.1"  # the caller's words come with the session
    question = next(turn for turn in detail.turns if turn.role == "caller" and turn.text == ASKED)
    assert question.retrieval_outcome == "ok" and question.retrieval_ms is not None
    assert question.passages and question.passages[0].source.startswith("sample_pack/incubation")
    assert all(passage.score > 0 for passage in question.passages)
    assert question.start_ms is not None and question.end_ms > question.start_ms

    # The barge-in: the model talked over the caller a while, then yielded; the bridge cleared
    # what Twilio still held, if anything, and recorded what the caller had heard of the answer.
    assert cut_in.barge_in
    assert live.record.yields == 1
    assert barge_ins == 1 and summary.barge_ins == 1
    interrupted = [turn for turn in detail.turns if turn.role == "assistant" and turn.interrupted]
    assert len(interrupted) == 1
    cut_burst = next(burst for burst in result.bursts if burst.start_t < cut_in.start_t < burst.end_t + 0.5)
    # The burst may hold the acknowledgement said while we searched, then the answer: what the
    # log says was heard of them is what the caller played (each tail padded to a 20 ms frame).
    in_burst = [turn for turn in detail.turns if turn.role == "assistant" and turn.start_ms is not None
                and cut_burst.start_t - 0.3 <= turn.start_ms / 1000 < cut_in.start_t]
    assert in_burst[-1] == interrupted[0]
    heard_ms = sum(turn.end_ms - turn.start_ms for turn in in_burst)
    if lead_ms > translator.YIELD_QUIET_MS:
        (clear,) = result.clears
        assert clear.burst is not None and clear.t > cut_in.start_t and clear.flushed_ms > 0
        assert abs(heard_ms - clear.played_ms) <= 20 * len(in_burst) + 20, (in_burst, clear)
    else:
        assert result.clears == []
        assert abs(heard_ms - cut_burst.played_ms) <= 20 * len(in_burst) + 20, (in_burst, cut_burst)
    # It talked over the caller no longer than the double's overlap (and its send buffer).
    assert cut_burst.end_t - cut_in.speech_start_t < (double.overlap_ms + lead_ms) / 1000 + 0.3
    # The caller was answered after the barge-in, then hung up.
    assert any(burst.start_t > cut_in.speech_end_t for burst in result.bursts)
    assert second.result == "commentary"
    assert summary.cost_usd is not None and summary.cost_usd > 0  # active minutes, priced

    # No out-of-band text from GPT-Live: the recap is the record of the exchanges, each question
    # with what the caller heard of its answer, then the fiches.
    header, *exchanges = detail.recap.split("\n\nFiches : ")[0].split("\n")
    assert header == phrases.EXCHANGES_RECAP_HEADER
    assert [line.split(" » : ")[0] for line in exchanges] == [f"- « {ASKED}", f"- « {CUT_IN}"]
    assert question.passages[0].title in detail.recap.split("\n\nFiches : ")[1]


async def test_a_lost_live_session_carries_the_call_on_with_its_conversation():
    """The service goes away after the first answer: the caller hears « Un instant. », a new
    session starts with the conversation so far as initial items, and the next question is
    delegated and answered there."""
    follow_up = "Et pour l'humidité ?"
    script = CallScript(utterances=[Utterance(QUESTION), Utterance(AUDIO / "question_followup.wav")],
                        hangup_after=45, hangup_when_done_after_s=2.5)
    async with LiveDouble(transcripts=[ASKED, follow_up], greeting_seconds=1.5, answer_seconds=2.0) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url) as line:
            calling, first = await call_until_the_answer_starts(line, double, script)
            await asyncio.sleep(2.5)  # the answer has been said
            await first.drop()
            second = await double.wait_for_connection(2, timeout=15)
            result = await calling
            detail = await stored_call(line, result.call_sid)

    assert result.status == "completed", result.summary()
    assert first.record.errors == [] and second.record.errors == []
    items = second.record.received[0]["session"]["input"]
    texts = [(item["role"], item["content"][0]["text"]) for item in items]
    assert ("user", ASKED) in texts
    assert [role for role, _ in texts].count("assistant") >= 2  # the greeting and the answer, as heard
    (delegation,) = second.delegations.values()
    assert delegation.question == follow_up and delegation.result == "commentary"
    kinds = [event.type for event in detail.events]
    assert "engine_lost" in kinds and "engine_reconnect" in kinds
    asked = [turn.text for turn in detail.turns if turn.role == "caller"]
    assert asked == [ASKED, follow_up]


def slow_search(monkeypatch, seconds: float) -> None:
    """Every search takes `seconds` more (before the knowledge base's own budget)."""
    retrieve = Retriever.retrieve

    async def slow(retriever, query):
        await asyncio.sleep(seconds)
        return await retrieve(retriever, query)

    monkeypatch.setattr(Retriever, "retrieve", slow)


def answered_by_the_new_session(result, detail, double, notice_seconds: float) -> list[str]:
    """The caller's question, unanswered when the first session was lost, was answered by the
    second: its passages said there outside any delegation (the old session's are unknown to
    it), heard after « Un instant. »; no command refused."""
    assert result.status == "completed", result.summary()
    first, second = double.connections
    assert first.record.errors == [] and second.record.errors == [], "no result for an unknown delegation"
    question = next(turn for turn in detail.turns if turn.role == "caller" and turn.text == ASKED)
    assert question.passages
    said = [event["content"] for event in second.record.received
            if event["type"] == "session.commentary.append" and event["delegation_id"] is None]
    assert len(said) == 1 and question.passages[0].title in said[0]
    assert second.record.spoken == ["notice"]  # the double says commentary without delegation this long
    dropped_t = first.dropped_at - result.started_at
    assert played_between(result, dropped_t, float("inf")) >= FILLER_MS + notice_seconds * 1000 - 60
    assert [event.type for event in detail.events] == ["engine_lost", "engine_reconnect"]
    assert detail.turns[-1].role == "assistant" and not detail.turns[-1].interrupted
    return said


@pytest.mark.parametrize("search_seconds, start_seconds", [(0.3, 1.0), (2.0, 0.0)],
                         ids=["search-over-while-reconnecting", "search-still-running"])
async def test_a_question_delegated_as_the_live_session_is_lost_is_answered_in_the_next(
        monkeypatch, search_seconds, start_seconds):
    """The service goes away right after delegating the caller's question, before any result.
    The search's result comes while no session can take it (the next one is starting), or once
    the next one is up: either way it goes to the new session, which says it."""
    slow_search(monkeypatch, search_seconds)
    script = CallScript(utterances=[Utterance(QUESTION)], hangup_after=40, hangup_when_done_after_s=3.0)
    async with LiveDouble(transcripts=[ASKED], greeting_seconds=2.0, answer_seconds=6.0, start_seconds=start_seconds,
                          drop_when=lambda event: event["type"] == "session.delegation.created") as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url) as line:
            result = await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, script=script)
            detail = await stored_call(line, result.call_sid)
    assert double.connections[0].record.spoken == ["greeting"]
    said = answered_by_the_new_session(result, detail, double, notice_seconds=2.0)
    assert said[0].startswith("Réponds à l'éleveur à partir de ces fiches"), "the search's own result"


async def test_an_answer_cut_by_a_lost_live_session_is_said_again_by_the_next():
    """The service goes away while the model says the answer: the new session is given the
    question's passages to say."""
    script = CallScript(utterances=[Utterance(QUESTION)], hangup_after=40, hangup_when_done_after_s=3.0)
    async with LiveDouble(transcripts=[ASKED], greeting_seconds=2.0, answer_seconds=6.0) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url) as line:
            calling, first = await call_until_the_answer_starts(line, double, script)
            await asyncio.sleep(1.5)  # a quarter of the answer said
            await first.drop()
            result = await calling
            detail = await stored_call(line, result.call_sid)
    cut = [turn for turn in detail.turns if turn.role == "assistant" and turn.interrupted]
    assert len(cut) == 1 and cut[0].heard_ms > 0
    answered_by_the_new_session(result, detail, double, notice_seconds=2.0)


async def test_a_question_acknowledged_in_full_before_the_live_session_is_lost_is_answered_in_the_next(
        monkeypatch):
    """A slow search: the model's acknowledgement, said while it ran, was heard to its end; the
    result went to the first session, which was lost before saying the answer. The
    acknowledgement was no answer: the new session says it."""
    slow_search(monkeypatch, 2.0)
    script = CallScript(utterances=[Utterance(QUESTION)], hangup_after=40, hangup_when_done_after_s=3.0)
    async with LiveDouble(transcripts=[ASKED], greeting_seconds=2.0, answer_seconds=6.0,
                          drop_when=lambda event: event["type"] == "session.commentary.append"
                          and event["delegation_id"] is not None) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url) as line:
            result = await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, script=script)
            detail = await stored_call(line, result.call_sid)
    assert double.connections[0].record.spoken == ["greeting", "acknowledgement"]
    _, asked, acknowledgement = detail.turns[:3]
    assert (asked.text, acknowledgement.role) == (ASKED, "assistant")
    assert not acknowledgement.interrupted, "heard to its end"
    answered_by_the_new_session(result, detail, double, notice_seconds=2.0)


async def test_the_live_session_is_renewed_before_the_end_it_announced():
    """The service announces a 14 s session (`expires_at`), far under REALTIME_SESSION_MAX_MINUTES:
    between two questions the call moves to a new session with the conversation so far, before
    the old one expires, without a word to the caller. Both sessions' seconds are billed, though
    each reports them only in its `session.closed` (no usage report in between)."""
    follow_up = "Et pour l'humidité ?"
    script = CallScript(utterances=[Utterance(QUESTION), Utterance(AUDIO / "question_followup.wav", at=12.0)],
                        hangup_after=45, hangup_when_done_after_s=2.5)
    async with LiveDouble(transcripts=[ASKED, follow_up], greeting_seconds=1.0, answer_seconds=1.5,
                          session_seconds=14, usage_interval=3600) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url) as line:
            assert line.settings.realtime_session_max_minutes == 60
            calling = asyncio.create_task(
                place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, script=script))
            first = await double.wait_for_connection(timeout=10)
            async with asyncio.timeout(10):
                while first.session is None:
                    await asyncio.sleep(0.02)
            double.session_seconds = 3600  # the renewed session lives on: one renewal in this call
            result = await calling
            detail = await stored_call(line, result.call_sid)
            assert line.metrics.value("octi_engine_recycles_total") == 1
            assert line.metrics.value("octi_engine_reconnects_total", outcome="restored") == 0

    assert result.status == "completed", result.summary()
    first, second = double.connections
    assert first.record.errors == [] and second.record.errors == []
    assert first.closed_reason == "close_requested", "renewed before the service ended it"
    texts = [(item["role"], item["content"][0]["text"]) for item in second.record.received[0]["session"]["input"]]
    assert ("user", ASKED) in texts and [role for role, _ in texts].count("assistant") == 2
    (delegation,) = second.delegations.values()
    assert delegation.question == follow_up and delegation.result == "commentary"
    kinds = [event.type for event in detail.events]
    assert "engine_recycled" in kinds and "engine_lost" not in kinds
    assert [turn.text for turn in detail.turns if turn.role == "caller"] == [ASKED, follow_up]
    seconds = [next(event for event in connection.record.sent if event["type"] == "session.closed")["usage"]["seconds"]
               for connection in (first, second)]
    price = line.settings.model_prices["gpt-live-1.1"]["active_minute"]
    assert seconds[0] >= 5 and detail.summary.cost_usd == pytest.approx(sum(seconds) / 60 * price, abs=1e-6)


async def test_a_caller_asking_for_the_recap_by_sms_is_texted_the_exchanges_after_the_call():
    """GPT-Live writes no recap: the caller who asks for it by SMS gets the record of the
    exchanges, their question and what OCTI answered, with the fiches."""
    asks_for_sms = "Envoyez-moi le récapitulatif par SMS, s'il vous plaît."
    script = CallScript(utterances=[Utterance(QUESTION), Utterance(AUDIO / "question_followup.wav")],
                        hangup_after=40, hangup_when_done_after_s=2.0)
    async with LiveDouble(transcripts=[ASKED, asks_for_sms], greeting_seconds=1.0, answer_seconds=1.5) as double:
        async with line_with_rest(double, engine="gpt-live", gpt_live_url=double.url) as (line, rest):
            result = await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, script=script,
                                      rest_api=rest, account_sid=ACCOUNT, from_number=CALLER)
            detail = await stored_call(line, result.call_sid)

    assert result.status == "completed", result.summary()
    live = double.connections[0]
    assert live.record.errors == []
    assert protocol.SMS_OFFER in live.record.received[0]["session"]["instructions"]
    search, sms = live.delegations.values()
    assert sms.question == asks_for_sms and sms.result == "commentary"
    assert phrases.SMS_RECAP_PROMISED in sms.content
    [message] = rest.messages
    assert (message["to"], message["body"]) == (CALLER, f"{phrases.SMS_RECAP_HEADER}\n{detail.recap}")
    assert detail.recap.startswith(f"{phrases.EXCHANGES_RECAP_HEADER}\n- « {ASKED} » : ")
    assert asks_for_sms not in detail.recap, "only knowledge questions are in the record"
    assert [e.type for e in detail.events] == ["sms_recap_accepted", "sms_recap_sent"]


async def test_keypad_silence_limits_and_recording_work_with_gpt_live():
    """What the session does besides answering, on a GPT-Live call: * repeats OCTI's last words,
    a silent caller is asked if they are there then told goodbye (both said by the model as
    commentary), and the call is recorded, both sides."""
    script = CallScript(utterances=[], dtmf=[(3.5, "*")], hangup_after=40)
    async with LiveDouble(transcripts=[], greeting_seconds=2.0, answer_seconds=2.0) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url, record_calls=True,
                                silence_prompt_seconds=3, silence_goodbye_seconds=3) as line:
            result = await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, script=script)
            detail = await stored_call(line, result.call_sid)
    assert result.status == "completed" and result.closed_by == "server", result.summary()
    live = double.connections[0]
    assert live.record.errors == []
    said = [event["content"] for event in live.record.received
            if event["type"] == "session.commentary.append" and event.get("delegation_id") is None]
    greeting_text = detail.turns[0].text
    assert greeting_text and f"« {greeting_text} »" in said[1], "* repeats the greeting word for word"
    assert phrases.STILL_THERE in said[2] and phrases.SILENCE_GOODBYE in said[3]
    assert [event.type for event in detail.events] == ["dtmf", "silence_prompt", "silence_goodbye"]
    summary = detail.summary
    assert summary.outcome == "timeout" and summary.recorded
    assert len(result.bursts) >= 4, "the caller heard the greeting, its repeat, the prompt and the goodbye"


async def test_a_call_greeted_by_the_fixture_kept_from_the_previous_call():
    """GPT_LIVE_GREETING=fixture: the first call has the model greet and keeps its greeting; the
    next caller hears it played by the service before anything else, the call log has it with
    its words, and their question is delegated and answered as usual."""
    async with LiveDouble(transcripts=[ASKED], greeting_seconds=2.0, answer_seconds=3.0) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url, gpt_live_greeting="fixture") as line:
            first = await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN,
                                     script=CallScript(hangup_after=5))
            first_detail = await stored_call(line, first.call_sid)
            script = CallScript(utterances=[Utterance(QUESTION)], hangup_after=45, hangup_when_done_after_s=2.5)
            result = await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, script=script)
            detail = await stored_call(line, result.call_sid)
            clips = sorted((line.settings.data_dir / "greetings").glob("*.wav"))

    assert first.status == result.status == "completed", result.summary()
    modelled, played = double.connections
    assert modelled.record.spoken[0] == "greeting"
    assert len(clips) == 1, "the model's greeting was kept once"
    said = next(turn for turn in first_detail.turns if turn.role == "assistant")

    # The second caller heard the fixture first: before they spoke, as long as the kept greeting.
    assert played.record.errors == []
    assert played.record.spoken[0] == "fixture" and "greeting" not in played.record.spoken
    (asked,) = result.utterances
    greeting_burst = result.bursts[0]
    assert greeting_burst.start_t < asked.start_t
    assert abs(greeting_burst.played_ms - first.bursts[0].played_ms) <= 200  # the kept clip, its trailing quiet cut
    # The call log has it as OCTI's first turn, with the model's words of it, heard in full.
    greeted = next(turn for turn in detail.turns if turn.role == "assistant")
    assert greeted.text == said.text.strip() != ""
    assert not greeted.interrupted
    assert greeted.start_ms is not None and greeted.end_ms - greeted.start_ms >= greeting_burst.played_ms - 100

    # The question afterwards: delegated to us, the passages in the log, and an answer heard.
    (delegation,) = played.delegations.values()
    assert delegation.question == ASKED and delegation.result == "commentary"
    question = next(turn for turn in detail.turns if turn.role == "caller" and turn.text == ASKED)
    assert question.passages and question.passages[0].source.startswith("sample_pack/incubation")
    assert any(burst.start_t > asked.speech_end_t for burst in result.bursts)
    assert detail.summary.outcome == "caller_hung_up"


async def test_octi_call_runs_the_whole_conversation_with_gpt_live(tmp_path):
    """The command a developer runs (`octi call`), against a server with ENGINE=gpt-live and the
    GPT-Live double: greeting, a question answered through a client delegation, a barge-in with
    `clear`, hang-up."""
    timeline = tmp_path / "call.json"
    async with LiveDouble(transcripts=[ASKED, CUT_IN], greeting_seconds=2.0, answer_seconds=6.0,
                          lead_ms=1000) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url) as line:
            printed = await asyncio.to_thread(
                run_octi, "call", "--url", line.url, "--public-url", PUBLIC_URL, "--auth-token", AUTH_TOKEN,
                "--wav", str(QUESTION), "--barge-in-wav", str(INTERRUPTION), "--barge-in-after-ms", "1500",
                "--duration", "45", "--hangup-when-done", "2.5", "--timeline", str(timeline))
            record = json.loads(timeline.read_text())
            detail = await stored_call(line, record["call_sid"])
    assert printed.exit_code == 0 and "Greeting heard after" in printed.stdout, printed.stdout
    assert record["status"] == "completed" and record["violations"] == []
    assert double.connections[0].record.errors == []
    (clear,) = record["clears"]
    assert clear["flushed_ms"] > 0
    question = next(turn for turn in detail.turns if turn.role == "caller" and turn.text == ASKED)
    assert question.retrieval_outcome == "ok" and question.passages
    assert detail.summary.barge_ins == 1 and detail.summary.outcome == "caller_hung_up"
    interrupted = [turn for turn in detail.turns if turn.role == "assistant" and turn.interrupted]
    assert len(interrupted) == 1 and interrupted[0].heard_ms is not None


async def test_the_seconds_reported_only_in_session_closed_are_billed():
    """No `session.usage.updated` during this call (a long report interval): the service tells
    the session's seconds only in `session.closed`, which the engine waits for as it closes."""
    async with LiveDouble(transcripts=[ASKED], greeting_seconds=1.0, answer_seconds=1.5, usage_interval=3600) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url) as line:
            script = CallScript(utterances=[Utterance(QUESTION)], hangup_after=30, hangup_when_done_after_s=1.5)
            result = await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, script=script)
            detail = await stored_call(line, result.call_sid)
    [connection] = double.connections
    closed = next(event for event in connection.record.sent if event["type"] == "session.closed")
    assert "session.usage.updated" not in [event["type"] for event in connection.record.sent]
    seconds = closed["usage"]["seconds"]
    assert seconds >= 3
    price = line.settings.model_prices["gpt-live-1.1"]["active_minute"]
    assert detail.summary.cost_usd == pytest.approx(seconds / 60 * price, abs=1e-6)  # stored to the micro-dollar



async def test_octi_s_turns_in_the_call_log_are_word_for_word_what_the_model_said():
    """The service sends an audio chunk's words before it (the double does so): the first words
    of the greeting and of the answer are theirs, in the call log as in the recap."""
    script = CallScript(utterances=[Utterance(QUESTION)], hangup_after=30, hangup_when_done_after_s=2.0)
    async with LiveDouble(transcripts=[ASKED], greeting_seconds=1.5, answer_seconds=2.0) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url) as line:
            result = await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, script=script)
            detail = await stored_call(line, result.call_sid)

    assert result.status == "completed", result.summary()
    sent = double.connections[0].record.sent
    asked_at = next(index for index, event in enumerate(sent) if event["type"] == "session.input_transcript.delta")
    words = [(index, event["delta"]) for index, event in enumerate(sent)
             if event["type"] == "session.output_transcript.delta"]
    greeting = "".join(text for index, text in words if index < asked_at).strip()
    answer = "".join(text for index, text in words if index > asked_at).strip()
    octi = [turn.text.strip() for turn in detail.turns if turn.role == "assistant"]
    assert octi[0] == greeting != ""
    assert " ".join(octi[1:]) == answer != ""
    assert detail.recap.split("\n")[1] == f"- « {ASKED} » : {answer}"


async def test_a_delegation_after_the_model_spoke_or_on_words_that_never_came_searches_the_question_asked():
    """The model says it is looking before it delegates (which closes the caller's turn), then
    delegates again on the caller's next sounds, whose words never came: both delegations search
    the question the caller asked, and the call log keeps its passages."""
    script = CallScript(utterances=[Utterance(QUESTION), Utterance(AUDIO / "question_followup.wav")],
                        hangup_after=45, hangup_when_done_after_s=2.5)
    async with LiveDouble(transcripts=[ASKED, ""], greeting_seconds=1.0, answer_seconds=1.5,
                          speaks_before_delegating=True) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url) as line:
            result = await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, script=script)
            detail = await stored_call(line, result.call_sid)

    assert result.status == "completed", result.summary()
    live = double.connections[0]
    assert live.record.errors == []
    assert live.record.spoken[:2] == ["greeting", "acknowledgement"]
    first, second = live.delegations.values()
    assert first.result == second.result == "commentary"
    assert first.content.startswith("Réponds à l'éleveur à partir de ces fiches")
    assert second.content == first.content
    (question,) = [turn for turn in detail.turns if turn.role == "caller"]
    assert question.text == ASKED and question.retrieval_outcome == "ok"
    assert any(passage.source.startswith("sample_pack/incubation") for passage in question.passages)


async def test_a_delegation_on_sounds_whose_words_never_came_searches_nothing():
    """No words of the caller in the session: there is no question to search, and the model is
    told so (a search for nothing would have it say the fiches have nothing)."""
    script = CallScript(utterances=[Utterance(QUESTION)], hangup_after=30, hangup_when_done_after_s=2.0)
    async with LiveDouble(transcripts=[""], greeting_seconds=1.0, answer_seconds=1.5) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url) as line:
            result = await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, script=script)
            detail = await stored_call(line, result.call_sid)
            searches = sum(line.metrics.value("octi_retrievals_total", outcome=outcome)
                           for outcome in ("ok", "empty", "timeout", "error", "unavailable"))

    assert result.status == "completed", result.summary()
    (delegation,) = double.connections[0].delegations.values()
    assert delegation.result == "commentary" and NOTHING_TO_SEARCH in delegation.content
    assert searches == 0
    assert [turn for turn in detail.turns if turn.role == "caller"] == []


async def test_words_the_model_lets_pass_end_the_callers_turn_and_their_silence_is_prompted():
    """« Attendez… » and the model says nothing: the caller's turn ends all the same once they
    are quiet, so their silence afterwards is asked about, then ends the call."""
    wait = "Attendez, je regarde le thermomètre."
    script = CallScript(utterances=[Utterance(INTERRUPTION)], hangup_after=40)
    async with LiveDouble(transcripts=[wait], unanswered=[wait], greeting_seconds=1.5) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url,
                                silence_prompt_seconds=3, silence_goodbye_seconds=3) as line:
            result = await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, script=script)
            detail = await stored_call(line, result.call_sid)

    assert result.status == "completed" and result.closed_by == "server", result.summary()
    live = double.connections[0]
    assert live.record.errors == [] and live.delegations == {}
    (waited,) = [turn for turn in detail.turns if turn.role == "caller"]
    assert waited.text == wait and waited.end_ms is not None
    assert [event.type for event in detail.events] == ["silence_prompt", "silence_goodbye"]
    assert detail.summary.outcome == "timeout"
