"""CPU per message of candidate websocket and JSON stacks for the relay's two hot paths, on loopback.

Run from the repo root:

  .venv/bin/python benchmarks/ws_stacks.py                        # everything: json, server, client (~25 min)
  .venv/bin/python benchmarks/ws_stacks.py json                   # in-process JSON and base64 timings (~1 min)
  .venv/bin/python benchmarks/ws_stacks.py server --stacks granian picows --calls 150 --seconds 10 --repeat 3
  .venv/bin/python benchmarks/ws_stacks.py client --stacks websockets picows aiohttp

granian, msgspec and wsproto are optional (not project dependencies): the json part needs msgspec,
the server part's granian and granian+starlette stacks need granian and its uvicorn-wsproto stack
wsproto; a stack whose package is missing is skipped. Everything else (picows, orjson, aiohttp,
uvicorn, uvloop, websockets, starlette) comes with the project.

The messages are built with the project's own functions, so they are what the relay sends and
receives: `app.channels.twilio.wire.media_message` and `mark_message` (out to Twilio),
`app.engines.openai_realtime.protocol.append_audio` (up to OpenAI), and the simulated caller's
`app.simulators.twilio_wire.media_message` serialised as Twilio writes it (in from Twilio).

Three parts, each printing CPU-µs per message:

* json: in this process, µs per call (best of several timeit runs) for decoding a Twilio media
  message and a model audio delta, and encoding an `input_audio_buffer.append`, with the
  stdlib `json`, orjson and msgspec (generic and typed), plus base64 for scale; the relay's own
  encoder (`append_audio`, base64 included) is timed as the "bytes template (the relay's)" row.
* server (Twilio's side of the relay): the stack under test serves in a process of its own;
  this process is the load, `--calls` websocket clients (picows, on uvloop) that
  - in:  each send a Twilio media message (~380 bytes of JSON) every 20 ms, the connections
         spread over the 20 ms in `--groups` groups; the server reads each message (as text)
         and drops it;
  - out: the server sends each connection a media message of 100 ms of μ-law (~1.1 kB of
         JSON) and a mark every 100 ms, each connection on its own timer;
  - out-null: the same timers with nothing sent (what the timers alone cost).
  Figure: the server process tree's CPU (utime + stime from /proc, all threads and worker
  processes) over the window, divided by the messages in it. out net = (out - out-null scaled to
  the out window) / messages.
* client (the relay's side to OpenAI): the client stack under test runs in a process of its
  own with `--calls` connections to a sink in this process (picows); it
  - send:  sends each connection an append (960 bytes of PCM16 = 1280 base64 characters,
           ~1.33 kB of JSON) every 20 ms, in `--groups` timer groups;
  - null:  the same timers, nothing sent;
  - recv:  receives a model audio delta (100 ms of PCM16, ~6.6 kB of JSON) every 100 ms per
           connection from the sink, as the message type the library hands over.
  Figure: the client process's CPU (process_time, all threads) over the window per message;
  send net = (send - null scaled to the send window) / messages.

Stacks (server): uvicorn-websockets, uvicorn-websockets-sansio, uvicorn-wsproto (uvicorn,
uvloop, h11, a plain ASGI app), granian (ASGI, one worker, one runtime thread, uvloop),
aiohttp (its web server's WebSocketResponse), picows (its server, a listener callback) and
picows-websockets (picows' `websockets` server API, each connection read by a task with `recv`,
as the media stream's own listener runs it: app/channels/twilio/stream_listener.py). A
`+starlette` suffix (e.g. granian+starlette) goes through starlette's WebSocket
(`receive_text`, `send_text`) as the FastAPI app does. Stacks (client): websockets
(`ClientConnection.send(bytes, text=True)`, `recv(decode=False)`), picows-websockets (the same
calls on picows' implementation of the websockets API, `picows.websockets`, as the relay's
realtime client uses it), picows (its native API: `WSTransport.send`, `on_ws_frame`) and aiohttp
(`ClientWebSocketResponse.send_frame`, `async for`).

Every process started here is stopped at the end (with relay.py's `Processes`: each child gets
SIGTERM if this process dies, and SIGTERM here stops everything like Ctrl-C); everything listens
on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import timeit
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (str(REPO), str(HERE)):  # app.* and relay.py, also in the granian worker (ws_stacks:asgi_app)
    if _path not in sys.path:
        sys.path.insert(0, _path)

from app.channels.twilio import wire  # noqa: E402
from app.engines.openai_realtime.protocol import append_audio  # noqa: E402
from app.simulators import twilio_wire as twilio_sim  # noqa: E402
from relay import Processes, free_port, machine_cpu, port_open, wait_until  # noqa: E402 - relay: stdlib only

HOST = "127.0.0.1"  # relay's free_port and port_open use 127.0.0.1 too

SERVER_STACKS = ["uvicorn-websockets", "uvicorn-websockets-sansio", "uvicorn-wsproto",
                 "granian", "aiohttp", "picows", "picows-websockets", "uvicorn-websockets-sansio+starlette",
                 "granian+starlette"]
CLIENT_STACKS = ["websockets", "picows-websockets", "picows", "aiohttp"]
GRANIAN_ARGS: list[str] = []  # --granian-args

# --------------------------------------------------------------------------- the messages

STREAM_SID = "MZ" + "0123456789abcdef" * 2
_ULAW_20MS = bytes((i * 37 + 11) % 256 for i in range(160))
_ULAW_100MS = bytes((i * 53 + 7) % 256 for i in range(800))
_PCM_20MS = bytes((i * 29 + 3) % 256 for i in range(960))  # 20 ms of PCM16 at 24 kHz
_PCM_100MS = bytes((i * 31 + 5) % 256 for i in range(4800))


def twilio_media(seq: int) -> bytes:
    """A Twilio media message as Twilio writes it (key order and all): the simulated caller's, compact JSON."""
    return json.dumps(twilio_sim.media_message(seq, stream_sid=STREAM_SID, chunk=seq - 1, timestamp_ms=(seq - 2) * 20,
                                               payload=_ULAW_20MS), separators=(",", ":")).encode()


