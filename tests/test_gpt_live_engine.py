"""The GPT-Live engine on the engine contract, against the GPT-Live double over real sockets; and
the double's strictness, seen from a raw websocket client."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from time import perf_counter

import pydantic
import pytest
from openai.types.live import ServerEvent
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import InvalidStatus

from app.audio.formats import REALTIME_PCM16, TELEPHONE_ULAW
from app.audio.g711 import pcm16_to_ulaw
from app.config import Settings
from app.doctor import check_realtime
from app.engines.contract import (
    AnswerAudio, AnswerDone, AnswerStarted, AnswerTextPiece, CallerWords, Conversation, EngineUnavailable, Exchange,
    SpeechStarted, SpeechStopped, ToolCall, UsageReport, Yielded,
)
from app.engines.gpt_live import greeting
from app.engines.gpt_live.engine import FINAL_USAGE_WAIT_SECONDS, FIXTURE_GRACE_SECONDS, GptLiveEngine
from app.simulators.live_double import LiveDouble
from app.simulators.realtime_schema import unexpected_server_keys
from tests.test_realtime_double import read_wav, to_pcmu_8k

SERVER_EVENT = pydantic.TypeAdapter(ServerEvent)
QUESTION = "Quelle température pour la couveuse ?"
FRAME = 160  # 20 ms of μ-law


def settings(double: LiveDouble, **overrides) -> Settings:
    return Settings(_env_file=None, openai_api_key="sk-test", engine="gpt-live", gpt_live_url=double.url,
                    **overrides)


def caller_audio(name: str, silence_ms: int = 1000) -> bytes:
    pcm, rate = read_wav(name)
    return to_pcmu_8k(pcm, rate) + b"\xff" * 8 * silence_ms


async def stream(engine: GptLiveEngine, audio: bytes, realtime: bool = False) -> None:
    for offset in range(0, len(audio), FRAME):
        await engine.send_audio(audio[offset:offset + FRAME])
        if realtime:
            await asyncio.sleep(0.02)


async def next_of(events, kind, timeout: float = 10.0, seen: list | None = None):
    async with asyncio.timeout(timeout):
        async for event in events:
            if seen is not None:
                seen.append(event)
            if isinstance(event, kind):
                return event
    raise AssertionError(f"the events ended before a {kind.__name__}")


def assert_server_events_valid(connection) -> None:
    """Every event the double sent validates against `openai.types.live`, with no key the
    types do not declare (audio deltas, for one, carry no event_id)."""
    for event in connection.record.sent:
        unexpected = unexpected_server_keys(SERVER_EVENT.validate_python(event))
        assert not unexpected, f"{event['type']} carries undeclared keys {unexpected}"


@pytest.fixture
async def double():
    async with LiveDouble(transcripts=[QUESTION], greeting_seconds=1.0, answer_seconds=1.5,
                          usage_interval=0.3) as live:
        yield live


async def test_the_session_starts_with_telephone_audio_and_client_delegation(double):
    engine = await GptLiveEngine.open(settings(double))
    connection = await double.wait_for_connection()
    start = connection.record.received[0]
    assert start["type"] == "session.start"
    assert start["session"]["model"] == "gpt-live-1.1"
    assert start["session"]["audio"]["format"] == {"type": "audio/pcmu", "rate": 8000}
    assert start["session"]["delegation"] == {"type": "client"}
    assert engine.is_open and engine.input_format == engine.output_format == TELEPHONE_ULAW and engine.traits.turns == "service"
    await engine.close()
    assert connection.record.errors == []
    assert connection.closed_reason == "close_requested"
    assert_server_events_valid(connection)


async def test_the_greeting_is_the_models_own_first_turn(double):
    engine = await GptLiveEngine.open(settings(double))
    connection = await double.wait_for_connection()
    events = engine.events()
    await engine.greet("Bonjour, ici OCTI.")
    seen: list = []
    started = await next_of(events, AnswerStarted, seen=seen)
    done = await next_of(events, AnswerDone, seen=seen)
    assert done.answer == started.answer and done.status == "completed"
    audio = b"".join(event.audio for event in seen if isinstance(event, AnswerAudio))
    assert len(audio) >= 8 * 1000  # the double's 1 s greeting, μ-law at 8 kHz
    assert any(isinstance(event, AnswerTextPiece) and event.text.strip() for event in seen)
    assert connection.record.spoken == ["greeting"]
    assert "OCTI" in connection.record.received[1]["content"]
    await engine.close()
    assert connection.record.errors == []


async def greeted(engine: GptLiveEngine, text: str) -> list:
    """The engine's events from the greeting to the end of the answer it opened."""
    events = engine.events()
    await engine.greet(text)
    seen: list = []
    await next_of(events, AnswerDone, seen=seen)
    await events.aclose()
    return seen


