"""The lean benchmark peers (benchmarks/lean_peers.py) against the real server, over real sockets."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from app.engines.openai_realtime.engine import session_update
from app.service import engine_options
from app.config import Settings
from app.web import create_app, server_config
from tests.harness import AUDIO, AUTH_TOKEN, PUBLIC_URL, loopback_socket, serving_on

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "lean_peers.py"
_spec = importlib.util.spec_from_file_location("lean_peers", _PATH)
lean = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("lean_peers", lean)
_spec.loader.exec_module(lean)

API_KEY = "sk-lean-test"
# What the server needs from the peer, beyond which it does not look.
NEEDED = {"session.created", "session.updated", "input_audio_buffer.speech_started",
          "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
          "conversation.item.input_audio_transcription.completed", "response.created",
          "response.output_item.added", "response.content_part.added", "response.output_audio.delta",
          "response.output_audio_transcript.delta", "response.output_audio.done",
          "response.output_audio_transcript.done", "response.content_part.done", "response.output_item.done",
          "response.done", "conversation.item.truncated", "conversation.item.deleted", "error"}


def test_event_templates_validate_against_the_sdk_types() -> None:
    # The peer's own example updates, then the very session.update the server sends for each codec.
    assert NEEDED <= set(lean.validate_templates())
    # BARGE_IN_MIN_MS=0: the service answers turns on its own, which the scripted session counts on.
    settings_per_codec = [Settings(_env_file=None, audio_codec=codec, rag_mode="off", barge_in_min_ms=0)
                          for codec in ("pcm16", "pcmu")]
    updates = [session_update(settings, engine_options(settings)) for settings in settings_per_codec]
    assert NEEDED <= set(lean.validate_templates(updates))


async def test_handshake_auth_pings_fragments_and_close() -> None:
    async with lean.LeanRealtimePeer(api_key=API_KEY) as peer:
        for headers, path, status in [({"Authorization": "Bearer sk-wrong-key"}, "", 401), ({}, "", 401),
                                      ({"Authorization": f"Bearer {API_KEY}"}, "/elsewhere", 404)]:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(peer.url.replace("/v1/realtime", path or "/v1/realtime"),
                                   additional_headers=headers):
                    pass
            assert refused.value.response.status_code == status
            assert "error" in json.loads(refused.value.response.body)
        auth = {"Authorization": f"Bearer {API_KEY}"}
        async with connect(peer.url + "?model=gpt-realtime", additional_headers=auth, compression=None,
                           ping_interval=None) as ws:
            created = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert created["type"] == "session.created" and created["session"]["model"] == "gpt-realtime"
            await asyncio.wait_for(await ws.ping(b"lean"), 5)  # answered with a pong
            await ws.send(json.dumps(lean.example_session_update("pcmu")))
            updated = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert updated["type"] == "session.updated"
            assert updated["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
            await ws.send(json.dumps({"type": "response.cancel"}))
            error = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert error["error"]["code"] == "response_cancel_not_active"
        assert ws.close_code == 1000  # our close was echoed

        async with connect(peer.url, additional_headers=auth, compression=None) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "session.created"
            update = json.dumps(lean.example_session_update("pcmu"))
            await ws.send([update[:40], update[40:120], update[120:]])  # a fragmented text message: refused
            with pytest.raises(ConnectionClosedError):
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1003

        async with connect(peer.url, additional_headers={**auth, "OpenAI-Beta": "realtime=v1"}) as ws:
            error = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert error["error"]["code"] == "beta_api_shape_disabled"
            with pytest.raises(ConnectionClosedError):
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == lean.BETA_CLOSE_CODE
        await asyncio.sleep(0.05)
        assert peer.connections == set()


@pytest.mark.parametrize("codec", ["pcm16", "pcmu"])
async def test_two_lean_calls_through_the_real_server(codec: str) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="octi-lean-"))
    try:
        async with lean.LeanRealtimePeer(api_key=API_KEY, speed=4.0, answer_seconds=1.5, greeting_seconds=1.0) as peer:
            sock, port = loopback_socket()
            settings = Settings(_env_file=None, twilio_auth_token=AUTH_TOKEN, public_base_url=PUBLIC_URL,
                                openai_api_key=API_KEY, openai_realtime_url=peer.url, host="127.0.0.1", port=port,
                                rag_mode="off", audio_codec=codec, data_dir=data_dir,
                                call_recap=False)  # the lean peer answers no out-of-band response
            app = create_app(settings)
            async with serving_on(sock, server_config(app, "127.0.0.1", port)):
                results = await lean.run_fleet(
                    f"http://127.0.0.1:{port}", [{"index": i, "offset": 0.1 * i} for i in range(2)], duration=7.0,
                    public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, wavs=sorted(AUDIO.glob("*.wav")))
                metrics = app.state.service.metrics
                for _ in range(100):  # the server ends its sessions just after the callers hang up
                    if metrics.active_calls == 0:
                        break
                    await asyncio.sleep(0.05)
                ended = metrics.value("octi_calls_ended_total", outcome="caller_hung_up")
                errors = metrics.total("octi_engine_errors_total")
                token_refusals = metrics.value("octi_refusals_total", reason="stream_token")
            assert peer.errors_sent == [], "every client event the server sent was understood"
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    assert ended == 2
    assert errors == 0 and token_refusals == 0
    for r in results:
        assert (r["status"], r["closed_by"], r["close_code"]) == ("completed", "caller", 1000), r
        assert r["violations"] == 0 and r["errors"] == [] and r["n_errors"] == 0, r
        assert r["frames_sent"] == 350 and r["duration_s"] == 7.0
        greeting, *answers = r["bursts"]
        assert greeting[0] < 0.5 and greeting[2] == pytest.approx(1000, abs=20), r["bursts"]
        assert r["utterances"] and r["utterances"][0][2] is not None, "the first question was answered"
        assert answers and answers[0][2] == pytest.approx(1500, abs=20), r["bursts"]
        assert r["marks_echoed"] >= 20, "a mark per 100 ms of audio played comes back"
        assert r["clears"] == 0


async def test_a_lean_call_follows_its_plan_a_key_and_a_barge_in() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="octi-lean-"))
    plan = (lean.SPEAK, f"{lean.DTMF_STEP}*", lean.BARGE_IN)
    try:
        async with lean.LeanRealtimePeer(api_key=API_KEY, speed=4.0, answer_seconds=1.5, greeting_seconds=1.0) as peer:
            sock, port = loopback_socket()
            settings = Settings(_env_file=None, twilio_auth_token=AUTH_TOKEN, public_base_url=PUBLIC_URL,
                                openai_api_key=API_KEY, openai_realtime_url=peer.url, host="127.0.0.1", port=port,
                                rag_mode="off", data_dir=data_dir, call_recap=False)
            app = create_app(settings)
            async with serving_on(sock, server_config(app, "127.0.0.1", port)):
                async with lean.running_fleet(f"http://127.0.0.1:{port}", duration=30.0, public_url=PUBLIC_URL,
                                              auth_token=AUTH_TOKEN, wavs=sorted(AUDIO.glob("*.wav"))) as fleet:
                    result = await fleet.place(0, "CA" + "1" * 32, duration=22.0, plan=plan)
                metrics = app.state.service.metrics
                for _ in range(100):
                    if metrics.active_calls == 0:
                        break
                    await asyncio.sleep(0.05)
                barge_ins = metrics.value("octi_barge_ins_total", kind="real")
            assert peer.errors_sent == []
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    assert (result["status"], result["closed_by"], result["close_code"]) == ("completed", "caller", 1000), result
    assert result["violations"] == 0 and result["n_errors"] == 0, result
    assert result["call_sid"] == "CA" + "1" * 32 and result["duration_s"] == 22.0
    steps = result["utterances"]
    assert [step[3] for step in steps[:4]] == [*plan, lean.SPEAK], steps
    assert all(step[2] is not None for step in steps[:3]), "the question, the key (OCTI repeats) and the barge-in answered"
    assert steps[1][1] == 0, "a key takes no time"
    # The barge-in: spoken while OCTI answered the key, which the server cut (a clear).
    repeat = next(b for b in result["bursts"] if b[0] > steps[1][0])
    assert repeat[0] < steps[2][0] < repeat[1], (repeat, steps[2])
    assert result["clears"] >= 1 and barge_ins >= 1