MEDIA_IN = twilio_media(1234)
MEDIA_OUT = wire.media_message(STREAM_SID, _ULAW_100MS)  # what the relay sends Twilio
MARK_OUT = wire.mark_message(STREAM_SID, "octi-000123")
APPEND = append_audio(_PCM_20MS)  # what the relay sends OpenAI
DELTA = json.dumps({"type": "response.output_audio.delta", "event_id": "event_Cg5TQbQ2ZxV1r3xK000000123",
                    "response_id": "resp_Cg5TQbQ2ZxV1r3xK000000045", "item_id": "item_Cg5TQbQ2ZxV1r3xK000000046",
                    "output_index": 0, "content_index": 0, "delta": base64.b64encode(_PCM_100MS).decode()},
                   separators=(",", ":")).encode()


def uvloop_run(main: Any) -> Any:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


# --------------------------------------------------------------------------- JSON


def bench(fn: Any, number: int, repeat: int = 7) -> float:
    """Best µs per call."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def _msgspec_types() -> tuple[Any, Any]:
    """Typed schemas for msgspec: a Twilio media message (what the relay reads of it) and an append."""
    import msgspec
    from typing import Optional

    MediaBody = msgspec.defstruct("MediaBody", [("payload", str), ("track", str, ""), ("chunk", str, ""),
                                                ("timestamp", str, "")])
    TwilioMedia = msgspec.defstruct("TwilioMedia", [("event", str), ("media", Optional[MediaBody], None),
                                                    ("streamSid", str, ""), ("sequenceNumber", str, "")])
    Append = msgspec.defstruct("Append", [("audio", str)], tag="input_audio_buffer.append", tag_field="type")
    return TwilioMedia, Append


def json_part() -> dict[str, float]:
    import orjson
    import msgspec

    TwilioMedia, Append = _msgspec_types()
    media_str, delta_str = MEDIA_IN.decode(), DELTA.decode()
    b64 = base64.b64encode(_PCM_20MS).decode()
    ulaw_b64 = base64.b64encode(_ULAW_20MS).decode()
    typed = msgspec.json.Decoder(TwilioMedia)
    generic = msgspec.json.Decoder()
    encoder = msgspec.json.Encoder()
    rows: list[tuple[str, str, Any, int]] = [
        ("decode media (str)", "json.loads", lambda: json.loads(media_str), 100_000),
        ("decode media (str)", "orjson.loads", lambda: orjson.loads(media_str), 100_000),
        ("decode media (bytes)", "orjson.loads", lambda: orjson.loads(MEDIA_IN), 100_000),
        ("decode media (bytes)", "msgspec generic", lambda: generic.decode(MEDIA_IN), 100_000),
        ("decode media (bytes)", "msgspec Struct", lambda: typed.decode(MEDIA_IN), 100_000),
        ("decode delta 6.6 kB (str)", "json.loads", lambda: json.loads(delta_str), 50_000),
        ("decode delta 6.6 kB (bytes)", "orjson.loads", lambda: orjson.loads(DELTA), 50_000),
        ("decode delta 6.6 kB (bytes)", "msgspec generic", lambda: generic.decode(DELTA), 50_000),
        ("encode append (-> str)", "json.dumps", lambda: json.dumps({"type": "input_audio_buffer.append",
                                                                       "audio": b64}), 100_000),
        ("encode append (-> bytes)", "json.dumps+encode", lambda: json.dumps({"type": "input_audio_buffer.append",
                                                                                "audio": b64}).encode(), 100_000),
        ("encode append (-> bytes)", "bytes template (the relay's)", lambda: append_audio(_PCM_20MS), 100_000),
        ("encode append (-> bytes)", "orjson.dumps", lambda: orjson.dumps({"type": "input_audio_buffer.append",
                                                                           "audio": b64}), 100_000),
        ("encode append (-> bytes)", "msgspec dict", lambda: encoder.encode({"type": "input_audio_buffer.append",
                                                                             "audio": b64}), 100_000),
        ("encode append (-> bytes)", "msgspec Struct", lambda: encoder.encode(Append(b64)), 100_000),
        ("base64 (for scale)", "b64decode 216 chars", lambda: base64.b64decode(ulaw_b64), 100_000),
        ("base64 (for scale)", "b64encode 960 bytes", lambda: base64.b64encode(_PCM_20MS), 100_000),
    ]
    assert typed.decode(MEDIA_IN).media.payload == json.loads(MEDIA_IN)["media"]["payload"]
    assert orjson.loads(append_audio(_PCM_20MS)) == {"type": "input_audio_buffer.append", "audio": b64}
    assert orjson.loads(encoder.encode(Append(b64))) == {"type": "input_audio_buffer.append", "audio": b64}
    print(f"\nJSON and base64, µs per call (best of 7; media {len(MEDIA_IN)} B, delta {len(DELTA)} B, "
          f"append {len(APPEND)} B); orjson {orjson.__version__}, msgspec {msgspec.__version__}")
    print("  (the relay's append_audio base64-encodes the PCM too; the other encoders start from the base64 text)")
    results = {}
    for what, how, fn, number in rows:
        us = bench(fn, number)
        results[f"{what} / {how}"] = us
        print(f"  {what:<28} {how:<29} {us:7.2f}")
    return results


# --------------------------------------------------------------------------- server stacks (subprocess)


async def _drain_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return


async def _paced(send_pair: Any, stop: asyncio.Event, null: bool) -> None:
    """Every 100 ms, from a random phase: a media message and a mark (nothing when null)."""
    loop = asyncio.get_running_loop()
    due = loop.time() + (int.from_bytes(os.urandom(2), "big") % 100) / 1000
    while not stop.is_set():
        await asyncio.sleep(max(0.0, due - loop.time()))
        due += 0.1
        if stop.is_set():
            return
        if not null:
            await send_pair()


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI app every ASGI stack serves: /in, /out, /outnull (and /…-starlette through starlette)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    path = scope["path"]
    if path.endswith("-starlette"):
        await _starlette_app(path.removesuffix("-starlette"), scope, receive, send)
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    if path == "/in":
        await _drain_disconnect(receive)
        return
    stop = asyncio.Event()
    media = {"type": "websocket.send", "text": MEDIA_OUT}
    mark = {"type": "websocket.send", "text": MARK_OUT}

    async def pair() -> None:
        await send(media)
        await send(mark)

    pacer = asyncio.create_task(_paced(pair, stop, path == "/outnull"))
    try:
        await _drain_disconnect(receive)
    finally:
        stop.set()
        pacer.cancel()


async def _starlette_app(path: str, scope: dict[str, Any], receive: Any, send: Any) -> None:
    from starlette.websockets import WebSocket, WebSocketDisconnect

    ws = WebSocket(scope, receive, send)
    await ws.accept()
    if path == "/in":
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect:
            return
    stop = asyncio.Event()

    async def pair() -> None:
        await ws.send_text(MEDIA_OUT)
        await ws.send_text(MARK_OUT)

    pacer = asyncio.create_task(_paced(pair, stop, path == "/outnull"))
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
    finally:
        stop.set()
        pacer.cancel()


def serve_stack(stack: str, port: int) -> None:
    base = stack.removesuffix("+starlette")
    if base.startswith("uvicorn-"):
        import uvicorn

        ws = base.removeprefix("uvicorn-")
        config = uvicorn.Config(asgi_app, host=HOST, port=port, ws=ws, loop="uvloop", http="h11",
                                lifespan="off", log_level="warning", access_log=False, ws_per_message_deflate=False)
        uvicorn.Server(config).run()
    elif base == "aiohttp":
        uvloop_run(_aiohttp_server(port))
    elif base == "picows":
        uvloop_run(_picows_server(port))
    elif base == "picows-websockets":
        uvloop_run(_picows_websockets_server(port))
    else:
        raise SystemExit(f"unknown stack {stack}")


async def _aiohttp_server(port: int) -> None:
    from aiohttp import WSMsgType, web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=8 * 2**20)
        await ws.prepare(request)
        if request.path == "/in":
            async for _ in ws:
                pass
            return ws
        stop = asyncio.Event()

        async def pair() -> None:
            await ws.send_str(MEDIA_OUT)
            await ws.send_str(MARK_OUT)

        pacer = asyncio.create_task(_paced(pair, stop, request.path == "/outnull"))
        try:
            async for message in ws:
                if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            stop.set()
            pacer.cancel()
        return ws

    app = web.Application()
    app.router.add_get("/{path}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    await asyncio.Event().wait()


async def _picows_websockets_server(port: int) -> None:
    """picows behind its `websockets` server API: each connection's messages read by a task."""
    from picows.websockets import ConnectionClosed, serve

    async def handler(ws: Any) -> None:
        path = ws.request.path
        if path == "/in":
            try:
                while True:
                    await ws.recv()
            except ConnectionClosed:
                return
        stop = asyncio.Event()

        async def pair() -> None:
            await ws.send(MEDIA_OUT)
            await ws.send(MARK_OUT)

        pacer = asyncio.create_task(_paced(pair, stop, path == "/outnull"))
        try:
            await ws.wait_closed()
        finally:
            stop.set()
            pacer.cancel()

    async with serve(handler, HOST, port, compression=None, max_size=8 * 2**20, ping_interval=None):
        await asyncio.Event().wait()


