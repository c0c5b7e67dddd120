"""Knowledge in calls: passages injected before the answer, the tool round trip, degradation."""

from __future__ import annotations

import asyncio
import json

import httpx

from app.channels.contract import CallOutcome
from app.agent.rag import retrieval_query
from app.agent.tools import session_instructions
from app.knowledge.retrieval import Retriever
from app.agent.session import CallSession
from app.config import Settings
from app.knowledge.stores import open_store
from app.engines.openai_realtime.engine import RealtimeEngine
from app.service import engine_options
from app.simulators.twilio_caller import CallScript, Utterance, place_call
from tests.harness import AUDIO, AUTH_TOKEN, PUBLIC_URL, running_line, seeded_data_dir
from tests.test_session import MemoryChannel, telephone_frames

QUESTION = AUDIO / "question_followup.wav"
INCUBATION = "sample_pack/incubation-temperature-humidite.md"
ASKED = "Euh, à quelle température je dois mettre la couveuse pour des œufs de poule ?"


def spoken(connection):
    """The responses of the conversation, without the recap the session asks for after the call."""
    return [response for response in connection.responses if response.conversation == "auto"]

def answer_context(response) -> str:
    """The knowledge context the model read for a response: the system messages in its input."""
    return "\n".join(part.get("text", "") for item in response.input_items if item.get("role") == "system"
                     for part in item.get("content", []))


def ask_once() -> CallScript:
    return CallScript(utterances=[Utterance(QUESTION)], hangup_after=30, hangup_when_done_after_s=2.5)


async def call(line, script: CallScript):
    return await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, script=script)


async def test_inject_mode_answers_from_the_passages_for_the_question(double):
    double.script_next_connection([ASKED], answer_seconds=1.5)
    async with running_line(openai_realtime_url=double.url) as line:
        result = await call(line, ask_once())
        assert line.metrics.value("octi_retrievals_total", outcome="ok") >= 1
        assert line.metrics.value("octi_turn_hold_seconds_count") == 1
    connection = double.connections[0]
    assert result.status == "completed" and connection.errors_sent == []

    greeting, answer = spoken(connection)
    assert answer.trigger == "client", "the model did not answer on its own"
    context = answer_context(answer)
    assert f"(source : {INCUBATION})" in context and "37,5" in context
    assert "Comment utiliser ces extraits" in context
    # The instructions never change, so the service's prompt cache keeps the conversation.
    assert answer.instructions == session_instructions(line.settings)
    # The streaming transcription had given every word before the turn ended, and the answer
    # did not wait for the completed transcript: nothing started between speech_stopped and it.
    types = [event["type"] for event in connection.server_events]
    stopped = types.index("input_audio_buffer.speech_stopped")
    started = [event["response"] for event in list(connection.server_events)[stopped:]
               if event["type"] == "response.created"]
    assert len([r for r in started if not (r.get("metadata") or {}).get("octi")]) == 1  # the recap aside
    # Context rides on the response only: removed from the conversation once answered.
    assert connection.client_event_counts["conversation.item.delete"] == 1
    assert all(item.get("role") != "system" for item in connection.conversation)


async def test_tool_mode_round_trip(double):
    double.script_next_connection([ASKED], answer_seconds=1.5)
    # The search's budget is not the subject here: under a loaded machine (the parallel suite) it
    # must not cut the search the round trip carries.
    async with running_line(openai_realtime_url=double.url, rag_mode="tool", rag_timeout_ms=3000) as line:
        result = await call(line, ask_once())
    connection = double.connections[0]
    assert result.status == "completed" and connection.errors_sent == []
    assert [r.kind for r in spoken(connection)] == ["greeting", "function_call", "answer"]
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
        without_context = line.metrics.value("octi_retrievals_total", outcome="error") + line.metrics.value("octi_retrievals_total", outcome="timeout")
    answer = double.connections[0].responses[1]
    assert result.status == "completed" and answer.status == "completed"
    assert "n'a pas répondu" in answer_context(answer) and "source :" not in answer_context(answer)
    assert without_context >= 1
    assert health["status"] == "degraded" and health["knowledge"]["ok"] is False


