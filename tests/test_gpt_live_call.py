"""A whole phone call with ENGINE=gpt-live over real sockets: the simulated Twilio caller → the
real server → the GPT-Live double. Greeting, a knowledge question answered through a client
delegation (its passages in the call log), a barge-in the model yields to (`clear` sent, what
was heard recorded), hang-up."""

from __future__ import annotations

import asyncio

from app.calllog.store import CallLogStore
from app.simulators.live_double import LiveDouble
from app.simulators.twilio_caller import CallScript, Utterance, place_call
from tests.harness import AUDIO, AUTH_TOKEN, PUBLIC_URL, running_line

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


async def test_a_whole_call_with_gpt_live():
    script = CallScript(
        utterances=[Utterance(QUESTION), Utterance(INTERRUPTION, after_answer_starts_ms=1500)],
        hangup_after=45, hangup_when_done_after_s=2.5,
    )
    async with LiveDouble(transcripts=[ASKED, CUT_IN], greeting_seconds=2.0, answer_seconds=6.0) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url) as line:
            result = await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, script=script)
            detail = await stored_call(line, result.call_sid)
            barge_ins = line.metrics.value("octi_barge_ins_total")

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
    assert detail.model == "gpt-live-1.1" and detail.codec == "pcmu"
    question = next(turn for turn in detail.turns if turn.role == "caller" and turn.text == ASKED)
    assert question.retrieval_outcome == "ok" and question.retrieval_ms is not None
    assert question.passages and question.passages[0].source.startswith("sample_pack/incubation")
    assert all(passage.score > 0 for passage in question.passages)
    assert question.start_ms is not None and question.end_ms > question.start_ms

    # The barge-in: the model talked over the caller a while, then yielded; the bridge cleared
    # what Twilio still held and recorded what the caller had heard of the answer.
    assert cut_in.barge_in
    assert live.record.yields == 1
    assert len(result.clears) == 1 and barge_ins == 1 and summary.barge_ins == 1
    clear = result.clears[0]
    assert clear.burst is not None and clear.t > cut_in.start_t
    interrupted = [turn for turn in detail.turns if turn.role == "assistant" and turn.interrupted]
    assert len(interrupted) == 1
    assert abs(interrupted[0].heard_ms - clear.played_ms) <= 40, (interrupted[0], clear)
    # The caller was answered after the barge-in, then hung up.
    assert any(burst.start_t > cut_in.speech_end_t for burst in result.bursts)
    assert second.result == "commentary"
    assert summary.cost_usd is not None and summary.cost_usd > 0  # active minutes, priced
