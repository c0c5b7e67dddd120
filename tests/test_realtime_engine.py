"""The Realtime GA engine behind the engine contract, against the Realtime double over real sockets."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.server import serve

from app.agent.tools import END_CALL
from app.config import Settings
from app.engines.contract import (
    AnswerAudio,
    AnswerDone,
    AnswerStarted,
    AnswerText,
    AnswerTextPiece,
    CallerWords,
    Conversation,
    EngineError,
    Exchange,
    SpeechStarted,
    SpeechStopped,
    ToolCall,
)
from app.engines.openai_realtime.engine import RealtimeEngine, RealtimeOptions
from tests.test_realtime_double import read_wav, to_pcm_24k


def settings(double, **overrides) -> Settings:
    return Settings(_env_file=None, openai_api_key="sk-test", openai_realtime_url=double.url, **overrides)


async def next_of(events, kind, timeout: float = 10.0):
    async with asyncio.timeout(timeout):
        async for event in events:
            if isinstance(event, kind):
                return event
    raise AssertionError(f"the events ended before a {kind.__name__}")


async def test_an_answer_with_context_reads_it_once_and_forgets_it(double):
    engine = await RealtimeEngine.open(settings(double), RealtimeOptions(client_turns=True))
    connection = await double.wait_for_connection()
    events = engine.events()
    await engine.answer(context="# Extraits\n[1] Couveuse à 37,7 °C")
    done = await next_of(events, AnswerDone)
    assert done.status == "completed" and done.usage
    await connection.wait_for(lambda e: e["type"] == "conversation.item.delete", timeout=5)
    response = connection.responses[0]
    context = [item for item in response.input_items if item.get("role") == "system"]
    assert context and "37,7" in context[0]["content"][0]["text"]
    assert response.instructions == Settings(_env_file=None).agent_instructions  # never replaced
    assert all(item.get("role") != "system" for item in connection.conversation)
    await engine.close()


async def test_a_cut_never_goes_past_the_audio_generated(double):
    double.script_next_connection(greeting_seconds=1.0)
    engine = await RealtimeEngine.open(settings(double), RealtimeOptions(client_turns=True))
    connection = await double.wait_for_connection()
    events = engine.events()
    await engine.greet("Bonjour")
    audio = await next_of(events, AnswerAudio)
    await next_of(events, AnswerDone)
    await engine.cut(audio.item, heard_ms=60_000)  # more than was ever said
    truncate = await connection.wait_for(lambda e: e["type"] == "conversation.item.truncate", timeout=5)
    assert truncate["audio_end_ms"] == connection.responses[0].audio_ms
    await engine.cut(audio.item, heard_ms=0)  # nothing heard: the item goes
    await connection.wait_for(lambda e: e["type"] == "conversation.item.delete", timeout=5)
    assert connection.errors_sent == []
    await engine.close()


async def test_cancel_is_sent_only_when_the_service_does_not_interrupt_itself(double):
    for interrupts in (True, False):
        engine = await RealtimeEngine.open(settings(double, vad_interrupt_response=interrupts, barge_in_min_ms=0),
                                           RealtimeOptions(client_turns=True))
        connection = await double.wait_for_connection()
        events = engine.events()
        await engine.greet("Bonjour, ici OCTI, votre conseiller en aviculture.")
        await next_of(events, AnswerStarted)
        await engine.cancel()
        await next_of(events, AnswerDone)
        assert connection.client_event_counts["response.cancel"] == (0 if interrupts else 1)
        await engine.close()


async def test_recycling_carries_the_conversation_into_a_fresh_session(double):
    engine = await RealtimeEngine.open(settings(double), RealtimeOptions(client_turns=True))
    first = await double.wait_for_connection()
    events = engine.events()
    await engine.recycle(Conversation((Exchange("caller", "Ma couveuse est à 38 degrés."),
                                       Exchange("assistant", "C'est un peu trop chaud : visez 37,7."))))
    second = await double.wait_for_connection()
    assert (await first.wait_closed(timeout=5)).initiated_by == "client"
    assert [(item["role"], item["content"][0]["type"], item["content"][0]["text"]) for item in second.conversation] == [
        ("user", "input_text", "Ma couveuse est à 38 degrés."),
        ("assistant", "output_text", "C'est un peu trop chaud : visez 37,7.")]
    # The same event stream carries on, from the new session.
    await engine.answer()
    done = await next_of(events, AnswerDone)
    assert done.status == "completed" and second.responses and not first.responses
    await engine.close()


async def test_a_fatal_service_error_is_marked_fatal(double):
    engine = await RealtimeEngine.open(settings(double), RealtimeOptions(client_turns=True))
    await double.wait_for_connection()
    events = engine.events()
    await double.fail_all(code="session_expired", message="Your session hit the maximum duration of 60 minutes.",
                          error_type="invalid_request_error", close_code=1000)
    error = await next_of(events, EngineError)
    assert error.fatal and error.code == "session_expired"
    await engine.close()


async def test_ending_the_turn_by_hand_reports_its_end_once_and_an_empty_commit_is_harmless(double):
    """Push-to-talk: the caller lets go before turn detection's silence; the turn ends at once,
    on the audio timeline, and ending it again (nothing buffered) surfaces no error."""
    engine = await RealtimeEngine.open(settings(double), RealtimeOptions(client_turns=True))
    connection = await double.wait_for_connection()
    events = engine.events()
    pcm, rate = read_wav("question_incubation.wav")
    audio = to_pcm_24k(pcm, rate)[:3000 * 48]  # let go while still speaking, 3 s in
    for offset in range(0, len(audio), 960):  # 20 ms appends, no silence after the words
        await engine.send_audio(audio[offset:offset + 960])
    started = await next_of(events, SpeechStarted)
    await engine.end_turn()
    stopped = await next_of(events, SpeechStopped)
    assert stopped.turn == started.turn
    assert abs(stopped.at_ms - len(audio) / 48) < 1  # where the audio ended, in ms
    words = await next_of(events, CallerWords)
    assert words.turn == started.turn
    await engine.end_turn()  # nothing left to commit
    await connection.wait_for_server(lambda e: e["type"] == "error", timeout=5)
    assert [e["code"] for e in connection.errors_sent] == ["input_audio_buffer_commit_empty"]
    await engine.answer()
    seen = []
    async with asyncio.timeout(10):
        async for event in events:
            seen.append(event)
            if isinstance(event, AnswerDone):
                break
    assert not any(isinstance(e, (EngineError, SpeechStopped)) for e in seen)
    await engine.close()


async def test_the_answer_text_streams_in_pieces_that_make_the_whole(double):
    engine = await RealtimeEngine.open(settings(double), RealtimeOptions(client_turns=True))
    await double.wait_for_connection()
    events = engine.events()
    await engine.greet("Bonjour, ici OCTI, votre conseiller en aviculture.")
    pieces: list[AnswerTextPiece] = []
    async with asyncio.timeout(10):
        async for event in events:
            if isinstance(event, AnswerTextPiece):
                pieces.append(event)
            if isinstance(event, AnswerText):
                whole = event
                break
    assert len(pieces) > 1 and {p.item for p in pieces} == {whole.item}
    assert "".join(p.text for p in pieces) == whole.text
    await engine.close()


async def test_a_tool_result_for_a_replaced_session_is_dropped_not_sent_to_the_new_one(double):
    """A tool ran while the connection dropped: its result names a call the new session never
    made, and asking for an answer after it would answer the question twice (the session is
    asked it again)."""
    engine = await RealtimeEngine.open(settings(double), RealtimeOptions(client_turns=True, tools=(END_CALL,)))
    first = await double.wait_for_connection()
    events = engine.events()
    await engine.add_caller_text("Merci, au revoir, vous pouvez raccrocher et terminer l'appel.")
    await engine.answer()
    call = await next_of(events, ToolCall)
    assert call.name == END_CALL.name
    await next_of(events, AnswerDone)
    await engine.recycle(Conversation((Exchange("caller", "Merci, au revoir."),)))
    second = await double.wait_for_connection()
    assert (await first.wait_closed(timeout=5)).initiated_by == "client", "the replaced session is closed"
    await engine.tool_result(call.call, '{"ok": true}')
    await engine.add_caller_text("Une dernière question : quelle température pour la couveuse ?")
    await second.wait_for(lambda e: e["type"] == "conversation.item.create"
                          and "couveuse" in str(e["item"].get("content")), timeout=5)
    assert all(item["type"] != "function_call_output" for item in second.conversation)
    assert second.client_event_counts["response.create"] == 0 and second.errors_sent == []
    # In its own session, a result goes through.
    await engine.add_caller_text("Merci, au revoir, vous pouvez raccrocher et terminer l'appel.")
    await engine.answer()
    call = await next_of(events, ToolCall)
    await next_of(events, AnswerDone)
    await engine.tool_result(call.call, '{"ok": true}', then_answer=False)
    await second.wait_for(lambda e: e["type"] == "conversation.item.create"
                          and e["item"]["type"] == "function_call_output", timeout=5)
    await engine.close()


async def test_a_malformed_recap_answer_gives_no_recap_instead_of_an_error(tmp_path):
    """The call is over when the recap is asked for: a `response.done` whose output cannot be
    read must not raise out of the session's ending (its end record would be lost)."""
    async def service(ws) -> None:
        async for message in ws:
            event = json.loads(message)
            if event["type"] == "response.create":
                await ws.send(json.dumps({"type": "response.done", "event_id": "evt_1", "response": {
                    "id": "resp_1", "metadata": {"octi": "summary"}, "output": [None]}}))

    async with serve(service, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        config = Settings(_env_file=None, openai_api_key="sk-test", data_dir=tmp_path,
                          openai_realtime_url=f"ws://127.0.0.1:{port}/v1/realtime")
        engine = await RealtimeEngine.open(config, RealtimeOptions(client_turns=True))
        async with asyncio.timeout(5):
            assert await engine.summarize("Résume l'appel.") is None
        await engine.close()
