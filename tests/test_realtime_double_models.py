"""The double's model behaviours: transcription streamed while the caller speaks or sent after
the commit; model-specific session fields refused where the types say they do not apply; and
the session's truncation and output limit applied to what the model reads and says."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.simulators.realtime_double import RealtimeDouble
from app.simulators.transcriber import CHARS_PER_SECOND, STREAM_LAG_SECONDS, StreamedUtterance
from tests.test_realtime_double import Client, append_audio, open_session, speech, update_session

QUESTION = "Bonjour, à quelle température je règle la couveuse pour des œufs de poule ?"
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"


@pytest.fixture
async def double() -> AsyncIterator[RealtimeDouble]:
    async with RealtimeDouble(speed=0, transcripts=[QUESTION], transcription_seconds=0.4) as running:
        yield running


async def listen_and_timeline(client: Client, model: str, **transcription) -> list[tuple[int, dict]]:
    """Stream the 5.1 s question in real-time order and note, for each event, how much audio had
    been appended when it arrived (ms): the audio timeline the double works on."""
    await update_session(client, audio={"input": {
        "format": {"type": "audio/pcmu"},
        "transcription": {"model": model, "language": "fr", **transcription},
        "turn_detection": {"type": "server_vad", "create_response": False},
    }})
    audio = speech("question_incubation.wav", "pcmu", trailing_silence_ms=2000)
    timeline: list[tuple[int, dict]] = []
    for offset in range(0, len(audio), 160):
        await append_audio(client, audio[offset : offset + 160], "pcmu")
        # A round trip that changes nothing: whatever the double sent for this audio is in by then.
        seen = len(client.events)
        await update_session(client)
        timeline += [((offset + 160) // 8, event) for event in client.events[seen:]
                     if event["type"] != "session.updated"]
    return timeline


def at(timeline: list[tuple[int, dict]], event_type: str) -> list[int]:
    return [ms for ms, event in timeline if event["type"] == event_type]


async def test_a_streaming_model_sends_the_words_while_the_caller_speaks(double: RealtimeDouble) -> None:
    async with open_session(double) as client:
        timeline = await listen_and_timeline(client, "gpt-realtime-whisper", delay="minimal")
    started, = at(timeline, "input_audio_buffer.speech_started")
    stopped, = at(timeline, "input_audio_buffer.speech_stopped")
    deltas = [(ms, event["delta"]) for ms, event in timeline if event["type"] == DELTA]
    assert "".join(text for _, text in deltas) == QUESTION
    # Words arrive while the caller talks, in several pieces, the first well before the end.
    assert len(deltas) > 5 and deltas[0][0] < stopped - 2000
    # The first word: spoken at the conversational pace from the onset, then the lag of "minimal".
    first_word_ms = 1000 * (len("Bonjour,") / CHARS_PER_SECOND + STREAM_LAG_SECONDS["minimal"])
    onset_ms = 200  # the recording opens with 200 ms of silence; speech is detected after 100 ms of
    assert started == onset_ms + 120  # voice, seen at the next 20 ms chunk
    assert abs(deltas[0][0] - (onset_ms + first_word_ms)) <= 60
    # With a lag below the VAD's silence, every word is in before speech_stopped.
    assert deltas[-1][0] <= stopped
    completed_ms, = at(timeline, COMPLETED)
    completed = next(event for _, event in timeline if event["type"] == COMPLETED)
    assert completed_ms == stopped and completed["transcript"] == QUESTION
    assert completed["usage"]["type"] == "duration"


async def test_a_longer_delay_trails_the_audio_past_the_end_of_speech(double: RealtimeDouble) -> None:
    async with open_session(double) as client:
        timeline = await listen_and_timeline(client, "gpt-realtime-whisper", delay="xhigh")
    stopped, = at(timeline, "input_audio_buffer.speech_stopped")
    deltas = at(timeline, DELTA)
    speech_end = stopped - 500  # the VAD waited 500 ms of silence
    lag_ms = 1000 * STREAM_LAG_SECONDS["xhigh"]
    assert deltas[-1] == pytest.approx(speech_end + lag_ms, abs=40)
    assert at(timeline, COMPLETED) == [deltas[-1]]  # completed once the last word is out


async def test_a_model_that_does_not_stream_transcribes_after_the_commit(double: RealtimeDouble) -> None:
    async with open_session(double) as client:
        timeline = await listen_and_timeline(client, "gpt-transcribe", keywords=["couveuse"])
        await client.until(COMPLETED, timeout=5)
    stopped, = at(timeline, "input_audio_buffer.speech_stopped")
    # Nothing during speech; the text comes 0.4 s (wall clock) after the commit.
    assert not [ms for ms in at(timeline, DELTA) if ms <= stopped]
    completed = client.of_type(COMPLETED)[0]
    assert completed["transcript"] == QUESTION


@pytest.mark.parametrize(("transcription", "param"), [
    ({"model": "gpt-transcribe", "delay": "low"}, "session.audio.input.transcription.delay"),
    ({"model": "gpt-realtime-whisper", "keywords": ["couveuse"]}, "session.audio.input.transcription.keywords"),
    ({"model": "gpt-realtime-whisper", "prompt": "aviculture"}, "session.audio.input.transcription.prompt"),
])
async def test_model_specific_transcription_fields_are_refused_elsewhere(
        double: RealtimeDouble, transcription: dict, param: str) -> None:
    async with open_session(double) as client:
        await client.send({"type": "session.update",
                           "session": {"type": "realtime", "audio": {"input": {"transcription": transcription}}}})
        error = (await client.until("error"))["error"]
    assert (error["code"], error["param"]) == ("unsupported_parameter", param)
    assert double.connections[0].session["audio"]["input"]["transcription"] is None  # unchanged


async def test_reasoning_is_for_reasoning_models_only(double: RealtimeDouble) -> None:
    async with open_session(double) as client:  # gpt-realtime: not a reasoning model
        await client.send({"type": "session.update",
                           "session": {"type": "realtime", "reasoning": {"effort": "minimal"}}})
        error = (await client.until("error"))["error"]
    assert (error["code"], error["param"]) == ("unsupported_parameter", "session.reasoning")


async def test_reasoning_keywords_and_delay_are_accepted_where_they_apply(double: RealtimeDouble) -> None:
    from websockets.asyncio.client import connect

    from tests.test_realtime_double import AUTH

    async with connect(f"{double.url}?model=gpt-realtime-2.1", additional_headers=AUTH) as ws:
        client = Client(ws)
        await client.recv()
        session = await update_session(
            client, reasoning={"effort": "minimal"}, max_output_tokens=600,
            truncation={"type": "retention_ratio", "retention_ratio": 0.8,
                        "token_limits": {"post_instructions": 6000}},
            audio={"input": {"transcription": {"model": "gpt-realtime-whisper", "delay": "low"}}})
        assert session["reasoning"] == {"effort": "minimal"} and session["max_output_tokens"] == 600
        assert session["audio"]["input"]["transcription"]["delay"] == "low"
        session = await update_session(
            client, audio={"input": {"transcription": {"model": "gpt-transcribe", "keywords": ["picage"]}}})
        assert session["audio"]["input"]["transcription"] == {"model": "gpt-transcribe", "keywords": ["picage"]}


def test_a_fast_talker_s_words_are_squeezed_to_the_end_of_speech() -> None:
    utterance = StreamedUtterance.start("item_1", "un deux trois quatre", onset=0, lag_seconds=0.2,
                                        units_per_second=1000)
    assert utterance.due(100) == ""  # "un" ends at 2 chars / 14 per s = 143 ms, plus 200 ms lag
    assert utterance.due(400) == "un"
    utterance.speech_ended(600)  # stopped at 0.6 s: "trois quatre" (paced to 1.4 s) was said by then
    assert utterance.due(799) == " deux"
    assert utterance.due(800) == " trois quatre" and utterance.all_sent


async def test_retention_truncation_drops_old_turns_once_over_the_limit(double: RealtimeDouble) -> None:
    async with open_session(double) as client:
        await update_session(client, truncation={"type": "retention_ratio", "retention_ratio": 0.5,
                                                 "token_limits": {"post_instructions": 100}})
        inputs = []
        for turn in range(6):  # 6 user messages of 40 tokens (160 characters) each
            await client.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": f"{turn}" * 160}]}})
            await client.until("conversation.item.added")
            await client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
            done = await client.until("response.done")
            inputs.append(done["response"]["usage"]["input_token_details"]["text_tokens"])
    connection = double.connections[0]
    instructions = inputs[0] - 40
    conversation = [tokens - instructions for tokens in inputs]
    # Every answer adds its own text; once past 100 tokens the conversation falls to <= 50.
    assert conversation[0] == 40 and conversation[1] > 40
    assert max(conversation) <= 100 + 40
    over = next(i for i, c in enumerate(conversation) if c < conversation[i - 1])
    assert conversation[over] <= 50 + 40 and connection.truncations_applied >= 1
    # The items stay in the conversation; only the model's input lost them.
    assert len([i for i in connection.conversation if i["role"] == "user"]) == 6


async def test_max_output_tokens_cuts_an_answer_as_incomplete(double: RealtimeDouble) -> None:
    async with open_session(double) as client:
        await update_session(client, max_output_tokens=20)  # 20 tokens of audio: 1 s at 50 ms a token
        await client.send({"type": "response.create"})
        done = await client.until("response.done")
    assert done["response"]["status"] == "incomplete"
    assert done["response"]["status_details"]["reason"] == "max_output_tokens"
    assert double.connections[0].responses[0].audio_ms == 1000
