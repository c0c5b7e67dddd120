"""The realtime websocket (engines/openai_realtime/connection.py) against a plain `websockets` server.

The peer here is the `websockets` library's own server, not our code: what it receives and
how it refuses or closes is the library's, so these tests check our client over real sockets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from app.config import Settings
from app.engines.openai_realtime.connection import RealtimeConnection, RealtimeUnavailable

TIMEOUT = 5.0
CONFIGURE = {"type": "session.update", "session": {"type": "realtime", "instructions": "Bonjour, éleveur"}}


def settings_for(url: str, tmp_path: Path) -> Settings:
    return Settings(_env_file=None, openai_api_key="sk-test", openai_realtime_url=url, data_dir=tmp_path)


@asynccontextmanager
async def peer(handler: Callable[[ServerConnection], Awaitable[None]], process_request=None):
    async with serve(handler, "127.0.0.1", 0, process_request=process_request, compression=None,
                     max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/realtime"


async def test_client_events_arrive_as_json_text_in_order_and_audio_appends_as_given(tmp_path: Path) -> None:
    received: list[str | bytes] = []
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            received.append(message)
            if len(received) == 3:
                done.set()

    async with peer(handler) as url:
        connection = await RealtimeConnection.open(settings_for(url, tmp_path), CONFIGURE)
        append = b'{"type":"input_audio_buffer.append","audio":"AAAA"}'
        assert await connection.send(append)
        assert await connection.send({"type": "response.cancel"})
        await asyncio.wait_for(done.wait(), TIMEOUT)
        await connection.close()
    assert all(isinstance(message, str) for message in received)  # text frames, as the service wants
    assert [json.loads(message) for message in received] == [
        CONFIGURE, json.loads(append), {"type": "response.cancel"}]


async def test_server_events_come_in_order_and_frames_without_an_event_are_dropped(tmp_path: Path) -> None:
    big_delta = {"type": "response.output_audio.delta", "delta": "A" * 2_000_000}

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # the session.update
        await ws.send(json.dumps({"type": "session.updated"}))
        await ws.send("not json")
        await ws.send(json.dumps(["a", "list"]))
        await ws.send(json.dumps({"no": "type"}))
        await ws.send(b"\xff\xfe binary")
        await ws.send(json.dumps(big_delta))
        await ws.send(json.dumps({"type": "response.done", "note": "fin d'élevage"}))
        await ws.close(1000)

    async with peer(handler) as url:
        connection = await RealtimeConnection.open(settings_for(url, tmp_path), CONFIGURE)
        events = [event async for event in connection.events()]
        assert connection.close_code == 1000
        assert not connection.is_open
    assert [event["type"] for event in events] == ["session.updated", "response.output_audio.delta", "response.done"]
    assert events[1] == big_delta and events[2]["note"] == "fin d'élevage"
    assert connection.last_received_at > 0


async def test_a_send_after_the_server_went_away_says_false_and_does_not_raise(tmp_path: Path) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.close(1011, "boom")

    async with peer(handler) as url:
        connection = await RealtimeConnection.open(settings_for(url, tmp_path), CONFIGURE)
        assert [event async for event in connection.events()] == []
        assert connection.close_code == 1011
        assert await connection.send({"type": "response.create"}) is False
        await connection.close()  # closing twice, or a closed socket, is harmless


async def test_a_refused_handshake_is_unavailable_with_the_services_status(tmp_path: Path) -> None:
    def refuse(connection, request):
        return Response(401, "Unauthorized", Headers({"Content-Type": "application/json"}),
                        b'{"error": {"code": "invalid_api_key"}}')

    async def handler(ws: ServerConnection) -> None:
        raise AssertionError("never opened")

    async with peer(handler, process_request=refuse) as url:
        with pytest.raises(RealtimeUnavailable) as refused:
            await RealtimeConnection.open(settings_for(url, tmp_path), CONFIGURE)
    assert refused.value.http_status == 401 and not refused.value.bad_url


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/v1/realtime", "not a url"])
async def test_a_url_that_is_not_a_websocket_url_is_unavailable_as_such(tmp_path: Path, url: str) -> None:
    with pytest.raises(RealtimeUnavailable) as refused:
        await RealtimeConnection.open(settings_for(url, tmp_path), CONFIGURE)
    assert refused.value.bad_url and refused.value.http_status is None


async def test_nobody_listening_is_unavailable(tmp_path: Path, unused_tcp_port: int) -> None:
    with pytest.raises(RealtimeUnavailable) as refused:
        await RealtimeConnection.open(settings_for(f"ws://127.0.0.1:{unused_tcp_port}/v1/realtime", tmp_path),
                                      CONFIGURE)
    assert refused.value.http_status is None and not refused.value.bad_url


@pytest.mark.parametrize("given_up_by", ["timeout", "cancel"])
async def test_a_handshake_given_up_on_leaves_no_socket_open(tmp_path: Path, given_up_by) -> None:
    """The service answers the upgrade late: after the connect timeout, or after the opening
    was cancelled (as a released pre-warm is). Whatever opens then is closed at once, not left
    holding a model session for nobody."""
    late_by = 1.0
    upgrades = opened = closed = 0

    async def slow(connection: ServerConnection, request) -> None:
        nonlocal upgrades
        upgrades += 1
        await asyncio.sleep(late_by)  # then the upgrade is accepted

    async def handler(ws: ServerConnection) -> None:
        nonlocal opened, closed
        opened += 1
        await ws.wait_closed()
        closed += 1

    async with peer(handler, process_request=slow) as url:
        settings = settings_for(url, tmp_path)
        if given_up_by == "timeout":
            settings = settings.model_copy(update={"realtime_connect_timeout_seconds": 0.3})
            with pytest.raises(RealtimeUnavailable):
                await RealtimeConnection.open(settings, CONFIGURE)
        else:
            opening = asyncio.create_task(RealtimeConnection.open(settings, CONFIGURE))
            await asyncio.sleep(0.3)
            opening.cancel()
            with pytest.raises(asyncio.CancelledError):
                await opening
        await asyncio.sleep(late_by + 1.5)  # past the late upgrade, and a close after it
        # Left alone, an opened socket stays open, kept alive by its pings.
        assert upgrades == 1 and opened == closed, (opened, closed)
        if given_up_by == "cancel":
            assert opened == 1  # the handshake went through, and was closed