async def test_the_fixture_greeting_is_the_models_own_greeting_of_an_earlier_call(double, tmp_path):
    """GPT_LIVE_GREETING=fixture: the first call has the model say the greeting and keeps it; the
    next one has the service play it, with the model's words of it as its text."""
    configured = settings(double, gpt_live_greeting="fixture", data_dir=tmp_path, agent_greeting="Bonjour, ici OCTI.")
    first = await GptLiveEngine.open(configured)
    said = await greeted(first, "Bonjour, ici OCTI.")
    await first.close()
    kept = greeting.clip_path(configured, "Bonjour, ici OCTI.")
    clip = greeting.load_clip(kept)
    assert clip is not None
    spoken_words = "".join(event.text for event in said if isinstance(event, AnswerTextPiece)).strip()
    assert clip.transcript == spoken_words != ""
    # The double's 1 s greeting, at 24 kHz, without the quiet the answer ended with.
    assert 900 <= REALTIME_PCM16.duration_ms(len(clip.pcm24k)) <= 1100

    second = await GptLiveEngine.open(configured)
    connection = await double.wait_for_connection(2)
    seen = await greeted(second, "Bonjour, ici OCTI.")
    await second.close()
    assert connection.record.spoken == ["fixture"]
    assert [event["type"] for event in connection.record.received[1:3]] == [
        "session.thinking.append", "session.output_audio.fixture.play"]
    assert connection.record.errors == []
    started = next(event for event in seen if isinstance(event, AnswerStarted))
    texts = [event.text for event in seen if isinstance(event, AnswerTextPiece)]
    assert texts == [spoken_words]
    done = seen[-1]
    assert done.answer == started.answer and done.status == "completed"
    heard = b"".join(event.audio for event in seen if isinstance(event, AnswerAudio))
    assert len(heard) >= 8 * 900


async def test_a_greeting_without_its_clip_or_refused_as_a_fixture_is_the_models(double, tmp_path):
    configured = settings(double, gpt_live_greeting="fixture", data_dir=tmp_path, agent_greeting="Bonjour, ici OCTI.")
    kept = greeting.clip_path(configured, "Bonjour, ici OCTI.")
    greeting.save_clip(kept, b"\x00" * 8 * 31_000, "Bonjour, ici OCTI.")  # 31 s: too long for a fixture
    # A call-back's greeting, not the usual one: the model says it, and it is not kept.
    call_back = await GptLiveEngine.open(configured)
    await greeted(call_back, "Bonjour, ici OCTI, je vous rappelle au sujet de votre question : la couveuse.")
    await call_back.close()
    assert double.connections[0].record.spoken == ["greeting"]
    assert list((tmp_path / "greetings").glob("*.wav")) == [kept]
    # The kept one is refused by the service (over 30 s; the double takes the message whole):
    # the model says it instead.
    refused = await GptLiveEngine.open(configured)
    seen = await greeted(refused, "Bonjour, ici OCTI.")
    await refused.close()
    connection = double.connections[1]
    assert [error["code"] for error in connection.record.errors] == ["invalid_value"]
    assert connection.record.spoken == ["greeting"]
    assert "OCTI" in connection.record.received[-2]["content"]  # said by the model, before session.close
    assert any(isinstance(event, AnswerTextPiece) and event.text.strip() for event in seen)
    replaced = greeting.load_clip(kept)  # what the model said instead is the clip now
    assert replaced is not None and REALTIME_PCM16.duration_ms(len(replaced.pcm24k)) <= 1100


async def test_the_models_greeting_is_not_kept_unless_fixtures_are_asked_for(double, tmp_path):
    engine = await GptLiveEngine.open(settings(double, data_dir=tmp_path))
    await greeted(engine, "Bonjour, ici OCTI.")
    await engine.close()
    assert not (tmp_path / "greetings").exists()


