"""The browser channel with ENGINE=gpt-live over real sockets: a page (the seed protocol, PCM16
24 kHz) → the real server → the GPT-Live double (μ-law 8 kHz). A spoken question answered
through a client delegation, a typed one answered from the passages the session searched, the
interrupt button while the model speaks on, and a reset to a fresh session."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from app.audio.g711 import ulaw_level, ulaw_to_pcm16
from app.engines.gpt_live import protocol, translator
from app.simulators.live_double import LiveDouble
from tests.browser_client import open_page, sign_in, speech, started, stored_calls
from tests.harness import running_line

ASKED = "À quelle température je dois mettre la couveuse pour des œufs de poule ?"
TYPED = "À quelle température régler la couveuse ?"
BYTES_PER_MS = 48  # the page's PCM16 at 24 kHz
MAX_LAG = 24  # samples at 8 kHz: more than the resampler's delay


async def answered_after(page, sent: int, timeout: float = 15.0) -> None:
    """Until an answer's audio ended after the first `sent` messages the page got."""
    await page.until(lambda m: any(later["type"] == "bot_audio_end" for later in page.texts[sent:]), timeout)


async def told(live, predicate, timeout: float = 10.0) -> dict:
    """The first client event the double took (now or later) matching `predicate`."""
    async with asyncio.timeout(timeout):
        while True:
            found = next((event for event in live.record.received if predicate(event)), None)
            if found is not None:
                return found
            await asyncio.sleep(0.02)


def sent_audio(live) -> list[bytes]:
    """The model's audio as the double streamed it, delta by delta (μ-law 8 kHz)."""
    return [base64.b64decode(event["delta"]) for event in live.record.sent
            if event["type"] == "session.output_audio.delta"]


def likeness(page_pcm: bytes, model_ulaw: bytes) -> float:
    """How alike the page's audio, taken back to 8 kHz (every third sample, at each phase and
    within the resampler's delay), and the model's are: 1.0 is the same waveform."""
    model = np.frombuffer(ulaw_to_pcm16(model_ulaw), "<i2").astype(float)
    page = np.frombuffer(page_pcm, "<i2").astype(float)
    best = -1.0
    for phase in range(3):
        heard = page[phase::3]
        length = min(len(heard), len(model)) - MAX_LAG
        for lag in range(MAX_LAG):
            best = max(best, float(np.corrcoef(heard[lag:lag + length], model[:length])[0, 1]))
    return best


def commentaries(live) -> list[dict]:
    return [event for event in live.record.received if event["type"] == "session.commentary.append"]


