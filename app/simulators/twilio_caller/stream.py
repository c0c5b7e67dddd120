"""The <Connect><Stream> websocket, Twilio's side: the upgrade, a `media` frame every 20 ms for the
whole call with the caller's speech, DTMF and raw messages, the server's messages checked and
played back, then the hang-up or the server's close."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections import deque
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

from app.simulators import twilio_wire as wire
from app.simulators.twilio_caller.playback import Playback
from app.simulators.twilio_caller.records import MarkEcho
from app.simulators.twilio_caller.speech import CallerSpeech
from app.simulators.twilio_caller.timeline import CallTimeline
from app.simulators.twilio_caller.webhooks import TwilioRequests
from app.simulators.twilio_wire import BYTES_PER_MS, FRAME_MS, Violation

STREAM_USER_AGENT = "Twilio.TmeWs/1.0"


class _Skip:
    def __repr__(self) -> str:
        return "SKIP"


SKIP: Any = _Skip()
"""Return this from a `send_hook` to drop the message (its sequence number stays used)."""

SendHook = Callable[[dict[str, Any]], "dict[str, Any] | str | bytes | None | Awaitable[Any]"]


class MediaStream:
    """One media stream of a call, from the upgrade to the close."""

    def __init__(self, requests: TwilioRequests, timeline: CallTimeline, playback: Playback, speech: CallerSpeech,
                 *, sign_stream: bool, extra_stream_headers: dict[str, str] | None,
                 send_hook: SendHook | None, stop_requested: asyncio.Event | None = None) -> None:
        self.requests = requests
        self.result = requests.result
        self.timeline = timeline
        self.playback = playback
        self.speech = speech
        self.sign_stream = sign_stream
        self.extra_stream_headers = dict(extra_stream_headers or {})
        self.send_hook = send_hook
        # Set when Twilio itself ends the stream (a REST hang-up or redirect): stop, then close.
        self.stop_requested = stop_requested or asyncio.Event()
        self.ws: ClientConnection | None = None
        self.send_lock = asyncio.Lock()
        self.seq = 0
        self.chunk = 0
        self.caller_closing = False
        self.server_closed = asyncio.Event()
        self.stream_name: str | None = None
        self.played = bytearray()  # what the caller heard, one μ-law byte per sample of the stream
        self.sent = bytearray()  # what the caller sent, the same way

    async def send(self, build: Callable[[int], dict[str, Any]] | dict[str, Any] | str | bytes, *,
                   numbered: bool = True, verbatim: bool = False) -> int | None:
        """Send one message; returns its sequence number (0 when unnumbered), None when the hook dropped it.

        Sequence numbers are taken under the lock so that the wire order matches them.
        """
        assert self.ws is not None
        async with self.send_lock:
            if numbered:
                self.seq += 1
            seq = self.seq if numbered else 0
            out: Any = build(self.seq) if callable(build) else build
            if self.send_hook is not None and not verbatim:
                hooked = self.send_hook(out)
                if inspect.isawaitable(hooked):
                    hooked = await hooked
                if hooked is SKIP:
                    return None
                if hooked is not None:
                    out = hooked
            await self.ws.send(out if isinstance(out, (str, bytes)) else json.dumps(out, separators=(",", ":")))
            return seq

    async def open(self) -> bool:
        r = self.result
        assert r.stream_url is not None
        url = wire.map_to_server(r.stream_url, server_url=self.requests.server_url,
                                 public_url=self.requests.public_url, websocket=True, tunnels=r.tunnels)
        r.stream_connect_url = url
        headers = self.requests.signed(r.stream_url, {}) if self.sign_stream else {}
        headers.update(self.extra_stream_headers)
        self.timeline.log("sent", "stream_connect", url=r.stream_url, connect_url=url)
        try:
            # No proxy from the environment, no compression: Twilio talks straight to the host.
            self.ws = await connect(url, additional_headers=headers, user_agent_header=STREAM_USER_AGENT,
                                    compression=None, proxy=None, max_size=2**24, open_timeout=10,
                                    close_timeout=2)
        except InvalidStatus as exc:
            r.status = "refused_stream"
            r.stream_http_status = exc.response.status_code
            self.timeline.log("received", "stream_refused", http_status=exc.response.status_code)
            self.requests.status_callback("stream-error", self.stream_name,
                                          f"31920: stream handshake answered HTTP {exc.response.status_code}")
            return False
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            r.status = "stream_unreachable"
            r.errors.append(f"stream {url}: {type(exc).__name__}: {exc}")
            self.requests.status_callback("stream-error", self.stream_name, f"31901: {type(exc).__name__}")
            return False
        r.stream_http_status = self.ws.response.status_code if self.ws.response else 101
        return True

    async def run(self) -> None:
        r, timeline = self.result, self.timeline
        stream = self.requests.twiml.stream
        assert self.ws is not None and stream is not None
        r.stream_sid = wire.new_sid("MZ")
        self.stream_name = stream.name
        reader = asyncio.create_task(self._read())
        try:
            await self.send(wire.connected_message(), numbered=False)
            timeline.log("sent", "connected")
            seq = await self.send(lambda seq: wire.start_message(
                seq, stream_sid=r.stream_sid or "", account_sid=r.account_sid, call_sid=r.call_sid,
                custom_parameters=r.custom_parameters))
            timeline.start_stream(seq=seq, streamSid=r.stream_sid)
            self.requests.status_callback("stream-started", self.stream_name)
            await self._pump()
        except ConnectionClosed:
            pass  # the server went away mid-send; the reader records how
        finally:
            if timeline.t0 is None:
                timeline.start(timeline.origin)
            timeline.stop()
            if self.server_closed.is_set() or self.ws.state is not State.OPEN:
                self.playback.finish("server_close")
            else:
                self.playback.finish("hangup")
                await self._hang_up()
            await asyncio.wait({reader}, timeout=5)
            if not reader.done():
                reader.cancel()
            if r.closed_by is None:
                self._record_server_close()
        r.duration_s = self.chunk * FRAME_MS / 1000
        self.requests.status_callback("stream-stopped", self.stream_name)

    async def _hang_up(self) -> None:
        assert self.ws is not None
        r = self.result
        self.caller_closing = True
        try:
            seq = await self.send(lambda seq: wire.stop_message(seq, stream_sid=r.stream_sid or "",
                                                                account_sid=r.account_sid, call_sid=r.call_sid))
            self.timeline.log("sent", "stop", seq=seq, media_frames=self.chunk)
            await self.ws.close(1000)
        except ConnectionClosed:
            self.caller_closing = False  # the server closed first: it is the one who ended the stream
            return
        r.closed_by = "caller"
        r.close_code, r.close_reason = 1000, ""
        self.timeline.log("sent", "close", code=1000)

    def _record_server_close(self) -> None:
        assert self.ws is not None
        r = self.result
        received = getattr(self.ws.protocol, "close_rcvd", None)
        r.closed_by = "server"
        r.close_code = received.code if received else 1006  # 1006: the TCP connection just dropped
        r.close_reason = received.reason if received else ""
        self.timeline.log("received", "close", code=r.close_code, reason=r.close_reason)

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for frame in self.ws:
                try:
                    await self._on_frame(frame)
                except ConnectionClosed:
                    raise
                except Exception as exc:  # one bad frame must not stop the call; keep the trace
                    self.result.errors.append(f"handling a server frame: {type(exc).__name__}: {exc}")
        except ConnectionClosed:
            pass
        finally:
            if not self.caller_closing and self.result.closed_by is None:
                self._record_server_close()
                self.server_closed.set()

    async def _on_frame(self, frame: str | bytes) -> None:
        timeline = self.timeline
        started = timeline.t0 is not None
        checked = wire.check_server_frame(frame, stream_sid=self.result.stream_sid if started else None)
        for v in checked.violations:
            timeline.violation(v, checked.event)
        message = checked.message
        if message is None:
            timeline.log("received", checked.event or "invalid", dropped=True,
                         violations=[v.kind for v in checked.violations],
                         bytes=len(frame) if isinstance(frame, bytes) else len(frame.encode()))
            return
        flags = {"violations": [v.kind for v in checked.violations]} if checked.violations else {}
        if message.event == "media":
            refused = self.playback.append(message.payload)
            if refused:
                if self.playback.discarded_bytes == refused:  # Twilio logs it once per stream
                    timeline.violation(Violation("31931", "media_discarded",
                                                 "over ~10 minutes of audio buffered; media dropped"), "media")
                flags["discarded_bytes"] = refused
            timeline.log("received", "media", bytes=len(message.payload),
                         backlog_ms=self.playback.backlog / BYTES_PER_MS, **flags)
        elif message.event == "mark":
            timeline.log("received", "mark", name=message.name, **flags)
            if self.playback.add_mark(message.name):
                await self._echo_mark(message.name, played=True)
        else:  # clear
            record = self.playback.clear(round(timeline.now(), 4))
            timeline.log("received", "clear", burst=record.burst, played_ms=record.played_ms,
                         flushed_ms=record.flushed_ms, marks=record.marks, **flags)
            for name in record.marks:
                await self._echo_mark(name, played=False)

    async def _echo_mark(self, name: str, *, played: bool) -> None:
        seq = await self.send(lambda seq: wire.mark_message(seq, stream_sid=self.result.stream_sid or "", name=name))
        self.result.marks_echoed.append(MarkEcho(name=name, t=round(self.timeline.now(), 4), played=played))
        self.timeline.log("sent", "mark", name=name, seq=seq, played=played, **({} if seq else {"skipped": True}))

    async def _pump(self) -> None:
        """The media clock: every 20 ms, due marks, what the caller hears, DTMF, raw messages, and
        one media frame, until the script or the server ends the call."""
        timeline = self.timeline
        assert timeline.t0 is not None
        script = self.speech.script
        hangup_ms = round(script.hangup_after * 1000)
        dtmf = deque(sorted((round(t * 1000), d) for t, d in script.dtmf))
        raw = deque(sorted(((round(t * 1000), m) for t, m in script.raw_messages), key=lambda x: x[0]))
        n = 0
        while True:
            tick_ms = n * FRAME_MS
            if timeline.realtime:
                # Absolute deadlines on the loop clock: a late wake-up never shifts later ticks.
                deadline = timeline.t0 + tick_ms / 1000
                # sleep(0) when behind still lets the reader in while catching up.
                await asyncio.sleep(max(0.0, deadline - timeline.loop.time()))
                lag_ms = (timeline.loop.time() - deadline) * 1000
                self.result.max_tick_lag_ms = max(self.result.max_tick_lag_ms, lag_ms)
            else:
                await asyncio.sleep(0)
            if self.server_closed.is_set() or self.stop_requested.is_set():
                return
            timeline.media_ms = tick_ms
            if tick_ms >= hangup_ms or (not dtmf and not raw and self.speech.done(tick_ms)):
                return
            for name in self.playback.due_marks():
                await self._echo_mark(name, played=True)
            self.played += self.playback.play(tick_ms)
            while dtmf and dtmf[0][0] <= tick_ms:
                digit = dtmf.popleft()[1]
                seq = await self.send(lambda seq: wire.dtmf_message(seq, stream_sid=self.result.stream_sid or "",
                                                                    digit=digit))
                timeline.log("sent", "dtmf", digit=digit, seq=seq)
            while raw and raw[0][0] <= tick_ms:
                message = raw.popleft()[1]
                await self.send(message, numbered=False, verbatim=True)
                timeline.log("sent", "raw", binary=isinstance(message, bytes), bytes=len(message))
            frame = self.speech.frame(tick_ms, chunk=self.chunk + 1)
            self.sent += frame
            self.chunk += 1
            chunk = self.chunk
            await self.send(lambda seq: wire.media_message(seq, stream_sid=self.result.stream_sid or "", chunk=chunk,
                                                           timestamp_ms=tick_ms, payload=frame))
            self.result.media_frames_sent = self.chunk
            n += 1