async def test_a_question_is_delegated_to_us_and_the_passages_are_said(double):
    engine = await GptLiveEngine.open(settings(double))
    connection = await double.wait_for_connection()
    events = engine.events()
    await stream(engine, caller_audio("question_incubation.wav"))
    seen: list = []
    call = await next_of(events, ToolCall, seen=seen)
    kinds = [type(event) for event in seen]
    assert kinds.index(SpeechStarted) < kinds.index(SpeechStopped) < kinds.index(ToolCall)
    final = [event for event in seen if isinstance(event, CallerWords) and event.final]
    assert final and final[0].text == QUESTION
    assert call.name == "search_knowledge" and json.loads(call.arguments) == {"query": QUESTION}
    assert call.call in connection.delegations
    passages = json.dumps({"passages": [{"title": "Incubation", "source": "fiche-12",
                                         "text": "Réglez la couveuse à 37,7 °C."}]}, ensure_ascii=False)
    await engine.tool_result(call.call, passages)
    await next_of(events, AnswerStarted)
    async with asyncio.timeout(5):
        while connection.delegations[call.call].result is None:
            await asyncio.sleep(0.02)
    delegation = connection.delegations[call.call]
    assert delegation.result == "commentary" and "37,7 °C" in delegation.content
    assert delegation.question == QUESTION
    async with asyncio.timeout(10):
        while "answer" not in connection.record.spoken:
            await asyncio.sleep(0.05)
    await engine.close()
    assert connection.record.errors == []
    assert_server_events_valid(connection)


async def greeted_by_a_one_second_fixture(double, tmp_path):
    """An engine whose greeting is a loud one-second clip the service plays as a fixture."""
    configured = settings(double, gpt_live_greeting="fixture", data_dir=tmp_path, agent_greeting="Bonjour, ici OCTI.")
    loud_second = b"\x10\x90" * 4000  # μ-law 8 kHz
    greeting.save_clip(greeting.clip_path(configured, "Bonjour, ici OCTI."), loud_second, "Bonjour, ici OCTI.")
    engine = await GptLiveEngine.open(configured)
    connection = await double.wait_for_connection()
    events = engine.events()
    await engine.greet("Bonjour, ici OCTI.")
    return engine, connection, events


async def test_a_typed_questions_passages_are_said_and_a_stopped_answer_is_known(double, tmp_path):
    """No client event asks for an answer or stops one: `answer` says a typed question's passages
    (commentary without delegation), `cancel` tells the model silently that it is not heard, but
    not while a fixture plays (it cannot be stopped); a typed question meanwhile waits for its end
    (the service refuses appends then)."""
    engine, connection, events = await greeted_by_a_one_second_fixture(double, tmp_path)
    await next_of(events, AnswerStarted)  # the fixture plays
    await engine.cancel()
    await engine.add_caller_text("Pendant l'accueil")  # waits for the fixture's end
    await next_of(events, AnswerDone)
    await engine.cancel()
    await engine.add_caller_text("Quelle température ?")
    await engine.answer()  # nothing to say without passages
    await engine.answer(context="# Extraits\n[1] Couveuse : 37,7 °C.")
    async with asyncio.timeout(5):
        while connection.record.received[-1]["type"] != "session.commentary.append":
            await asyncio.sleep(0.02)
    await engine.close()
    assert connection.record.errors == []
    appended = [(event["type"].split(".")[1], event["delegation_id"], event["content"])
                for event in connection.record.received if event["type"].endswith(".append")
                and event["type"] != "session.input_audio.append"]
    assert [(kind, delegation) for kind, delegation, _ in appended] == [
        ("thinking", None), ("thinking", None), ("thinking", None), ("thinking", None), ("commentary", None)]
    already_greeted, held, stopped, written, answer = (content for _, _, content in appended)
    assert "Bonjour, ici OCTI." in already_greeted and "« Pendant l'accueil »" in held and "interrompue" in stopped
    fixture_played = next(i for i, event in enumerate(connection.record.sent)
                          if event["type"] == "session.output_audio.fixture.played")
    assert any(event["type"] == "session.thinking.appended" for event in connection.record.sent[fixture_played:])
    assert "« Quelle température ? »" in written and "37,7 °C" in answer and "dernière question" in answer