async def _picows_server(port: int) -> None:
    from picows import WSListener, WSMsgType, ws_create_server

    media, mark = MEDIA_OUT.encode(), MARK_OUT.encode()

    class Listener(WSListener):
        def __init__(self, path: str) -> None:
            self.path = path
            self.handle: Any = None

        def on_ws_connected(self, transport: Any) -> None:
            if self.path in ("/out", "/outnull"):
                loop = asyncio.get_running_loop()
                null = self.path == "/outnull"

                def tick(due: float) -> None:
                    if not null:
                        transport.send(WSMsgType.TEXT, media)
                        transport.send(WSMsgType.TEXT, mark)
                    self.handle = loop.call_at(due + 0.1, tick, due + 0.1)

                start = loop.time() + (int.from_bytes(os.urandom(2), "big") % 100) / 1000
                self.handle = loop.call_at(start, tick, start)

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            kind = frame.msg_type
            if kind == WSMsgType.TEXT:
                frame.get_payload_as_bytes()  # the message, as the application would take it
            elif kind == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            if self.handle is not None:
                self.handle.cancel()

    server = await ws_create_server(lambda request: Listener(request.path.decode()), HOST, port)
    async with server:
        await server.serve_forever()


def start_server(procs: Processes, stack: str, port: int, log: Path) -> subprocess.Popen:
    base = stack.removesuffix("+starlette")
    if base == "granian":
        cmd = [str(Path(sys.executable).parent / "granian"), "--interface", "asgi", "--host", HOST, "--port", str(port),
               "--workers", "1", "--runtime-threads", "1", "--runtime-mode", "st", "--loop", "uvloop",
               "--log-level", "warning", "--no-access-log", *GRANIAN_ARGS, "ws_stacks:asgi_app"]
        env = {**os.environ, "PYTHONPATH": str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "_serve", stack, str(port)]
        env = dict(os.environ)
    return procs.start(f"server {stack}", cmd, log=log, env=env, cwd=HERE)


