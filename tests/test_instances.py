"""Several instances behind one URL: two `octi serve` processes sharing Redis and PostgreSQL
behind a round-robin load balancer, so that a call's webhook lands on one and its stream on the
other; and an instance whose Redis is down, which still takes calls.

Redis (127.0.0.1:6379, database 9 here) and PostgreSQL (127.0.0.1:5432, a throwaway database)
are skipped locally when absent and required in CI, as elsewhere (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import websockets
from twilio.request_validator import RequestValidator

from app.calllog.store import CallLogStore
from app.channels.twilio.claims import WATCH_SECONDS, StreamClaims
from app.simulators import twilio_wire as wire
from app.simulators.twilio_caller import CallScript, Utterance, place_call
from tests.harness import AUTH_TOKEN, PUBLIC_URL, free_loopback_port, running_line, seeded_data_dir
from tests.round_robin import RoundRobinProxy
from tests.test_call_path import QUESTION
from tests.test_rag import ASKED, INCUBATION
from tests.test_calllog_store import _pg_url, create_pg_database, drop_pg_database

REPO = Path(__file__).resolve().parents[1]
INCOMING, STREAM, STREAM_ENDED = "POST /voice/incoming", "GET /voice/stream", "POST /voice/stream-ended"
POLICY_VIOLATION = 1008


def caller_number() -> str:
    """A number of this test's own, so that its per-caller count starts from nothing."""
    return "+336" + "".join(secrets.choice("0123456789") for _ in range(8))