async def test_a_spoken_question_from_a_page_is_answered_through_a_delegation():
    async with LiveDouble(transcripts=[ASKED], greeting_seconds=1.0, answer_seconds=1.5) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url) as line:
            token = await sign_in(line)
            async with open_page(line.url, token=token) as page:
                await started(page)
                await page.until_type("bot_audio_end")  # the greeting
                await page.played_out()
                greeting = bytes(page.audio)
                await page.speak(speech("question_incubation.wav", trailing_silence_ms=1200))
                live = double.connections[0]
                await told(live, lambda e: e["type"] == "session.commentary.append" and e["delegation_id"])
                await answered_after(page, len(page.texts))
                await page.played_out()
                words = "".join(m["text"] for m in page.texts if m["type"] == "transcript_delta")
            [call] = await stored_calls(line)

    assert live.record.errors == [], "every client event was valid GPT-Live protocol"
    assert live.record.received[0]["session"]["audio"]["format"] == {"type": "audio/pcmu", "rate": 8000}
    assert live.record.spoken == ["greeting", "acknowledgement", "answer"]
    (delegation,) = live.delegations.values()
    assert delegation.question == ASKED and delegation.result == "commentary"
    assert delegation.content.startswith("Réponds à l'éleveur à partir de ces fiches")

    # The page got the model's voice at its own rate: the greeting as the double streamed it,
    # from its first sound, 100 ms of the model's μ-law for every 4 800 bytes of PCM16 at 24 kHz.
    deltas = sent_audio(live)
    first = next(index for index, delta in enumerate(deltas) if ulaw_level(delta) >= translator.LOUD_RMS)
    assert len(greeting) % (100 * BYTES_PER_MS) == 0
    model_greeting = b"".join(deltas[first:first + len(greeting) // (100 * BYTES_PER_MS)])
    assert len(greeting) / BYTES_PER_MS >= 1000, "all of the 1 s greeting"
    assert likeness(greeting, model_greeting) > 0.95

    summary = call.summary
    assert (summary.channel, summary.caller_masked, call.rag_mode) == ("web", "marie", "delegation")
    assert [turn.role for turn in call.turns] == ["assistant", "caller", "assistant"]
    question = call.turns[1]
    assert question.text == ASKED and question.retrieval_outcome == "ok"
    assert question.passages and question.passages[0].source.startswith("sample_pack/incubation")
    assert question.passages[0].title in delegation.content
    # OCTI's turns with their words, the same the page showed as they were said.
    assert call.turns[0].text.strip() and call.turns[2].text.strip()
    assert words == call.turns[0].text + call.turns[2].text
    assert not any(turn.interrupted for turn in call.turns) and "clear_audio" not in str(page.texts)


@pytest.mark.parametrize("rag_mode", ["inject", "tool"])
async def test_a_typed_question_is_answered_from_the_passages_the_session_searched(rag_mode):
    """The model delegates only what it heard: the session searches a typed question itself, in
    either RAG mode (GPT-Live has no search tool to offer; its delegations are our searches)."""
    async with LiveDouble(greeting_seconds=1.0) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url, rag_mode=rag_mode) as line:
            token = await sign_in(line)
            async with open_page(line.url, token=token) as page:
                await started(page)
                await page.until_type("bot_audio_end")
                await page.played_out()
                greeting_bytes = len(page.audio)
                await page.send_json({"type": "user_text", "text": TYPED})
                await answered_after(page, len(page.texts))
                await page.played_out()
            [call] = await stored_calls(line)

    live = double.connections[0]
    assert live.record.errors == []
    # The model knows the words in silence, then is asked to answer them from their passages.
    written = [event for event in live.record.received if event["type"] == "session.thinking.append"]
    assert [(event["delegation_id"], TYPED in event["content"]) for event in written] == [(None, True)]
    answer = commentaries(live)[-1]
    assert answer["delegation_id"] is None and "Extraits de la base de connaissances" in answer["content"]
    assert len(answer["content"]) <= protocol.APPEND_MAX_CHARS
    assert live.delegations == {}, "no delegation: the model heard no question"
    # The double says any commentary without a delegation as a notice (greeting_seconds long):
    # it does not read what it is asked to say.
    assert live.record.spoken == ["greeting", "notice"]
    assert len(page.audio) - greeting_bytes >= 1000 * BYTES_PER_MS, "the answer reached the page"

    assert [turn.role for turn in call.turns] == ["assistant", "caller", "assistant"]
    typed = call.turns[1]
    assert typed.text == TYPED and typed.retrieval_outcome == "ok"
    assert typed.passages and typed.passages[0].source.startswith("sample_pack/incubation")
    assert typed.passages[0].title in answer["content"]
    assert call.turns[2].text.strip()


async def test_the_interrupt_button_mutes_the_rest_of_what_the_model_goes_on_saying():
    """No client event stops GPT-Live: the page is cleared, the rest of the answer the model
    goes on with never reaches it, the model is told so in silence, and the next answer is heard."""
    async with LiveDouble(greeting_seconds=3.0) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url) as line:
            token = await sign_in(line)
            async with open_page(line.url, token=token) as page:
                await started(page)
                while len(page.played) < 1000 * BYTES_PER_MS:
                    await asyncio.sleep(0.02)
                await page.send_json({"type": "interrupt"})
                await page.until_type("clear_audio")
                at_clear = len(page.audio), len(page.texts)
                live = double.connections[0]
                stopped = await told(live, lambda e: e["type"] == "session.thinking.append")
                while live.session_ms < 3000 + 2 * translator.QUIET_MS:  # the model said all of it
                    await asyncio.sleep(0.05)
                after_greeting = len(page.audio), [m["type"] for m in page.texts[at_clear[1]:]]
                double.greeting_seconds = 1.0  # how long the typed question's answer is
                await page.send_json({"type": "user_text", "text": TYPED})
                await answered_after(page, len(page.texts))
                await page.played_out()
            [call] = await stored_calls(line)

    assert live.record.errors == []
    assert stopped["delegation_id"] is None and "interrompue" in stopped["content"]
    # The model said its whole greeting; the page got none of it after the clear, nor its words.
    said_ms = sum(100 for delta in sent_audio(live) if ulaw_level(delta) >= translator.LOUD_RMS)
    assert said_ms >= 2500 and at_clear[0] / BYTES_PER_MS < said_ms - 1000
    assert after_greeting == (at_clear[0], [])
    assert live.record.spoken == ["greeting", "notice"]
    assert len(page.audio) - at_clear[0] >= 1000 * BYTES_PER_MS, "the next answer was heard"

    assert call.summary.barge_ins == 1
    greeting, typed, answer = call.turns
    assert greeting.interrupted and not answer.interrupted
    assert abs(greeting.heard_ms - page.played_at_clear / BYTES_PER_MS) < 150
    assert typed.text == TYPED and typed.passages


async def test_reset_starts_a_new_live_session_without_the_conversation():
    async with LiveDouble(greeting_seconds=1.0) as double:
        async with running_line(engine="gpt-live", gpt_live_url=double.url) as line:
            token = await sign_in(line)
            async with open_page(line.url, token=token) as page:
                await started(page)
                await page.until_type("bot_audio_end")
                await page.send_json({"type": "user_text", "text": TYPED})
                await answered_after(page, len(page.texts))
                await page.send_json({"type": "reset_session"})
                await page.until(lambda m: m["type"] == "ready" and page.texts.count(m) == 2)
                second = await double.wait_for_connection(2)
                await page.send_json({"type": "user_text", "text": "Et pour l'humidité ?"})
                await answered_after(page, len(page.texts))
            [call] = await stored_calls(line)

    first = double.connections[0]
    assert first.record.errors == [] and second.record.errors == []
    assert first.closed_reason == "close_requested"
    assert "input" not in second.record.received[0]["session"], "a fresh conversation: no history"
    # The first session said the greeting and an answer; the second only the answer asked of it.
    assert len(first.record.spoken) == 2 and len(second.record.spoken) == 1
    written = [event["content"] for event in second.record.received if event["type"] == "session.thinking.append"]
    assert len(written) == 1 and "Et pour l'humidité ?" in written[0] and TYPED not in written[0]
    assert "Extraits de la base de connaissances" in commentaries(second)[0]["content"]
    assert [event.type for event in call.events] == ["conversation_reset"]
    assert [turn.text for turn in call.turns if turn.role == "caller"] == [TYPED, "Et pour l'humidité ?"]