def tree_cpu(pid: int) -> float:
    """utime + stime of a process and all its descendants (threads included), in seconds.

    (relay.py reads one process, `process_cpu_s`, or all of them, `all_process_cpu`; granian's
    worker is a child of its main process, so the server is a tree here.)"""
    tck = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tck
    family, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in family:
                family.add(child)
                frontier.append(child)
    return sum(cpu.get(p, 0.0) for p in family)


async def drive_server(port: int, stack: str, mode: str, calls: int, groups: int, settle: float, seconds: float,
                       server_pid: int) -> dict[str, Any]:
    """Open `calls` picows clients on the stack's /in, /out or /outnull; measure the server over the window."""
    from picows import WSListener, WSMsgType, ws_connect

    suffix = "-starlette" if stack.endswith("+starlette") else ""
    path = {"in": "/in", "out": "/out", "out-null": "/outnull"}[mode] + suffix
    received = [0]

    class Client(WSListener):
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                received[0] += 1
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.disconnect()

    transports = []
    for i in range(calls):
        transport, _ = await ws_connect(Client, f"ws://{HOST}:{port}{path}")
        transports.append(transport)
    loop = asyncio.get_running_loop()
    sent = [0]
    stop = False

    async def group(g: int) -> None:
        members = transports[g::groups]
        due = loop.time() + g * 0.02 / groups
        seq = 1000
        while not stop:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due += 0.02
            seq += 1
            message = twilio_media(seq)
            for t in members:
                t.send(WSMsgType.TEXT, message)
            sent[0] += len(members)

    tasks = [asyncio.create_task(group(g)) for g in range(groups)] if mode == "in" else []
    await asyncio.sleep(settle)
    cpu0, sent0, recv0, m0, t0 = tree_cpu(server_pid), sent[0], received[0], machine_cpu()[0], time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, sent1, recv1, m1, t1 = tree_cpu(server_pid), sent[0], received[0], machine_cpu()[0], time.monotonic()
    stop = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for t in transports:
        t.send_close()
        t.disconnect()
    await asyncio.sleep(0.5)
    messages = (sent1 - sent0) if mode == "in" else (recv1 - recv0)
    return {"cpu_s": cpu1 - cpu0, "window_s": t1 - t0, "messages": messages,
            "us_per_message": (cpu1 - cpu0) / messages * 1e6 if messages else float("nan"),
            "server_cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100,
            "machine_pct": (m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * 100}


def available(stack: str) -> str | None:
    """Why a stack cannot run here (None when it can)."""
    base = stack.removesuffix("+starlette")
    need = {"uvicorn-wsproto": "wsproto", "granian": "granian", "aiohttp": "aiohttp", "picows": "picows",
            "picows-websockets": "picows.websockets", "websockets": "websockets"}.get(base)
    if need is None:
        return None
    try:
        __import__(need)
    except ImportError as exc:
        return f"{need} not importable ({exc})"
    return None


def selected(names: list[str], known: list[str], part: str) -> list[str]:
    """The stacks of one part among --stacks (every one without --stacks); none, said so, when none is."""
    if not names:
        return list(known)
    chosen = [s for s in known if s in names]
    if not chosen:
        print(f"\n{part} part not run: none of --stacks {' '.join(names)} is a {part} stack ({', '.join(known)})",
              flush=True)
    return chosen


def net_of_timers(gross: list[dict[str, Any]], null: list[dict[str, Any]]) -> list[float]:
    """µs per message net of timers, per repetition: the gross run's CPU less the same repetition's null run's
    (scaled to the gross window), over the gross run's messages."""
    nulls = {n["rep"]: n for n in null}
    return [(g["cpu_s"] - nulls[g["rep"]]["cpu_s"] * g["window_s"] / nulls[g["rep"]]["window_s"]) / g["messages"] * 1e6
            for g in gross if g["messages"] and g["rep"] in nulls]


def server_part(args: argparse.Namespace, out: Path, procs: Processes) -> dict[str, Any]:
    stacks = selected(args.stacks, SERVER_STACKS, "server")
    if not stacks:
        return {"runs": {}, "summary": {}}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    print(f"\nServer side: {args.calls} connections; in = a Twilio media message ({len(MEDIA_IN)} B) per 20 ms per "
          f"connection in {args.groups} groups; out = media ({len(MEDIA_OUT)} B) + mark ({len(MARK_OUT)} B) per "
          f"100 ms per connection; {args.seconds:g} s windows after {args.settle:g} s; {args.repeat} repetition(s)")
    for rep in range(args.repeat):
        for stack in stacks:
            why = available(stack)
            if why:
                if rep == 0:
                    print(f"  {stack}: skipped, {why}")
                continue
            port = free_port()
            proc = start_server(procs, stack, port, out / f"server-{stack}-{rep}.log")
            try:
                wait_until(lambda: port_open(port), 20, f"{stack} server", proc)
                for mode in ("in", "out", "out-null"):
                    r = uvloop_run(drive_server(port, stack, mode, args.calls, args.groups, args.settle, args.seconds,
                                                proc.pid))
                    r["rep"] = rep
                    results.setdefault(stack, {}).setdefault(mode, []).append(r)
                    print(f"  rep {rep} {stack:<36} {mode:<8} {r['us_per_message']:7.2f} CPU-µs/msg  "
                          f"server {r['server_cpu_pct']:4.0f} %  machine {r['machine_pct']:3.0f} %  "
                          f"{r['messages']} msgs", flush=True)
            except Exception as exc:  # noqa: BLE001 - a stack that fails is reported, the others go on
                print(f"  rep {rep} {stack}: failed: {exc!r} (see {out / f'server-{stack}-{rep}.log'})", flush=True)
            finally:
                procs.stop(proc, grace=5.0)
    print("\n  server stack                          in µs/msg         out µs/msg (gross)    out net of timers"
          "   (median [min-max] over repetitions)")
    summary = {}
    for stack, modes in results.items():
        ins = [r["us_per_message"] for r in modes.get("in", [])]
        outs = [r["us_per_message"] for r in modes.get("out", [])]
        nets = net_of_timers(modes.get("out", []), modes.get("out-null", []))
        summary[stack] = {"in": ins, "out": outs, "out_net": nets}
        print(f"  {stack:<36} {_spread(ins):>18} {_spread(outs):>18} {_spread(nets):>18}")
    return {"runs": results, "summary": summary}


def _spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"


# --------------------------------------------------------------------------- client stacks


async def client_role(stack: str, port: int, mode: str, calls: int, groups: int, settle: float,
                      seconds: float) -> dict[str, Any]:
    """In the subprocess: `calls` connections with the client stack; send appends, or receive deltas."""
    url = f"ws://{HOST}:{port}/" + ("recv" if mode == "recv" else "sink")
    received = [0]
    senders: list[Any] = []
    closers: list[Any] = []
    readers: list[asyncio.Task[Any]] = []
    if stack in ("websockets", "picows-websockets"):
        if stack == "websockets":
            from websockets.asyncio.client import connect
        else:
            from picows.websockets import connect

        async def reader(ws: Any) -> None:
            try:
                while True:
                    await ws.recv(decode=False)  # as the relay reads model events
                    received[0] += 1
            except Exception:  # noqa: BLE001 - closed at the end
                pass

        for _ in range(calls):
            ws = await connect(url, compression=None, max_size=8 * 2**20, ping_interval=20, ping_timeout=20)
            readers.append(asyncio.create_task(reader(ws)))
            closers.append(ws.close)
            senders.append(lambda ws=ws: ws.send(APPEND, text=True))
    elif stack == "picows":
        from picows import WSListener, WSMsgType, ws_connect

        class Client(WSListener):
            def on_ws_frame(self, transport: Any, frame: Any) -> None:
                if frame.msg_type == WSMsgType.TEXT:
                    frame.get_payload_as_bytes()
                    received[0] += 1
                elif frame.msg_type == WSMsgType.CLOSE:
                    transport.disconnect()

        for _ in range(calls):
            transport, _ = await ws_connect(Client, url, max_frame_size=8 * 2**20)
            senders.append(lambda t=transport: t.send(WSMsgType.TEXT, APPEND))

            async def close(t: Any = transport) -> None:
                t.send_close()
                t.disconnect()

            closers.append(close)
    elif stack == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))  # default: 100 connections

        async def reader(ws: Any) -> None:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    received[0] += 1

        for _ in range(calls):
            ws = await session.ws_connect(url, compress=0, max_msg_size=8 * 2**20, autoping=True)
            readers.append(asyncio.create_task(reader(ws)))
            closers.append(ws.close)
            senders.append(lambda ws=ws: ws.send_frame(APPEND, aiohttp.WSMsgType.TEXT))
        closers.append(session.close)
    else:
        raise SystemExit(f"unknown client stack {stack}")

    loop = asyncio.get_running_loop()
    sent = [0]
    stop = False

    async def group(g: int) -> None:
        members = senders[g::groups]
        due = loop.time() + g * 0.02 / groups
        while not stop:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due += 0.02
            if mode == "send":
                for send in members:
                    result = send()
                    if result is not None:  # a coroutine: the library's async send
                        await result
            sent[0] += len(members)

    tasks = [asyncio.create_task(group(g)) for g in range(groups)] if mode in ("send", "null") else []
    await asyncio.sleep(settle)
    cpu0, sent0, recv0, t0 = time.process_time(), sent[0], received[0], time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, sent1, recv1, t1 = time.process_time(), sent[0], received[0], time.monotonic()
    stop = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    messages = (recv1 - recv0) if mode == "recv" else (sent1 - sent0)
    result = {"cpu_s": cpu1 - cpu0, "window_s": t1 - t0, "messages": messages,
              "us_per_message": (cpu1 - cpu0) / messages * 1e6 if messages else float("nan"),
              "client_cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100}
    print(json.dumps(result), flush=True)  # before the closing handshakes, which are not measured

    async def close_quietly(close: Any) -> None:
        try:
            await close()
        except Exception:  # noqa: BLE001 - the peer may be gone already
            pass

    await asyncio.wait([asyncio.ensure_future(close_quietly(c)) for c in closers], timeout=5)
    for task in readers:
        task.cancel()
    return result


async def sink_and_run(stack: str, mode: str, args: argparse.Namespace, log: Path, procs: Processes) -> dict[str, Any]:
    """In this process: the picows sink/source; the client stack in a subprocess."""
    from picows import WSListener, WSMsgType, ws_create_server

    got = [0]

    class Sink(WSListener):
        def __init__(self, path: str) -> None:
            self.path, self.handle = path, None

        def on_ws_connected(self, transport: Any) -> None:
            if self.path == "/recv":  # a 100 ms delta every 100 ms, from a random phase
                loop = asyncio.get_running_loop()

                def tick(due: float) -> None:
                    transport.send(WSMsgType.TEXT, DELTA)
                    self.handle = loop.call_at(due + 0.1, tick, due + 0.1)

                start = loop.time() + (int.from_bytes(os.urandom(2), "big") % 100) / 1000
                self.handle = loop.call_at(start, tick, start)

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                got[0] += 1
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            if self.handle is not None:
                self.handle.cancel()

    server = await ws_create_server(lambda request: Sink(request.path.decode()), HOST, 0)
    port = server.sockets[0].getsockname()[1]
    cmd = [sys.executable, str(Path(__file__).resolve()), "_client", stack, str(port), mode, str(args.calls),
           str(args.groups), str(args.settle), str(args.seconds)]
    m0 = machine_cpu()[0]
    try:
        # relay's Processes: the log (stderr) closed once handed over, SIGTERM to the client if this process dies
        proc = procs.start(f"client {stack} {mode}", cmd, log=log, pipes=True)
        try:
            # in a thread, so that the sink (this event loop) goes on serving the client meanwhile
            stdout, _ = await asyncio.to_thread(proc.communicate, timeout=args.settle + args.seconds + 60)
        except subprocess.TimeoutExpired:
            raise RuntimeError("the client did not finish in time") from None
        finally:
            procs.stop(proc, grace=1.0)  # kills it when still running (timeout, failure, interruption)
    finally:
        server.close()
    m1 = machine_cpu()[0]
    if proc.returncode != 0 or not stdout.strip():
        raise RuntimeError(f"client exited with {proc.returncode}")
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    result["machine_pct"] = (m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * 100
    if mode == "send" and got[0] < result["messages"]:
        result["note"] = f"sink got {got[0]} of the messages"
    return result


def client_part(args: argparse.Namespace, out: Path, procs: Processes) -> dict[str, Any]:
    stacks = selected(args.stacks, CLIENT_STACKS, "client")
    if not stacks:
        return {"runs": {}, "summary": {}}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    print(f"\nClient side (to OpenAI): {args.calls} connections; send = an append ({len(APPEND)} B) per 20 ms per "
          f"connection in {args.groups} groups; recv = a delta ({len(DELTA)} B) per 100 ms per connection; "
          f"{args.seconds:g} s windows; {args.repeat} repetition(s)")
    for rep in range(args.repeat):
        for stack in stacks:
            why = available(stack)
            if why:
                if rep == 0:
                    print(f"  {stack}: skipped, {why}")
                continue
            for mode in ("send", "null", "recv"):
                log = out / f"client-{stack}-{mode}-{rep}.log"
                try:
                    r = uvloop_run(sink_and_run(stack, mode, args, log, procs))
                except Exception as exc:  # noqa: BLE001
                    print(f"  rep {rep} {stack} {mode}: failed: {exc!r} (see {log})", flush=True)
                    continue
                r["rep"] = rep
                results.setdefault(stack, {}).setdefault(mode, []).append(r)
                print(f"  rep {rep} {stack:<12} {mode:<5} {r['us_per_message']:7.2f} CPU-µs/msg  client "
                      f"{r['client_cpu_pct']:4.0f} %  machine {r['machine_pct']:3.0f} %  {r['messages']} msgs"
                      + (f"  ({r['note']})" if r.get("note") else ""), flush=True)
    print("\n  client stack    send µs/msg (gross)   send net of timers     recv µs/msg   (median [min-max])")
    summary = {}
    for stack, modes in results.items():
        sends = [r["us_per_message"] for r in modes.get("send", [])]
        nets = net_of_timers(modes.get("send", []), modes.get("null", []))
        recvs = [r["us_per_message"] for r in modes.get("recv", [])]
        summary[stack] = {"send": sends, "send_net": nets, "recv": recvs}
        print(f"  {stack:<14} {_spread(sends):>20} {_spread(nets):>20} {_spread(recvs):>18}")
    return {"runs": results, "summary": summary}


# --------------------------------------------------------------------------- main


def versions() -> str:
    from importlib import metadata

    found = []
    for name in ("uvicorn", "websockets", "wsproto", "granian", "aiohttp", "picows", "uvloop", "starlette", "orjson",
                 "msgspec"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"no {name}")
    return ", ".join(found)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_serve"]:
        serve_stack(argv[1], int(argv[2]))
        return 0
    if argv[:1] == ["_client"]:
        stack, port, mode, calls, groups, settle, seconds = argv[1:8]
        uvloop_run(client_role(stack, int(port), mode, int(calls), int(groups), float(settle), float(seconds)))
        sys.stdout.flush()
        os._exit(0)  # whatever connections are left: not measured
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("parts", nargs="*", default=[], metavar="PART",
                   help="json, server and/or client (default: all three)")
    p.add_argument("--stacks", nargs="+", default=[], metavar="STACK",
                   help=f"server stacks {SERVER_STACKS}, client stacks {CLIENT_STACKS} (default: all)")
    p.add_argument("--calls", type=int, default=150, help="connections (default 150)")
    p.add_argument("--groups", type=int, default=20, help="timer groups over each 20 ms (default 20)")
    p.add_argument("--seconds", type=float, default=10.0, help="measurement window (default 10)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds before the window (default 2)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions, interleaved (default 3)")
    p.add_argument("--granian-args", default="", metavar="ARGS",
                   help="extra granian command-line options, e.g. '--task-impl rust' (one string)")
    p.add_argument("--out", type=Path, help="logs and results.json (default: a new /tmp dir)")
    args = p.parse_args(argv)
    parts = args.parts or ["json", "server", "client"]
    GRANIAN_ARGS.extend(args.granian_args.split())
    if set(parts) - {"json", "server", "client"}:
        p.error(f"unknown part(s) {sorted(set(parts) - {'json', 'server', 'client'})}: json, server or client")
    unknown = [s for s in args.stacks if s not in SERVER_STACKS and s not in CLIENT_STACKS]
    if unknown:
        p.error(f"unknown stack(s) {' '.join(unknown)}: server stacks {' '.join(SERVER_STACKS)}; "
                f"client stacks {' '.join(CLIENT_STACKS)}")
    import tempfile

    out = args.out or Path(tempfile.mkdtemp(prefix="octi-ws-stacks-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"ws_stacks: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}; "
          f"load average {os.getloadavg()[0]:.2f}; logs in {out}")
    print(f"versions: {versions()}")
    results: dict[str, Any] = {"versions": versions(), "args": {k: str(v) for k, v in vars(args).items()},
                               "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}

    def on_term(_signum: int, frame: Any) -> None:
        """As relay.py, SIGTERM becomes KeyboardInterrupt, by way of the current SIGINT handler: in uvloop_run
        that is asyncio.Runner's (it cancels the main task, so the finally blocks that stop the processes run,
        then raises KeyboardInterrupt) rather than an exception in whatever callback the event loop is in."""
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    procs = Processes()
    status = 0
    try:
        if "json" in parts:
            results["json"] = json_part()
        if "server" in parts:
            results["server"] = server_part(args, out, procs)
        if "client" in parts:
            results["client"] = client_part(args, out, procs)
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped; the parts completed so far are saved", flush=True)
        status = 130
    finally:
        procs.stop_all()
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {out / 'results.json'}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
