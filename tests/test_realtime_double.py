"""The realtime double, exercised over a real websocket like the phone line would use it."""

from __future__ import annotations

import asyncio
import time
import base64
import json
import subprocess
import sys
import warnings
import wave
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import numpy as np
import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.simulators.realtime_double import ASSET_TEXT, RealtimeDouble, TruncationRecord, cli
from app.simulators.realtime_schema import unexpected_server_keys

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT / "tests" / "audio"
AUTH = {"Authorization": "Bearer test-key"}
QUESTION = "Quelle température pour la couveuse ?"

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)


# ---------------------------------------------------------------------------------------------
# Helpers


def check_server_event(event: dict[str, Any]) -> None:
    """The event must validate against the SDK's RealtimeServerEvent, with no stray keys."""
    model = SERVER_EVENT.validate_python(event)
    assert model.type == event["type"]
    assert isinstance(event["event_id"], str) and event["event_id"].startswith("event_")
    unexpected = unexpected_server_keys(model)
    assert not unexpected, f"{event['type']} carries undeclared keys {unexpected}"


class Client:
    """A websocket client that validates and keeps every server event it receives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        event = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        check_server_event(event)
        self.events.append(event)
        return event

    async def until(self, predicate: Callable[[dict[str, Any]], bool] | str, timeout: float = 10.0) -> dict[str, Any]:
        match = (lambda ev: ev["type"] == predicate) if isinstance(predicate, str) else predicate
        async with asyncio.timeout(timeout):
            while True:
                event = await self.recv(timeout)
                if match(event):
                    return event

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == event_type]

    async def sync(self) -> None:
        """Round trip through the double: everything it sent before is now in self.events."""
        await self.send({"type": "input_audio_buffer.clear", "event_id": "sync"})
        await self.until("input_audio_buffer.cleared")


@asynccontextmanager
async def open_session(double: RealtimeDouble, headers: dict[str, str] | None = None) -> AsyncIterator[Client]:
    async with connect(f"{double.url}?model=gpt-realtime", additional_headers=headers or AUTH) as ws:
        client = Client(ws)
        first = await client.recv()
        assert first["type"] == "session.created"
        yield client


async def update_session(client: Client, **session: Any) -> dict[str, Any]:
    await client.send({"type": "session.update", "session": {"type": "realtime", **session}})
    event = await client.until(lambda ev: ev["type"] in ("session.updated", "error"))
    assert event["type"] == "session.updated", event
    return event["session"]


def read_wav(name: str) -> tuple[bytes, int]:
    with wave.open(str(AUDIO / name), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        return wav.readframes(wav.getnframes()), wav.getframerate()


def to_pcmu_8k(pcm: bytes, rate: int) -> bytes:
    narrow, _ = audioop.ratecv(pcm, 2, 1, rate, 8000, None)
    return audioop.lin2ulaw(narrow, 2)


def to_pcm_24k(pcm: bytes, rate: int) -> bytes:
    wide, _ = audioop.ratecv(pcm, 2, 1, rate, 24000, None)
    return wide


BYTES_PER_MS = {"pcmu": 8, "pcm": 48}
SILENCE_BYTE = {"pcmu": b"\xff", "pcm": b"\x00\x00"}
FORMAT = {"pcmu": {"type": "audio/pcmu"}, "pcm": {"type": "audio/pcm", "rate": 24000}}


def speech(name: str, kind: str, trailing_silence_ms: int = 1000) -> bytes:
    pcm, rate = read_wav(name)
    audio = to_pcmu_8k(pcm, rate) if kind == "pcmu" else to_pcm_24k(pcm, rate)
    return audio + SILENCE_BYTE[kind] * (BYTES_PER_MS[kind] * trailing_silence_ms)


async def append_audio(client: Client, audio: bytes, kind: str, chunk_ms: int = 20) -> None:
    size = BYTES_PER_MS[kind] * chunk_ms
    for offset in range(0, len(audio), size):
        chunk = base64.b64encode(audio[offset : offset + size]).decode("ascii")
        await client.send({"type": "input_audio_buffer.append", "audio": chunk})


def delta_bytes(events: list[dict[str, Any]]) -> list[int]:
    return [len(base64.b64decode(ev["delta"])) for ev in events if ev["type"] == "response.output_audio.delta"]


@pytest.fixture
async def double() -> AsyncIterator[RealtimeDouble]:
    async with RealtimeDouble(speed=0, transcripts=[QUESTION]) as running:
        yield running


# ---------------------------------------------------------------------------------------------
# Connection


async def test_session_created_is_first_and_complete(double: RealtimeDouble) -> None:
    async with open_session(double) as client:
        session = client.events[0]["session"]
        assert session["object"] == "realtime.session"
        assert session["id"].startswith("sess_")
        assert session["type"] == "realtime"
        assert session["model"] == "gpt-realtime"
        assert session["expires_at"] > 0
        assert session["output_modalities"] == ["audio"]
        audio_in, audio_out = session["audio"]["input"], session["audio"]["output"]
        assert audio_in["format"] == {"type": "audio/pcm", "rate": 24000}
        assert audio_out["format"] == {"type": "audio/pcm", "rate": 24000}
        assert audio_out["voice"] == "alloy"
        detection = audio_in["turn_detection"]
        assert detection["type"] == "server_vad"
        assert detection["threshold"] == 0.5
        assert (detection["prefix_padding_ms"], detection["silence_duration_ms"]) == (300, 500)
        assert detection["create_response"] is True and detection["interrupt_response"] is True
    connection = await double.wait_for_connection()
    assert connection.query == {"model": "gpt-realtime"}
    assert connection.session["id"] == session["id"]


async def test_missing_authorization_is_refused_with_401(double: RealtimeDouble) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(double.url, additional_headers={}):
            pass
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"]["type"] == "invalid_request_error"
    assert double.connections == []
    assert double.rejected_handshakes[0].status == 401


async def test_configured_api_key_must_match() -> None:
    async with RealtimeDouble(api_key="sk-right-key-1234") as double:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(double.url, additional_headers={"Authorization": "Bearer sk-wrong-key-9999"}):
                pass
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body)["error"]["code"] == "invalid_api_key"
        async with open_session(double, {"Authorization": "Bearer sk-right-key-1234"}):
            pass


async def test_beta_header_gets_beta_api_shape_disabled_then_close_4000(double: RealtimeDouble) -> None:
    headers = {**AUTH, "OpenAI-Beta": "realtime=v1"}
    async with connect(double.url, additional_headers=headers) as ws:
        event = json.loads(await ws.recv())
        check_server_event(event)
        assert event["type"] == "error"
        assert event["error"]["code"] == "beta_api_shape_disabled"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    connection = await double.wait_for_connection()
    info = await connection.wait_closed()
    assert info.code == 4000
    assert [ev["type"] for ev in connection.server_events] == ["error"]


async def test_refuse_connections_answers_503(double: RealtimeDouble) -> None:
    double.refuse_connections = True
    with pytest.raises(InvalidStatus) as refused:
        async with connect(double.url, additional_headers=AUTH):
            pass
    assert refused.value.response.status_code == 503
    double.refuse_connections = False
    async with open_session(double):
        pass


async def test_refuse_next_refuses_that_many_handshakes_then_accepts_again(double: RealtimeDouble) -> None:
    double.refuse_next(2)
    for _ in range(2):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(double.url, additional_headers=AUTH):
                pass
        assert refused.value.response.status_code == 503
    async with open_session(double):
        pass
    assert len(double.rejected_handshakes) == 2 and len(double.connections) == 1


async def test_drop_all_closes_every_client_with_1011(double: RealtimeDouble) -> None:
    async with open_session(double) as first, open_session(double) as second:
        assert await double.drop_all() == 2
        for client in (first, second):
            with pytest.raises(ConnectionClosed) as closed:
                await client.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    for connection in double.connections:
        info = await connection.wait_closed()
        assert (info.code, info.initiated_by) == (1011, "server")
    assert double.live_connections == []


async def test_send_error_and_close_reports_an_upstream_failure(double: RealtimeDouble) -> None:
    async with open_session(double) as client:
        connection = await double.wait_for_connection()
        await connection.send_error_and_close("server_error", "Upstream exploded.")
        event = await client.recv()
        assert event["type"] == "error"
        assert event["error"] == {
            "type": "server_error",
            "code": "server_error",
            "message": "Upstream exploded.",
            "param": None,
            "event_id": None,
        }
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


async def test_session_expiry_sends_session_expired_then_closes() -> None:
    async with RealtimeDouble(session_max_seconds=0.2) as double:
        async with open_session(double) as client:
            assert double.connections[0].session["expires_at"] - time.time() < 1  # announced
            error = (await client.until("error"))["error"]
            assert error["code"] == "session_expired"
            assert error["message"].startswith("Your session hit the maximum duration of")
            with pytest.raises(ConnectionClosed):
                await client.recv()
        info = await double.connections[0].wait_closed()
        assert (info.reason, info.initiated_by) == ("session_expired", "server")


async def test_no_task_outlives_its_connection_or_the_server() -> None:
    before = asyncio.all_tasks()
    async with RealtimeDouble(speed=1, greeting_seconds=30) as double:
        async with open_session(double) as client:
            await client.send({"type": "response.create"})
            await client.until("response.output_audio.delta")
            connection = await double.wait_for_connection()
            assert connection.active_response is not None
        info = await connection.wait_closed()
        assert info.initiated_by == "client"
        streams = [t for t in asyncio.all_tasks() if t.get_name().startswith("realtime-double-") and not t.done()]
        assert streams == []
        assert connection.responses[0].status == "cancelled"
        assert connection.responses[0].status_reason == "connection_closed"
    leaked = {task for task in asyncio.all_tasks() - before if not task.done()}
    assert leaked == set()


# ---------------------------------------------------------------------------------------------
# Validation


async def test_unknown_parameter_is_rejected_with_its_path_and_session_stays_usable(double: RealtimeDouble) -> None:
    async with open_session(double) as client:
        await client.send(
            {
                "type": "session.update",
                "event_id": "evt_bad",
                "session": {"type": "realtime", "audio": {"input": {"foo": True}}},
            }
        )
        error = (await client.until("error"))["error"]
        assert error == {
            "type": "invalid_request_error",
            "code": "unknown_parameter",
            "message": "Unknown parameter: 'session.audio.input.foo'.",
            "param": "session.audio.input.foo",
            "event_id": "evt_bad",
        }
        # A beta-shaped field is just as unknown to the GA schema.
        beta_shaped = {"type": "realtime", "input_audio_format": "g711_ulaw"}
        await client.send({"type": "session.update", "session": beta_shaped})
        error = (await client.until("error"))["error"]
        assert (error["code"], error["param"]) == ("unknown_parameter", "session.input_audio_format")

        session = await update_session(client, instructions="Réponds en français.")
        assert session["instructions"] == "Réponds en français."
    connection = double.connections[0]
    assert [e["code"] for e in connection.errors_sent] == ["unknown_parameter", "unknown_parameter"]
    assert [e["type"] for e in connection.client_events] == ["session.update"]  # only the valid one


async def test_missing_session_type_bad_json_and_unknown_event(double: RealtimeDouble) -> None:
    async with open_session(double) as client:
        await client.send({"type": "session.update", "event_id": "e1", "session": {"instructions": "x"}})
        error = (await client.until("error"))["error"]
        assert (error["code"], error["param"]) == ("missing_required_parameter", "session.type")
        assert error["event_id"] == "e1"

        await client.ws.send('{"type": "response.create",')
        error = (await client.until("error"))["error"]
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "invalid_json"

        await client.send({"type": "response.audio.delta"})
        error = (await client.until("error"))["error"]
        assert (error["code"], error["param"]) == ("invalid_value", "type")
        assert "'response.create'" in error["message"]

        await client.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user"}})
        error = (await client.until("error"))["error"]
        assert (error["code"], error["param"]) == ("missing_required_parameter", "item.content")

        await client.send(
            {"type": "conversation.item.truncate", "item_id": "x", "content_index": 0, "audio_end_ms": "10"}
        )
        error = (await client.until("error"))["error"]
        assert (error["code"], error["param"]) == ("invalid_type", "audio_end_ms")

        await update_session(client, instructions="still usable")


# ---------------------------------------------------------------------------------------------
# Session


async def test_session_update_merges_and_returns_the_full_session(double: RealtimeDouble) -> None:
    async with open_session(double) as client:
        first = await update_session(client, instructions="Tu es OCTI.")
        assert first["audio"]["output"]["voice"] == "alloy"

        second = await update_session(
            client,
            audio={
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "transcription": {"model": "gpt-transcribe", "language": "fr"},
                    "noise_reduction": {"type": "far_field"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 800},
                },
                "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
            },
        )
        assert second["instructions"] == "Tu es OCTI."  # kept from the first update
        assert second["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        assert second["audio"]["input"]["transcription"] == {"model": "gpt-transcribe", "language": "fr"}
        assert second["audio"]["input"]["noise_reduction"] == {"type": "far_field"}
        detection = second["audio"]["input"]["turn_detection"]
        assert detection["silence_duration_ms"] == 800
        assert detection["threshold"] == 0.5 and detection["create_response"] is True
        assert second["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.0}

        third = await update_session(client, audio={"input": {"turn_detection": None}}, output_modalities=["text"])
        assert third["audio"]["input"]["turn_detection"] is None
        assert third["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        assert third["output_modalities"] == ["text"]

        both = {"type": "realtime", "output_modalities": ["text", "audio"]}
        await client.send({"type": "session.update", "session": both})
        error = (await client.until("error"))["error"]
        assert (error["code"], error["param"]) == ("invalid_value", "session.output_modalities")
    assert double.connections[0].session == third


async def test_voice_is_locked_once_audio_was_produced(double: RealtimeDouble) -> None:
    async with open_session(double) as client:
        await update_session(client, audio={"output": {"voice": "cedar"}})  # allowed: nothing spoken yet
        await client.send({"type": "response.create"})
        await client.until("response.done")
        new_voice = {"type": "realtime", "audio": {"output": {"voice": "marin"}}}
        await client.send({"type": "session.update", "session": new_voice})
        error = (await client.until("error"))["error"]
        assert error["code"] == "cannot_update_voice"
        assert error["message"] == "Cannot update a conversation's voice if assistant audio is present."
        same = await update_session(client, audio={"output": {"voice": "cedar"}})
        assert same["audio"]["output"]["voice"] == "cedar"


# ---------------------------------------------------------------------------------------------
# Turn detection


@pytest.mark.parametrize("kind", ["pcmu", "pcm"])
async def test_real_speech_makes_a_full_turn(double: RealtimeDouble, kind: str) -> None:
    async with open_session(double) as client:
        await update_session(
            client,
            audio={
                "input": {
                    "format": FORMAT[kind],
                    "transcription": {"model": "gpt-transcribe", "language": "fr"},
                },
                "output": {"format": FORMAT[kind]},
            },
        )
        audio = speech("question_incubation.wav", kind)
        await append_audio(client, audio, kind)
        done = await client.until("response.done")
        await client.until("conversation.item.input_audio_transcription.completed")

    types = [ev["type"] for ev in client.events]
    turn = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]
    positions = [types.index(name) for name in turn]
    assert positions == sorted(positions)
    # A model that does not stream transcribes the committed turn, while the answer is under way.
    committed_at = types.index("input_audio_buffer.committed")
    assert types.index("conversation.item.input_audio_transcription.delta") > committed_at
    assert types.count("input_audio_buffer.speech_started") == 1

    started = client.of_type("input_audio_buffer.speech_started")[0]
    stopped = client.of_type("input_audio_buffer.speech_stopped")[0]
    committed = client.of_type("input_audio_buffer.committed")[0]
    completed = client.of_type("conversation.item.input_audio_transcription.completed")[0]
    user_item = client.of_type("conversation.item.added")[0]["item"]
    item_id = started["item_id"]
    assert stopped["item_id"] == committed["item_id"] == user_item["id"] == completed["item_id"] == item_id
    assert committed["previous_item_id"] is None
    assert user_item["role"] == "user" and user_item["content"] == [{"type": "input_audio", "transcript": None}]

    # The 5.1 s recording opens with 200 ms of silence and stops talking about 0.7 s before its end;
    # speech_stopped comes 500 ms (silence_duration_ms) into that pause.
    assert started["audio_start_ms"] == 0  # onset minus 300 ms of prefix padding, floored at 0
    assert 4118 < stopped["audio_end_ms"] <= 5218
    assert completed["transcript"] == QUESTION
    assert "".join(d["delta"] for d in client.of_type("conversation.item.input_audio_transcription.delta")) == QUESTION
    duration = (stopped["audio_end_ms"] - started["audio_start_ms"]) / 1000
    assert completed["usage"] == {"type": "duration", "seconds": pytest.approx(duration, abs=0.01)}

    assert done["response"]["status"] == "completed"
    per_ms = BYTES_PER_MS[kind]
    assert sum(delta_bytes(client.events)) == 2500 * per_ms  # the first answer is the greeting

    connection = double.connections[0]
    assert connection.audio_ms_appended == len(audio) // per_ms
    appends = [ev for ev in connection.client_events if ev["type"] == "input_audio_buffer.append"]
    assert sum(ev["audio_ms"] for ev in appends) == pytest.approx(len(audio) / per_ms)
    assert "audio" not in appends[0]
    record = connection.responses[0]
    assert (record.trigger, record.status, record.audio_ms) == ("turn_detection", "completed", 2500)
    assert [item["id"] for item in record.conversation_items] == [item_id]


def _low_noise_pcm(seconds: float) -> bytes:
    rng = np.random.default_rng(7)
    noise = rng.normal(0, 40, int(24000 * seconds)).clip(-32768, 32767).astype("<i2")
    return noise.tobytes()


@pytest.mark.parametrize(
    ("kind", "audio"),
    [
        ("pcm", b"\x00\x00" * 24000 * 3),
        ("pcmu", b"\xff" * 8000 * 3),
        ("pcm", _low_noise_pcm(3)),
        ("pcmu", audioop.lin2ulaw(audioop.ratecv(_low_noise_pcm(3), 2, 1, 24000, 8000, None)[0], 2)),
    ],
    ids=["pcm-digital-silence", "pcmu-idle", "pcm-low-noise", "pcmu-low-noise"],
)
async def test_silence_and_low_noise_do_not_trigger_speech(double: RealtimeDouble, kind: str, audio: bytes) -> None:
    async with open_session(double) as client:
        await update_session(client, audio={"input": {"format": FORMAT[kind]}})
        await append_audio(client, audio, kind)
        await client.sync()
    assert not client.of_type("input_audio_buffer.speech_started")
    connection = double.connections[0]
    assert connection.server_event_counts["input_audio_buffer.speech_started"] == 0
    assert connection.audio_ms_appended == 3000


async def test_manual_commit_and_clear_without_turn_detection(double: RealtimeDouble) -> None:
    async with open_session(double) as client:
        await update_session(
            client, audio={"input": {"turn_detection": None, "transcription": {"model": "whisper-1"}}}
        )
        await client.send({"type": "input_audio_buffer.commit", "event_id": "c1"})
        error = (await client.until("error"))["error"]
        assert (error["code"], error["event_id"]) == ("input_audio_buffer_commit_empty", "c1")

        await append_audio(client, speech("question_followup.wav", "pcm"), "pcm")
        await client.send({"type": "input_audio_buffer.commit"})
        completed = await client.until("conversation.item.input_audio_transcription.completed")
        assert completed["transcript"] == QUESTION
        await client.sync()
        assert client.of_type("input_audio_buffer.committed")
        assert not client.of_type("input_audio_buffer.speech_started")  # no VAD
        assert not client.of_type("response.created")  # a commit never starts a response

        await append_audio(client, b"\x00\x00" * 2400, "pcm")  # 50 ms, then cleared
        await client.send({"type": "input_audio_buffer.clear"})
        await client.until("input_audio_buffer.cleared")
        await client.send({"type": "input_audio_buffer.commit"})
        assert (await client.until("error"))["error"]["code"] == "input_audio_buffer_commit_empty"


async def test_transcripts_can_be_scripted_per_connection(double: RealtimeDouble) -> None:
    double.script_next_connection(["Bonjour, j'ai une question.", "Merci."])

    async def two_utterances() -> list[str]:
        async with open_session(double) as client:
            manual = {"input": {"turn_detection": None, "transcription": {"model": "whisper-1"}}}
            await update_session(client, audio=manual)
            transcripts = []
            for _ in range(2):
                await append_audio(client, b"\x00\x00" * 24 * 200, "pcm")
                await client.send({"type": "input_audio_buffer.commit"})
                event = await client.until("conversation.item.input_audio_transcription.completed")
                transcripts.append(event["transcript"])
            return transcripts

    assert await two_utterances() == ["Bonjour, j'ai une question.", "Merci."]
    assert await two_utterances() == [QUESTION, "[question de l'appelant n°2]"]  # double-wide script, then exhausted


# ---------------------------------------------------------------------------------------------
# Responses


async def test_response_event_sequence_is_complete_and_valid(double: RealtimeDouble) -> None:
    async with open_session(double) as client:
        await client.send({"type": "response.create", "response": {"metadata": {"turn": "greeting"}}})
        done = await client.until("response.done")
        limits = await client.recv()
        assert limits["type"] == "rate_limits.updated"

        deltas_removed = [
            ev["type"]
            for ev in client.events[1:]
            if ev["type"] not in ("response.output_audio.delta", "response.output_audio_transcript.delta")
        ]
        assert deltas_removed == [
            "response.created",
            "response.output_item.added",
            "conversation.item.added",
            "response.content_part.added",
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
            "rate_limits.updated",
        ]
        created = client.of_type("response.created")[0]["response"]
        assert created["status"] == "in_progress" and created["output"] == []
        response_id, item_id = created["id"], client.of_type("response.output_item.added")[0]["item"]["id"]
        for ev in client.events[2:-2]:
            if "response_id" in ev:
                assert ev["response_id"] == response_id
            if "item_id" in ev:
                assert ev["item_id"] == item_id
        assert len({ev["event_id"] for ev in client.events}) == len(client.events)

        sizes = delta_bytes(client.events)
        assert sum(sizes) == 2500 * 48
        assert len(set(sizes)) > 3, "delta sizes should vary like the service's"
        assert all(size % 48 == 0 and 20 * 48 <= size <= 250 * 48 for size in sizes[:-1])

        transcript = client.of_type("response.output_audio_transcript.done")[0]["transcript"]
        assert "".join(ev["delta"] for ev in client.of_type("response.output_audio_transcript.delta")) == transcript
        assert ASSET_TEXT.startswith(transcript) and len(transcript) > 20

        response = done["response"]
        assert response["status"] == "completed" and response["status_details"] is None
        assert response["metadata"] == {"turn": "greeting"}
        assert response["conversation_id"].startswith("conv_")
        assert response["output"][0]["content"] == [{"type": "output_audio", "transcript": transcript}]
        assert response["output"][0]["status"] == "completed"
        usage = response["usage"]
        assert usage["output_token_details"]["audio_tokens"] == 2500 // 50
        assert usage["output_tokens"] == sum(usage["output_token_details"].values())
        details = usage["input_token_details"]
        assert usage["input_tokens"] == details["text_tokens"] + details["audio_tokens"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]

        # The next answer is answer_seconds long and carries on where the greeting stopped.
        await client.send({"type": "response.create"})
        second = await client.until("response.done")
        assert second["response"]["status"] == "completed"
        second_transcript = second["response"]["output"][0]["content"][0]["transcript"]
        assert ASSET_TEXT.startswith(f"{transcript} {second_transcript}")
    connection = double.connections[0]
    assert [r.kind for r in connection.responses] == ["greeting", "answer"]
    assert [r.audio_ms for r in connection.responses] == [2500, 4000]
    assert [item["id"] for item in connection.responses[1].conversation_items] == [item_id]


async def test_response_instructions_replace_the_session_instructions_for_one_response(double: RealtimeDouble) -> None:
    async with open_session(double) as client:
        await update_session(client, instructions="Base prompt.")
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "system",
                    "content": [{"type": "input_text", "text": "Contexte: couveuse."}],
                },
            }
        )
        await client.until("conversation.item.done")
        await client.send({"type": "response.create", "response": {"instructions": "Salue l'appelant."}})
        await client.until("response.done")
        await client.send({"type": "response.create"})
        await client.until("response.done")
    first, second = double.connections[0].responses
    assert first.instructions == "Salue l'appelant."
    assert second.instructions == "Base prompt."
    assert first.input_items[0]["content"][0]["text"] == "Contexte: couveuse."


async def test_text_modality_and_max_output_tokens(double: RealtimeDouble) -> None:
    async with open_session(double) as client:
        params = {"output_modalities": ["text"], "max_output_tokens": 10}
        await client.send({"type": "response.create", "response": params})
        done = await client.until("response.done")
    assert not client.of_type("response.output_audio.delta")
    text = client.of_type("response.output_text.done")[0]["text"]
    assert "".join(ev["delta"] for ev in client.of_type("response.output_text.delta")) == text
    response = done["response"]
    assert response["status"] == "incomplete"
    assert response["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    assert response["output"][0]["content"] == [{"type": "output_text", "text": text}]


async def test_one_active_response_per_conversation_but_out_of_band_runs_alongside() -> None:
    async with RealtimeDouble(speed=1, greeting_seconds=30, answer_seconds=0.2) as double:
        async with open_session(double) as client:
            await client.send({"type": "response.create"})
            first = (await client.until("response.created"))["response"]["id"]

            await client.send({"type": "response.create", "event_id": "again"})
            error = (await client.until("error"))["error"]
            assert error["code"] == "conversation_already_has_active_response"
            assert error["message"] == (
                f"Conversation already has an active response in progress: {first}. "
                "Wait until the response is finished before creating a new one."
            )
            assert error["event_id"] == "again"

            side_job = {"conversation": "none", "metadata": {"job": "side"}}
            await client.send({"type": "response.create", "response": side_job})
            side = await client.until(
                lambda ev: ev["type"] == "response.done" and ev["response"]["metadata"] == {"job": "side"}
            )
            assert side["response"]["status"] == "completed"
            assert side["response"]["conversation_id"] is None
            connection = double.connections[0]
            assert connection.active_response is not None and connection.active_response.id == first

            await client.send({"type": "response.cancel"})
            cancelled = await client.until("response.done")
            assert cancelled["response"]["id"] == first
            assert cancelled["response"]["status"] == "cancelled"
            assert cancelled["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}

            await client.send({"type": "response.cancel", "event_id": "late"})
            error = (await client.until("error"))["error"]
            assert error["code"] == "response_cancel_not_active"
            assert error["message"] == "Cancellation failed: no active response found"
            await client.sync()

            done_at = client.events.index(cancelled)
            assert not [ev for ev in client.events[done_at:] if ev.get("response_id") == first]
            assert not client.of_type("response.output_audio.done")[1:]  # only the side job finished normally
        record = connection.responses[0]
        assert (record.status, record.status_reason) == ("cancelled", "client_cancelled")
        assert 0 < record.audio_ms < 30000


async def test_barge_in_cancels_the_response_with_turn_detected() -> None:
    async with RealtimeDouble(speed=1, greeting_seconds=30, answer_seconds=30, transcripts=["Attendez !"]) as double:
        async with open_session(double) as client:
            phone = {"input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}}
            await update_session(client, audio=phone)
            await client.send({"type": "response.create"})
            first_delta = await client.until("response.output_audio.delta")
            speaking_id = first_delta["response_id"]

            await append_audio(client, speech("interruption.wav", "pcmu"), "pcmu")
            cancelled = await client.until("response.done")
            assert cancelled["response"]["id"] == speaking_id
            assert cancelled["response"]["status"] == "cancelled"
            assert cancelled["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
            assert cancelled["response"]["output"][0]["status"] == "incomplete"
            types = [ev["type"] for ev in client.events]
            assert types.index("input_audio_buffer.speech_started") < types.index("response.done")

            follow_up = await client.until("response.created")  # VAD starts the answer to the interruption
            assert follow_up["response"]["id"] != speaking_id

            connection = double.connections[0]
            record = connection.responses[0]
            assert (record.status, record.status_reason) == ("cancelled", "turn_detected")
            heard = record.audio_ms // 2
            await client.send(
                {
                    "type": "conversation.item.truncate",
                    "item_id": record.item_id,
                    "content_index": 0,
                    "audio_end_ms": heard,
                }
            )
            truncated = await client.until("conversation.item.truncated")
            assert truncated["audio_end_ms"] == heard
        assert connection.responses[1].trigger == "turn_detection"
        assert [item["role"] for item in connection.responses[1].conversation_items] == ["assistant", "user"]


async def test_truncate_validates_like_the_service(double: RealtimeDouble) -> None:
    async with open_session(double) as client:
        await client.send({"type": "response.create"})
        done = await client.until("response.done")
        item_id = done["response"]["output"][0]["id"]
        full_transcript = done["response"]["output"][0]["content"][0]["transcript"]

        async def truncate(audio_end_ms: int, target: str = item_id) -> dict[str, Any]:
            await client.send(
                {
                    "type": "conversation.item.truncate",
                    "item_id": target,
                    "content_index": 0,
                    "audio_end_ms": audio_end_ms,
                }
            )
            return await client.until(lambda ev: ev["type"] in ("error", "conversation.item.truncated"))

        negative = (await truncate(-1))["error"]
        assert (negative["code"], negative["param"]) == ("integer_below_min_value", "audio_end_ms")

        too_long = (await truncate(2501))["error"]
        assert too_long["code"] is None
        assert too_long["message"] == "Audio content of 2500ms is already shorter than 2501ms"

        ok = await truncate(1200)
        assert (ok["type"], ok["item_id"], ok["content_index"], ok["audio_end_ms"]) == (
            "conversation.item.truncated",
            item_id,
            0,
            1200,
        )
        again = (await truncate(1300))["error"]
        assert again["message"] == "Audio content of 1200ms is already shorter than 1300ms"

        await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
        retrieved = (await client.until("conversation.item.retrieved"))["item"]
        cut_transcript = retrieved["content"][0]["transcript"]
        assert full_transcript.startswith(cut_transcript) and 0 < len(cut_transcript) < len(full_transcript)
        assert len(base64.b64decode(retrieved["content"][0]["audio"])) == 1200 * 48

        yes = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Oui"}]}
        await client.send({"type": "conversation.item.create", "item": yes})
        user_id = (await client.until("conversation.item.done"))["item"]["id"]
        not_audio = (await truncate(0, user_id))["error"]
        assert (not_audio["code"], not_audio["message"]) == (
            "unsupported_content_type",
            "Only model output audio messages can be truncated",
        )
        unknown = (await truncate(0, "item_nope"))["error"]
        assert unknown["code"] == "item_truncate_invalid_item_id"

    connection = double.connections[0]
    seen = await connection.wait_for(lambda ev: ev["type"] == "conversation.item.truncate", timeout=5)
    assert seen["audio_end_ms"] == 2501  # the negative one failed validation, so it is not a client event
    assert connection.truncations == [TruncationRecord(item_id, 0, 1200, 2500, done["response"]["id"])]


async def test_conversation_items_create_delete_retrieve(double: RealtimeDouble) -> None:
    async with open_session(double) as client:

        async def create(item: dict[str, Any], **extra: Any) -> dict[str, Any]:
            await client.send({"type": "conversation.item.create", "item": item, **extra})
            added = await client.until(lambda ev: ev["type"] in ("conversation.item.added", "error"))
            if added["type"] == "conversation.item.added":
                done = await client.until("conversation.item.done")
                assert done["item"] == added["item"]
            return added

        def text(role: str, kind: str, words: str) -> dict[str, Any]:
            return {"type": "message", "role": role, "content": [{"type": kind, "text": words}]}

        first = await create(text("user", "input_text", "Ma couveuse est à 36 degrés."))
        assert first["previous_item_id"] is None
        second = await create(text("assistant", "output_text", "C'est un peu bas."))
        assert second["previous_item_id"] == first["item"]["id"]
        system = await create(text("system", "input_text", "Contexte: incubation."), previous_item_id="root")
        assert system["previous_item_id"] is None
        call = await create(
            {"type": "function_call", "call_id": "call_1", "name": "search_knowledge", "arguments": "{}"}
        )
        output = await create({"type": "function_call_output", "call_id": "call_1", "output": "37,7 °C"})
        assert output["previous_item_id"] == call["item"]["id"]
        missing = await create(text("user", "input_text", "?"), previous_item_id="item_missing")
        assert (missing["error"]["code"], missing["error"]["param"]) == ("invalid_value", "previous_item_id")

        connection = double.connections[0]
        assert [item["id"] for item in connection.conversation] == [
            system["item"]["id"],
            first["item"]["id"],
            second["item"]["id"],
            call["item"]["id"],
            output["item"]["id"],
        ]

        await client.send({"type": "conversation.item.retrieve", "item_id": first["item"]["id"]})
        retrieved = await client.until("conversation.item.retrieved")
        assert retrieved["item"]["content"] == [{"type": "input_text", "text": "Ma couveuse est à 36 degrés."}]

        await client.send({"type": "conversation.item.delete", "item_id": second["item"]["id"]})
        assert (await client.until("conversation.item.deleted"))["item_id"] == second["item"]["id"]
        await client.send({"type": "conversation.item.delete", "item_id": second["item"]["id"]})
        assert (await client.until("error"))["error"]["code"] == "item_delete_invalid_item_id"
        assert second["item"]["id"] not in [item["id"] for item in connection.conversation]


# ---------------------------------------------------------------------------------------------
# Command line


def test_cli_arguments_and_module_entry_point() -> None:
    argv = ["--port", "9000", "--transcript", "un", "--transcript", "deux", "--speed", "0"]
    options = cli.make_context("realtime-double", argv).params
    assert (options["host"], options["port"], options["speed"]) == ("127.0.0.1", 9000, 0.0)
    assert options["answer_seconds"] == 4.0
    assert options["transcripts"] == ("un", "deux")
    result = subprocess.run(
        [sys.executable, "-m", "app.simulators.realtime_double", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "--answer-seconds" in result.stdout and "--api-key" in result.stdout


async def test_a_tool_offered_to_the_model_is_called_with_the_callers_words(double: RealtimeDouble) -> None:
    # The caller's « dindes » is in the description: the double, like a model, calls the tool.
    tool = {"type": "function", "name": "search_knowledge",
            "description": "Cherche les fiches sur les volailles : poules, dindes, canards.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}
    async with open_session(double) as client:
        await update_session(client, tools=[tool], tool_choice="auto")
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Et pour les dindes ?"}]}})
        await client.send({"type": "response.create"})
        done = await client.until("response.done")
        call = done["response"]["output"][0]
        assert call["type"] == "function_call" and call["name"] == "search_knowledge"
        assert json.loads(call["arguments"]) == {"query": "Et pour les dindes ?"}
        arguments_done = client.of_type("response.function_call_arguments.done")[0]
        assert arguments_done["call_id"] == call["call_id"]
        assert "".join(e["delta"] for e in client.of_type("response.function_call_arguments.delta")) == call["arguments"]
        assert not client.of_type("response.output_audio.delta")

        # With the function's output in, the next response answers in voice.
        await client.send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": call["call_id"], "output": '{"passages": []}'}})
        await client.send({"type": "response.create"})
        answer = await client.until(lambda e: e["type"] == "response.done" and e is not done)
        assert answer["response"]["output"][0]["type"] == "message"
        assert client.of_type("response.output_audio.delta")
        for event in client.events:
            check_server_event(event)
    connection = double.connections[0]
    assert [r.kind for r in connection.responses] == ["function_call", "answer"]
    assert connection.responses[0].function_call["name"] == "search_knowledge"
    assert connection.errors_sent == []


async def test_the_double_calls_a_tool_its_instructions_name_first_and_otherwise_answers(double: RealtimeDouble) -> None:
    tools = [{"type": "function", "name": name, "description": description, "parameters": {"type": "object",
              "properties": {"query": {"type": "string"}}, "required": []}}
             for name, description in (("end_call", "Raccroche quand l'éleveur dit au revoir."),
                                       ("search_knowledge", "Cherche dans la base de connaissances."))]
    question = {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Et pour les dindes ?"}]}}
    async with open_session(double) as client:
        await update_session(client, tools=tools, tool_choice="auto")
        await client.send(question)
        await client.send({"type": "response.create"})
        answered = await client.until("response.done")
        await client.send(question)
        await client.send({"type": "response.create", "response": {
            "instructions": "Pour une question technique, appelle d'abord l'outil search_knowledge."}})
        searched = await client.until(lambda e: e["type"] == "response.done" and e is not answered)
    # No description shares a word with the question, and nothing says to search: it answers.
    assert answered["response"]["output"][0]["type"] == "message"
    # Told to search first, it calls that tool, not the first one offered.
    assert searched["response"]["output"][0]["name"] == "search_knowledge"
    assert double.connections[0].errors_sent == []