@contextlib.asynccontextmanager
async def octi_serve(port: int, env: dict[str, str], log_path: Path) -> AsyncIterator[subprocess.Popen]:
    """`octi serve` on `port`, once its knowledge base is seeded; stopped (SIGTERM, drained) after."""
    data_dir = await seeded_data_dir()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TWILIO_", "RAG_", "REDIS_"))}
    with log_path.open("w") as log:
        server = subprocess.Popen([sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
                                  cwd=data_dir, env={**base, **env, "DATA_DIR": str(data_dir),
                                                     "PYTHONPATH": str(REPO)},
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(timeout=5) as http, asyncio.timeout(120):
            while True:
                assert server.poll() is None, log_path.read_text()
                with contextlib.suppress(httpx.HTTPError):
                    knowledge = (await http.get(f"http://127.0.0.1:{port}/health")).json()["knowledge"]
                    if knowledge.get("chunks") and not knowledge.get("seeding"):
                        break
                await asyncio.sleep(0.2)
        yield server
    finally:
        server.terminate()
        try:
            await asyncio.to_thread(server.wait, 60)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


async def replay_stream(port: int, public_stream_url: str, call_sid: str, parameters: dict[str, str]) -> int | None:
    """Open a media stream straight to an instance with a call's stream token again (signed as
    Twilio signs); the close code the instance answers with."""
    signature = RequestValidator(AUTH_TOKEN).compute_signature(public_stream_url, {})
    async with websockets.connect(f"ws://127.0.0.1:{port}/voice/stream",
                                  additional_headers={"X-Twilio-Signature": signature}) as ws:
        await ws.send(json.dumps(wire.connected_message()))
        await ws.send(json.dumps(wire.start_message(1, stream_sid=wire.new_sid("MZ"), account_sid=wire.new_sid("AC"),
                                                    call_sid=call_sid, custom_parameters=parameters)))
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(10):
                async for _ in ws:
                    pass
    return ws.close_code


async def test_a_call_whose_webhook_and_stream_land_on_two_instances_works_and_is_logged_whole(
        tmp_path: Path, double, redis_url: str) -> None:
    database = create_pg_database()  # skipped without a server (failed in CI)
    ports = []
    for _ in range(2):
        port = free_loopback_port()
        ports.append(port)
    double.script_next_connection()  # the engine the webhook's instance pre-warms
    double.script_next_connection([ASKED], answer_seconds=1.5)  # the stream's own
    caller = caller_number()
    try:
        async with RoundRobinProxy([("127.0.0.1", port) for port in ports]) as balancer:
            env = {"OPENAI_API_KEY": "sk-test", "OPENAI_REALTIME_URL": double.url, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                   "PUBLIC_BASE_URL": balancer.url, "REDIS_URL": redis_url.rsplit("/", 1)[0] + "/9",
                   "DATABASE_URL": _pg_url(database), "PREWARM_TTL_SECONDS": "60", "CALLS_PER_CALLER_PER_HOUR": "1",
                   "SILENCE_PROMPT_SECONDS": "0", "CALL_RECAP": "false", "LOG_LEVEL": "INFO",
                   # The voicemail's recording webhook never comes here: stopping need not wait for it.
                   "DRAIN_TIMEOUT_S": "3"}
            logs = [tmp_path / "first.log", tmp_path / "second.log"]
            async with octi_serve(ports[0], env, logs[0]), octi_serve(ports[1], env, logs[1]):
                calling = asyncio.create_task(place_call(
                    balancer.url, script=CallScript(utterances=[Utterance(QUESTION)], hangup_after=60),
                    auth_token=AUTH_TOKEN, from_number=caller))
                prewarmed = await double.wait_for_connection(timeout=20)
                own = await double.wait_for_connection(timeout=20)
                # From now on the balancer sends Twilio's requests (the <Connect> action among
                # them) back to the webhook's instance: only Redis tells it how the stream ended.
                webhook_backend = balancer.backends_of(INCOMING)[0]
                balancer.pin(webhook_backend)
                # The webhook's instance lets its pre-warmed engine go once the stream is claimed
                # elsewhere, long before the engine's 60 s time-out.
                released = await prewarmed.wait_closed(timeout=10)
                # The question is answered; then the model's connection drops for good.
                async with asyncio.timeout(30):
                    while len([r for r in own.responses if r.status == "completed"]) < 2:
                        await asyncio.sleep(0.05)
                # The per-caller count is shared: the same farmer calling the instance that did not
                # count their first call meanwhile is refused.
                again = await place_call(f"http://127.0.0.1:{ports[balancer.backends_of(STREAM)[0]]}",
                                         public_url=balancer.url, script=CallScript(hangup_after=2),
                                         auth_token=AUTH_TOKEN, from_number=caller)
                double.refuse_next(3)
                await double.drop_all(code=1011)
                result = await asyncio.wait_for(calling, 60)
                # A replayed stream token is refused by the other instance too.
                public_stream_url = balancer.url.replace("http", "ws", 1) + "/voice/stream"
                replayed = await replay_stream(ports[webhook_backend], public_stream_url, result.call_sid,
                                               result.custom_parameters)
        async with await CallLogStore.open(_pg_url(database)) as store:
            async with asyncio.timeout(20):  # each instance's writer gathers records for 0.5 s
                while True:
                    call_id = await store.find_call_id(result.call_sid)
                    detail = await store.get_call(call_id) if call_id is not None else None
                    if detail and detail.summary.outcome and "signature_refused" in {e.type for e in detail.events}:
                        break
                    await asyncio.sleep(0.2)
    finally:
        drop_pg_database(database)

    webhook_on, stream_on = balancer.backends_of(INCOMING), balancer.backends_of(STREAM)
    assert len(webhook_on) == 1 and stream_on == [1 - webhook_on[0]], balancer.connections
    webhook_log, stream_log = (logs[i].read_text() for i in (webhook_on[0], stream_on[0]))
    assert released.initiated_by == "client"
    assert f"the stream of {result.call_sid} went to another instance" in webhook_log
    assert "closing a pre-warmed engine: its stream went to another instance" in webhook_log
    assert "closing a pre-warmed engine" not in stream_log
    # The call worked end to end: greeting, answer, then the apology and the voicemail that a
    # failure on our side leads to, which the other instance answered the <Connect> action with.
    assert result.status == "completed" and result.closed_by == "server", result.summary()
    assert balancer.backends_of(STREAM_ENDED) == webhook_on
    assert "<Record" in result.after_stream["twiml"], result.after_stream
    assert any("problème technique" in text for text in result.after_stream["say_texts"])
    assert replayed == POLICY_VIOLATION
    assert "a stream token already used" in webhook_log
    assert again.status == "spoken_only", again.summary()
    assert "plusieurs fois cette heure-ci" in " ".join(again.say_texts), again.say_texts
    # Its record in PostgreSQL is whole.
    assert detail.summary.outcome == "error"
    assert [turn.role for turn in detail.turns] == ["assistant", "caller", "assistant"]
    assert detail.turns[1].text == ASKED
    assert INCUBATION in {passage.source for passage in detail.turns[1].passages}  # searched on the stream's instance
    events = [event.type for event in detail.events]
    assert events[:3] == ["engine_lost", "engine_reconnect_failed", "upstream_failure"]
    assert "signature_refused" in events  # the replay, journaled with the call


async def test_with_redis_down_calls_are_still_taken_and_health_warns(double) -> None:
    double.script_next_connection(["Et pour les œufs de cane ?"], answer_seconds=1.5)
    async with running_line(openai_realtime_url=double.url, redis_url=f"redis://127.0.0.1:{free_loopback_port()}/0",
                            calls_per_caller_per_hour=1) as line:
        answered = await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN,
                                    script=CallScript(utterances=[Utterance(QUESTION)], hangup_after=30,
                                                      hangup_when_done_after_s=2.0))
        refused = await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN,
                                   script=CallScript(hangup_after=2))
        async with httpx.AsyncClient() as http:
            health = (await http.get(line.url + "/health")).json()
    assert answered.status == "completed" and answered.closed_by == "caller", answered.summary()
    assert len(double.connections) == 1 and double.connections[0].responses[-1].status == "completed"
    # The instance counted by itself meanwhile: the same caller's second call in the hour is refused.
    assert refused.status == "spoken_only" and "plusieurs fois cette heure-ci" in " ".join(refused.say_texts)
    assert health["status"] == "degraded" and health["redis"] == {"configured": True, "ok": False}
    assert any("Redis" in problem and "per instance" in problem for problem in health["problems"])
    assert {"status", "timestamp", "service", "problems", "realtime", "knowledge", "call_log"} <= health.keys()