async def test_what_waits_for_a_fixture_whose_end_never_comes_goes_after_its_length_and_a_grace(
        double, tmp_path, caplog):
    """`fixture.played` is not sent for a cancelled playback (openai.types.live): a typed question
    held for the fixture's end must not wait for good."""
    double.fixture_cancelled_at_ms = 300
    engine, connection, events = await greeted_by_a_one_second_fixture(double, tmp_path)
    await next_of(events, AnswerStarted)  # the fixture plays, then stops 300 ms in
    asked_at = perf_counter()
    await engine.add_caller_text("Pendant l'accueil")

    def held_question_sent() -> bool:
        return any(event["type"] == "session.thinking.append" and "Pendant l'accueil" in event["content"]
                   for event in connection.record.received)

    async def drain() -> None:  # the engine's loop, deadline included, runs as its events are read
        async for _ in events:
            pass

    draining = asyncio.create_task(drain())
    async with asyncio.timeout(1 + FIXTURE_GRACE_SECONDS + 3):
        while not held_question_sent():
            await asyncio.sleep(0.05)
    waited = perf_counter() - asked_at
    await engine.close()
    draining.cancel()
    assert "session.output_audio.fixture.played" not in [event["type"] for event in connection.record.sent]
    assert waited > FIXTURE_GRACE_SECONDS - 0.5, "held while the fixture might still play"
    assert connection.record.errors == [], "sent once the service takes appends again"
    assert "never said it had played" in caplog.text


async def test_the_model_talks_over_the_caller_a_while_then_yields(double):
    double.transcripts = ["Attendez, j'ai une autre question"]
    engine = await GptLiveEngine.open(settings(double))
    connection = await double.wait_for_connection()
    events = engine.events()
    await engine.greet("Bonjour")  # greeting_seconds=1.0 is over before the barge-in
    await next_of(events, AnswerDone)
    # A long notice to say, then the caller cuts in while it plays.
    double.greeting_seconds = 8.0
    await engine.greet("Une longue réponse")
    await next_of(events, AnswerStarted)
    await asyncio.sleep(0.5)
    interruption = asyncio.create_task(stream(engine, caller_audio("interruption.wav"), realtime=True))
    seen: list = []
    yielded = await next_of(events, Yielded, seen=seen, timeout=10)
    done = await next_of(events, AnswerDone, seen=seen)
    assert done.answer == yielded.answer and done.status == "cancelled"
    assert connection.record.yields == 1
    await next_of(events, SpeechStarted, seen=seen)  # the caller's turn, once the model gave way
    await interruption
    await engine.close()
    assert connection.record.errors == []


async def test_usage_reports_add_up_to_the_sessions_seconds(double):
    engine = await GptLiveEngine.open(settings(double))
    events = engine.events()
    reports = []
    async with asyncio.timeout(10):
        while sum(report.usage["seconds"] for report in reports) < 2:
            reports.append(await next_of(events, UsageReport))
    assert all(report.usage["type"] == "live_seconds" for report in reports)
    assert sum(report.usage["active_seconds"] for report in reports) == sum(r.usage["seconds"] for r in reports)
    await engine.close()


async def test_a_new_session_carries_the_conversation_as_initial_items(double):
    engine = await GptLiveEngine.open(settings(double))
    await double.wait_for_connection()
    await engine.recycle(Conversation((Exchange("caller", "Mes poussins ont froid."),
                                       Exchange("assistant", "Montez la lampe", cut=True)), context="Fiche chauffage"))
    fresh = await double.wait_for_connection(2)
    items = fresh.record.received[0]["session"]["input"]
    assert [item["role"] for item in items] == ["user", "assistant", "developer"]
    assert items[1]["content"][0]["text"] == "Montez la lampe …"
    assert double.connections[0].closed_reason == "close_requested"
    assert engine.is_open
    await engine.close()