async def open_session(double, store, **settings_overrides):
    settings = Settings(_env_file=None, openai_api_key="sk-test", openai_realtime_url=double.url,
                        **settings_overrides)
    channel = MemoryChannel()
    engine = await RealtimeEngine.open(settings, engine_options(settings))
    retriever = Retriever(store, budget_ms=settings.rag_timeout_ms, limit=settings.rag_top_k)
    session = CallSession(channel, engine, settings, retriever=retriever)
    return channel, session, asyncio.create_task(session.run())


async def test_a_follow_up_is_searched_with_the_previous_question(double):
    double.script_next_connection([ASKED, "Et pour les œufs de cane, c'est pareil ?"], answer_seconds=1.0)
    store = open_store(Settings(_env_file=None, data_dir=await seeded_data_dir()))
    # A hold long enough for any search: this is about the query, not the timing.
    channel, session, running = await open_session(double, store, rag_hold_ms=3000)
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
    # The answer waits up to 4 s for its passages: the caller talks again before they come.
    channel, session, running = await open_session(double, store, rag_timeout_ms=5000, rag_hold_ms=4000)
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
    answers = spoken(connection)[1:]
    assert len(answers) == 1 and answers[0].trigger == "client"


async def test_a_slow_store_past_the_budget_leaves_the_turn_without_context(double):
    double.script_next_connection([ASKED], answer_seconds=1.0)
    store = SlowStore(delay=5.0)
    channel, session, running = await open_session(double, store, rag_timeout_ms=200, rag_hold_ms=1000)
    connection = await double.wait_for_connection()
    await connection.wait_for_server(lambda e: e["type"] == "response.done", timeout=10)  # greeting
    await channel.speak(telephone_frames(QUESTION) + [b"\xff" * 160] * 40)
    await connection.wait_for_server(lambda e: e["type"] == "response.done", timeout=10, new_only=True)
    await channel.inbox.put(None)
    await running

    (turn,) = [turn for turn in session.turns if turn.role == "caller"]
    assert turn.retrieval.outcome == "timeout" and turn.retrieval.elapsed_ms < 5000
    answer = connection.responses[1]
    assert answer.status == "completed" and "n'a pas répondu à temps" in answer_context(answer)


class DelayedStore:
    """A working store that takes `delay` to answer each search: no search of the streamed
    words finishes before newer words supersede it."""

    def __init__(self, store, delay: float) -> None:
        self.store, self.delay = store, delay

    async def search(self, query, limit=5):
        await asyncio.sleep(self.delay)
        return await self.store.search(query, limit)


async def test_a_search_still_running_when_the_hold_ends_is_waited_for_not_sent_round_the_tool(double):
    """Words known, none of their searches finished by the end of the hold: the answer waits for
    the one under way (RAG_TIMEOUT_MS bounds it) rather than asking the model to search again."""
    double.script_next_connection([ASKED], answer_seconds=1.0)
    store = open_store(Settings(_env_file=None, data_dir=await seeded_data_dir()))
    await store.search("couveuse", 1)  # the embedding model loaded
    channel, session, running = await open_session(double, DelayedStore(store, 1.0), rag_timeout_ms=3000)
    connection = await double.wait_for_connection()
    await connection.wait_for_server(lambda e: e["type"] == "response.done", timeout=10)  # greeting
    await channel.speak(telephone_frames(QUESTION) + [b"\xff" * 160] * 100)
    await connection.wait_for_server(lambda e: e["type"] == "response.done", timeout=15, new_only=True)
    await channel.inbox.put(None)
    await running
    await store.close()

    assert [r.kind for r in spoken(connection)] == ["greeting", "answer"], "no search tool round trip"
    (turn,) = [turn for turn in session.turns if turn.role == "caller"]
    assert turn.retrieval.outcome == "ok" and turn.retrieval.query == ASKED
    assert f"(source : {INCUBATION})" in answer_context(connection.responses[1])