async def test_the_instance_that_admitted_a_call_hears_when_its_stream_is_claimed_elsewhere(redis_url: str) -> None:
    elsewhere: list[str] = []
    webhook_side = StreamClaims(redis_url, ttl_seconds=60, taken_elsewhere=elsewhere.append)
    stream_side = StreamClaims(redis_url, ttl_seconds=60, taken_elsewhere=elsewhere.append)
    call_sid, local_sid = wire.new_sid("CA"), wire.new_sid("CA")
    try:
        webhook_side.watch(call_sid)
        webhook_side.watch(local_sid)
        assert await stream_side.claim(call_sid)
        assert await webhook_side.claim(local_sid)  # this one's stream came back to it
        async with asyncio.timeout(10 * WATCH_SECONDS):
            while not elsewhere:
                await asyncio.sleep(0.05)
        await asyncio.sleep(2 * WATCH_SECONDS)
        assert elsewhere == [call_sid]
        # A second stream for either call is refused, whichever instance it reaches.
        assert not await webhook_side.claim(call_sid) and not await stream_side.claim(call_sid)
        assert not await stream_side.claim(local_sid)
    finally:
        await webhook_side.close()
        await stream_side.close()


async def test_without_redis_a_stream_token_is_still_good_once_on_its_instance() -> None:
    elsewhere: list[str] = []
    claims = StreamClaims(None, ttl_seconds=60, taken_elsewhere=elsewhere.append)
    claims.watch("CA1")
    assert await claims.claim("CA1") and not await claims.claim("CA1")
    await asyncio.sleep(2 * WATCH_SECONDS)
    assert elsewhere == []
    await claims.close()