async def test_a_result_for_a_replaced_sessions_delegation_goes_outside_any_delegation(double):
    """The session that delegated was replaced before the result came: the new session knows
    nothing of that delegation (the service would refuse its id), so the result goes to it as
    commentary outside any delegation, and the model says it."""
    engine = await GptLiveEngine.open(settings(double))
    replaced = await double.wait_for_connection()
    events = engine.events()
    await stream(engine, caller_audio("question_incubation.wav"))
    call = await next_of(events, ToolCall)
    await engine.recycle(Conversation((Exchange("caller", QUESTION),)))
    fresh = await double.wait_for_connection(2)
    passages = json.dumps({"passages": [{"title": "Incubation", "source": "fiche-12",
                                         "text": "Réglez la couveuse à 37,7 °C."}]}, ensure_ascii=False)
    await engine.tool_result(call.call, passages)
    await engine.tool_result(call.call, json.dumps({"ok": True}), then_answer=False)
    async with asyncio.timeout(5):
        while not (fresh.record.spoken or fresh.record.errors):
            await asyncio.sleep(0.02)
    await engine.close()
    assert fresh.record.errors == []
    assert fresh.record.spoken == ["notice"] and replaced.delegations[call.call].result is None
    appended = [(event["type"], event["delegation_id"]) for event in fresh.record.received
                if event["type"] in ("session.commentary.append", "session.thinking.append")]
    assert appended == [("session.commentary.append", None), ("session.thinking.append", None)]


async def test_a_lost_session_is_replaced_without_waiting_for_its_end(double):
    """The service dropped the session: no `session.closed` will come for it, so the new
    session takes over at once (the caller is waiting after « Un instant. »)."""
    engine = await GptLiveEngine.open(settings(double))
    lost = await double.wait_for_connection()
    events = engine.events()
    await lost.drop()
    async with asyncio.timeout(5):
        async for _ in events:
            pass
    started = perf_counter()
    await engine.recycle(Conversation((Exchange("caller", QUESTION),)))
    took = perf_counter() - started
    await engine.close()
    assert took < FINAL_USAGE_WAIT_SECONDS / 2
    assert double.connections[1].closed_reason == "close_requested"


async def test_a_refused_session_is_unavailable(double):
    with pytest.raises(EngineUnavailable, match="invalid_value"):
        await GptLiveEngine.open(settings(double, gpt_live_model="gpt-realtime-2.1"))


# ------------------------------------------------------------------ the double's strictness


async def raw_session(double: LiveDouble):
    return connect(double.url, additional_headers={"Authorization": "Bearer sk-test"})


async def next_event(ws) -> dict:
    event = json.loads(await asyncio.wait_for(ws.recv(), 5))
    SERVER_EVENT.validate_python(event)
    return event


async def test_the_double_refuses_commands_as_the_service_does(double):
    async with await raw_session(double) as ws:
        await ws.send(json.dumps({"type": "session.input_audio.append", "audio": "/w==", "event_id": "a1"}))
        error = await next_event(ws)
        assert error["type"] == "error" and error["error"]["code"] == "session_not_started"
        assert error["error"]["client_event_id"] == "a1" and error["client_event_id"] == "a1"
        await ws.send(json.dumps({"type": "session.start", "event_id": "s1",
                                  "session": {"model": "gpt-live-1", "voice": "marin"}}))
        error = await next_event(ws)
        assert (error["error"]["code"], error["error"]["param"]) == ("unknown_parameter", "session.voice")
        await ws.send(json.dumps({"type": "response.cancel"}))
        error = await next_event(ws)
        assert (error["error"]["code"], error["error"]["param"]) == ("invalid_value", "type")
        await ws.send(json.dumps({"type": "session.start", "event_id": "s2", "session": {
            "model": "gpt-live-1", "audio": {"format": {"type": "audio/pcmu", "rate": 8000}}}}))
        started = await next_event(ws)
        assert started["type"] == "session.started" and started["client_event_id"] == "s2"
        await ws.send(json.dumps({"type": "session.commentary.append", "content": "x", "delegation_id": "nope"}))
        while (event := await next_event(ws))["type"] != "error":
            pass
        assert event["error"]["param"] == "delegation_id"


async def test_the_double_takes_no_query_parameters_and_needs_a_key(double):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(double.url + "?model=gpt-live-1", additional_headers={"Authorization": "Bearer k"}):
            pass
    assert refused.value.response.status_code == 400
    with pytest.raises(InvalidStatus) as refused:
        async with connect(double.url):
            pass
    assert refused.value.response.status_code == 401


