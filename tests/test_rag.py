"""Knowledge in calls: passages injected before the answer, the tool round trip, degradation."""

from __future__ import annotations

import asyncio
import json

import httpx

from app.agent.channel import CallOutcome
from app.agent.rag import Retriever
from app.agent.session import CallSession, realtime_session_update
from app.config import Settings
from app.knowledge.stores import open_store
from app.realtime.connection import RealtimeConnection
from app.simulators.twilio_caller import CallScript, Utterance, place_call
from tests.harness import AUDIO, AUTH_TOKEN, PUBLIC_URL, running_line, seeded_data_dir
from tests.test_session import MemoryChannel, telephone_frames

QUESTION = AUDIO / "question_followup.wav"
INCUBATION = "sample_pack/incubation-temperature-humidite.md"
ASKED = "Euh, à quelle température je dois mettre la couveuse pour des œufs de poule ?"


def ask_once() -> CallScript:
    return CallScript(utterances=[Utterance(QUESTION)], hangup_after=30, hangup_when_done_after_s=2.5)


async def call(line, script: CallScript):
    return await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, script=script)


async def test_inject_mode_answers_from_the_passages_for_the_question(double):
    double.script_next_connection([ASKED], answer_seconds=1.5)
    async with running_line(openai_realtime_url=double.url) as line:
        result = await call(line, ask_once())
        assert line.metrics.counters["retrievals_ok"] == 1
    connection = double.connections[0]
    assert result.status == "completed" and connection.errors_sent == []

    greeting, answer = connection.responses
    assert answer.trigger == "client", "the model did not answer on its own"
    assert answer.instructions.startswith(line.settings.agent_instructions)
    assert f"(source : {INCUBATION})" in answer.instructions and "37,5" in answer.instructions
    assert "Comment utiliser ces extraits" in answer.instructions
    # No response started between the caller's question and the injected answer.
    types = [event["type"] for event in connection.server_events]
    transcribed = types.index("conversation.item.input_audio_transcription.completed")
    assert types[transcribed:].count("response.created") == 1
    # Context rides on the response only: nothing was added to the conversation.
    assert all(item.get("role") != "system" for item in connection.conversation)


async def test_tool_mode_round_trip(double):
    double.script_next_connection([ASKED], answer_seconds=1.5)
    async with running_line(openai_realtime_url=double.url, rag_mode="tool") as line:
        result = await call(line, ask_once())
    connection = double.connections[0]
    assert result.status == "completed" and connection.errors_sent == []
    assert [r.kind for r in connection.responses] == ["greeting", "function_call", "answer"]
    output = next(item for item in connection.conversation if item["type"] == "function_call_output")
    assert output["call_id"] == connection.responses[1].function_call["call_id"]
    passages = json.loads(output["output"])["passages"]
    assert passages and passages[0]["source"] == INCUBATION
    answer_burst_ms = sum(b.played_ms for b in result.bursts if b.start_t > result.utterances[0].speech_end_t)
    assert 0 <= answer_burst_ms - connection.responses[2].audio_ms < 20


async def test_a_dead_knowledge_store_never_stalls_the_call(double):
    double.script_next_connection([ASKED], answer_seconds=1.5)
    async with running_line(openai_realtime_url=double.url, knowledge_backend="weaviate",
                            weaviate_url="http://127.0.0.1:9") as line:
        result = await call(line, ask_once())
        async with httpx.AsyncClient() as http:
            health = (await http.get(line.url + "/health")).json()
        without_context = line.metrics.counters["retrievals_error"] + line.metrics.counters["retrievals_timeout"]
    answer = double.connections[0].responses[1]
    assert result.status == "completed" and answer.status == "completed"
    assert "n'a pas répondu" in answer.instructions and "source :" not in answer.instructions
    assert without_context == 1
    assert health["status"] == "degraded" and health["knowledge"]["ok"] is False