async def test_a_slow_transcript_does_not_delay_the_answer(double):
    """gpt-transcribe sends the words 2 s after the turn: the answer goes out at once, with the
    search tool, and the model (which heard the question) looks the passages up itself."""
    double.script_next_connection([ASKED], answer_seconds=1.5, transcription_seconds=2.0)
    async with running_line(openai_realtime_url=double.url, openai_transcribe_model="gpt-transcribe") as line:
        result = await call(line, ask_once())
    connection = double.connections[0]
    assert result.status == "completed" and connection.errors_sent == []
    types = [event["type"] for event in connection.server_events]
    create = next(i for i, e in enumerate(connection.client_events) if e["type"] == "response.create"
                  and "Dis exactement" not in (e["response"].get("instructions") or ""))
    assert connection.client_events[create]["response"]["tools"][0]["name"] == "search_knowledge"
    # The answer was asked for before the transcript existed.
    assert [r.kind for r in spoken(connection)] == ["greeting", "function_call", "answer"]
    transcribed = types.index("conversation.item.input_audio_transcription.completed")
    first_function_call = types.index("response.function_call_arguments.done")
    assert first_function_call < transcribed
    output = next(item for item in connection.conversation if item["type"] == "function_call_output")
    assert json.loads(output["output"])["passages"][0]["source"] == INCUBATION
    assert connection.responses[1].function_call["arguments"] == json.dumps({"query": ASKED}, ensure_ascii=False)


async def test_the_passages_are_those_of_the_words_heard_when_the_caller_stopped(double):
    """Streamed words trailing the audio by 1 s: when the caller stops, only the first words are
    in; the answer goes with the passages for those words, not later ones, and not nothing."""
    double.stream_lag_seconds = 1.0
    double.script_next_connection([ASKED], answer_seconds=1.0)
    store = open_store(Settings(_env_file=None, data_dir=await seeded_data_dir()))
    await store.search("couveuse", 1)  # the embedding model loaded: searches take tens of ms
    # The last words arrive 0.5 s after speech_stopped (1 s lag, 0.5 s of VAD silence): past the hold.
    channel, session, running = await open_session(double, store, rag_hold_ms=300)
    connection = await double.wait_for_connection()
    await connection.wait_for_server(lambda e: e["type"] == "response.done", timeout=10)  # greeting
    answered = asyncio.create_task(
        connection.wait_for_server(lambda e: e["type"] == "response.done", timeout=15, new_only=True))
    await channel.speak(telephone_frames(QUESTION) + [b"\xff" * 160] * 100, real_time=True)
    await answered
    await channel.inbox.put(None)
    await running

    (turn,) = [turn for turn in session.turns if turn.role == "caller"]
    heard = turn.retrieval.query
    assert heard and ASKED.startswith(heard) and heard != ASKED, "a prefix: the rest came after the answer left"
    assert turn.text == ASKED  # the transcript did complete later
    expected = await store.search(heard, Settings(_env_file=None).rag_top_k)
    answer = connection.responses[1]
    assert [p.id for p in turn.retrieval.passages] == [p.id for p in expected]
    assert all(f"(source : {p.source})" in answer_context(answer) for p in expected)
    await store.close()



def test_only_a_short_follow_up_carries_the_previous_question():
    previous = "À quelle température je règle la couveuse ?"
    assert retrieval_query(previous, "Et pour les dindes ?") == f"{previous} Et pour les dindes ?"
    assert retrieval_query(previous, "Et pour les œufs de cane, c'est pareil ?").startswith(previous)
    standalone = "Mes poules ont le bec ouvert et les ailes écartées, elles ont chaud ?"
    assert retrieval_query(previous, standalone) == standalone  # a new topic stands alone
    assert retrieval_query(None, "Et pour les dindes ?") == "Et pour les dindes ?"