async def test_the_double_plays_a_fixture_as_the_service_does(double):
    """As the type says: it interrupts the model's speech, one at a time, caller audio dropped
    meanwhile, `playing` on acceptance and `played` once the mixer sent it all."""
    double.greeting_seconds = 5.0
    async with await raw_session(double) as ws:
        await ws.send(json.dumps({"type": "session.start", "session": {
            "model": "gpt-live-1.1", "audio": {"format": {"type": "audio/pcmu", "rate": 8000}}}}))
        assert (await next_event(ws))["type"] == "session.started"
        connection = await double.wait_for_connection()
        await ws.send(json.dumps({"type": "session.commentary.append", "content": "Dis bonjour.",
                                  "delegation_id": None}))
        async with asyncio.timeout(5):
            while connection.record.spoken != ["greeting"]:
                await asyncio.sleep(0.02)
        tone = b"\x00\x10" * 24000  # 1 s of PCM16 24 kHz
        play = {"type": "session.output_audio.fixture.play", "audio": base64.b64encode(tone).decode()}
        await ws.send(json.dumps({**play, "event_id": "f1"}))
        await ws.send(json.dumps({**play, "event_id": "f2"}))
        loud = caller_audio("question_incubation.wav", silence_ms=0)[:8 * 800]
        await ws.send(json.dumps({"type": "session.input_audio.append", "audio": base64.b64encode(loud).decode()}))
        events = []
        async with asyncio.timeout(5):
            while not events or events[-1]["type"] != "session.output_audio.fixture.played":
                events.append(await next_event(ws))
        kinds = [event["type"] for event in events]
        playing = kinds.index("session.output_audio.fixture.playing")
        assert events[playing]["client_event_id"] == "f1" and events[-1]["client_event_id"] == "f1"
        (refused,) = [event for event in events if event["type"] == "error"]
        assert (refused["error"]["code"], refused["error"]["client_event_id"]) == ("fixture_active", "f2")
        assert "session.input_transcript.delta" not in kinds, "caller audio is dropped during playback"
        fixture_ms = 100 * sum(kind == "session.output_audio.delta" for kind in kinds[playing:])
        assert 1000 <= fixture_ms <= 1100
        # The greeting it interrupted does not come back.
        await asyncio.sleep(0.5)
    assert connection.record.spoken == ["greeting", "fixture"]
    assert connection.record.audio_in_ms == 800


async def test_a_clang_over_the_model_is_talked_over(double):
    """A sound shorter than the double's overlap: the model talks on, nothing is yielded."""
    engine = await GptLiveEngine.open(settings(double))
    connection = await double.wait_for_connection()
    events = engine.events()
    double.greeting_seconds = 3.0
    # The double yields by its output clock, the sound ends by the audio it was sent: with the
    # default 600 ms, a loaded machine sending the silence late made a 150 ms clang look long.
    double.overlap_ms = 1500
    await engine.greet("Bonjour")
    await next_of(events, AnswerStarted)
    await asyncio.sleep(0.6)
    noise = random.Random(7)
    clang = pcm16_to_ulaw(b"".join(noise.randrange(-12000, 12000).to_bytes(2, "little", signed=True)
                                   for _ in range(8 * 150)))
    await stream(engine, clang + b"\xff" * 8 * 1500, realtime=True)
    seen: list = []
    done = await next_of(events, AnswerDone, seen=seen)
    assert done.status == "completed" and not any(isinstance(event, Yielded) for event in seen)
    assert connection.record.yields == 0
    await engine.close()


async def test_the_doctor_starts_a_live_session_as_a_call_does(double):
    [fine] = await check_realtime(settings(double))
    assert fine.status == "ok" and "gpt-live-1.1" in fine.message
    [refused] = await check_realtime(settings(double, gpt_live_model="gpt-live-9"))
    assert refused.status == "problem" and "invalid_value" in refused.message


async def test_an_opening_cancelled_before_session_started_closes_its_socket(tmp_path):
    """A pre-warm let go (its call's stream landed on another instance) while the service has
    not started the session yet: the socket goes with it instead of holding a live session."""
    received: list[str] = []
    closed = asyncio.Event()

    async def silent_service(ws) -> None:  # takes session.start, never answers it
        async for message in ws:
            received.append(json.loads(message)["type"])
        closed.set()

    async with serve(silent_service, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        live = Settings(_env_file=None, openai_api_key="sk-test", engine="gpt-live", data_dir=tmp_path,
                        gpt_live_url=f"ws://127.0.0.1:{port}/v1/live", realtime_connect_timeout_seconds=30)
        opening = asyncio.create_task(GptLiveEngine.open(live))
        while not received:
            await asyncio.sleep(0.02)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        await asyncio.wait_for(closed.wait(), 3)
    assert received == ["session.start"]