async def open_session(double, store, **settings_overrides):
    settings = Settings(_env_file=None, openai_api_key="sk-test", openai_realtime_url=double.url,
                        **settings_overrides)
    channel = MemoryChannel()
    realtime = await RealtimeConnection.open(settings, realtime_session_update(settings))
    retriever = Retriever(store, budget_ms=settings.rag_timeout_ms, limit=settings.rag_top_k)
    session = CallSession(channel, realtime, settings, retriever=retriever)
    return channel, session, asyncio.create_task(session.run())


async def test_a_follow_up_is_searched_with_the_previous_question(double):
    double.script_next_connection([ASKED, "Et pour les œufs de cane, c'est pareil ?"], answer_seconds=1.0)
    store = open_store(Settings(_env_file=None, data_dir=await seeded_data_dir()))
    channel, session, running = await open_session(double, store)
    connection = await double.wait_for_connection()
    frames = telephone_frames(QUESTION)
    silence = [b"\xff" * 160] * 60
    for _ in range(2):
        await channel.speak(frames + silence)
        await connection.wait_for_server(lambda e: e["type"] == "response.done", timeout=10, new_only=True)
    await channel.inbox.put(None)
    assert await running == CallOutcome.CALLER_HUNG_UP
    await store.close()

    first, follow_up = [turn for turn in session.turns if turn.role == "caller"]
    assert follow_up.retrieval.query == f"{first.text} {follow_up.text}"
    assert follow_up.retrieval.outcome == "ok"
    assert any(p.source.startswith("sample_pack/incubation") for p in follow_up.retrieval.passages)


class SlowStore:
    """A knowledge store that takes its time: the caller talks again before it answers."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.searches = 0

    async def search(self, query, limit=5):
        self.searches += 1
        await asyncio.sleep(self.delay)
        return []


async def test_barge_in_during_retrieval_cancels_that_turns_answer(double):
    double.script_next_connection(["Première question ?", "Non, autre chose."], answer_seconds=1.0)
    store = SlowStore(delay=2.5)
    channel, session, running = await open_session(double, store, rag_timeout_ms=5000)
    connection = await double.wait_for_connection()
    await connection.wait_for_server(lambda e: e["type"] == "response.done", timeout=10)  # greeting
    frames, silence = telephone_frames(QUESTION), [b"\xff" * 160] * 40
    await channel.speak(frames + silence)
    await connection.wait_for_server(
        lambda e: e["type"] == "conversation.item.input_audio_transcription.completed", timeout=10)
    await channel.speak(frames + silence)  # talks again while the first retrieval is running
    await connection.wait_for_server(lambda e: e["type"] == "response.done", timeout=15, new_only=True)
    await channel.inbox.put(None)
    await running

    assert store.searches == 2
    first, second = [turn for turn in session.turns if turn.role == "caller"]
    assert first.retrieval is None, "the interrupted turn's retrieval was cancelled"
    assert second.retrieval is not None
    answers = connection.responses[1:]
    assert len(answers) == 1 and answers[0].trigger == "client"


async def test_a_slow_store_past_the_budget_leaves_the_turn_without_context(double):
    double.script_next_connection([ASKED], answer_seconds=1.0)
    store = SlowStore(delay=5.0)
    channel, session, running = await open_session(double, store, rag_timeout_ms=200)
    connection = await double.wait_for_connection()
    await connection.wait_for_server(lambda e: e["type"] == "response.done", timeout=10)  # greeting
    await channel.speak(telephone_frames(QUESTION) + [b"\xff" * 160] * 40)
    await connection.wait_for_server(lambda e: e["type"] == "response.done", timeout=10, new_only=True)
    await channel.inbox.put(None)
    await running

    (turn,) = [turn for turn in session.turns if turn.role == "caller"]
    assert turn.retrieval.outcome == "timeout" and turn.retrieval.elapsed_ms < 5000
    answer = connection.responses[1]
    assert answer.status == "completed" and "n'a pas répondu à temps" in answer.instructions
