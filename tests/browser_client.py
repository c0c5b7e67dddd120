"""A page of the browser channel, for the tests: the seed protocol over a real websocket, with a
playback queue that plays answer audio in real time and reports it as the softphone does; and
what every browser test does around it (sign in, start, read the call log)."""

from __future__ import annotations

import asyncio
import json
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import httpx
import websockets

from app.audio.convert import make_converter
from app.audio.formats import AudioFormat
from app.calllog.store import CallLogStore
from app.calllog.views import CallQuery
from tests.harness import AUDIO

PASSWORD = "poussins-2026"


def speech(name: str, rate: int = 24000, trailing_silence_ms: int = 0) -> bytes:
    """A test recording as PCM16 at `rate`, with silence after it."""
    with wave.open(str(AUDIO / name)) as wav:
        pcm, source = wav.readframes(wav.getnframes()), wav.getframerate()
    converted = make_converter(AudioFormat("pcm16", source), AudioFormat("pcm16", rate)).convert(pcm)
    return converted + b"\x00\x00" * (rate * trailing_silence_ms // 1000)


@dataclass
class Page:
    ws: Any
    rate: int
    report_playback: bool = True
    texts: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)  # everything received
    played: bytearray = field(default_factory=bytearray)  # what the queue gave out as played
    consumed: int = 0  # samples played or dropped: what `playback` reports
    reported: int = 0  # what the last `playback` sent said
    played_at_clear: int = 0  # bytes played when the last `clear_audio` came
    _queue: bytearray = field(default_factory=bytearray)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: tuple[int | None, str] | None = None

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def speak(self, pcm: bytes, chunk_ms: int = 20, real_time: bool = True) -> None:
        size = self.rate * chunk_ms // 1000 * 2
        started = perf_counter()
        for index, offset in enumerate(range(0, len(pcm), size)):
            await self.ws.send(pcm[offset:offset + size])
            if real_time:
                await asyncio.sleep(max(0.0, started + (index + 1) * chunk_ms / 1000 - perf_counter()))

    async def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The first text message (received already or later) matching `predicate`."""
        async with asyncio.timeout(timeout):
            seen = 0
            while True:
                for message in self.texts[seen:]:
                    if predicate(message):
                        return message
                seen = len(self.texts)
                if self.closed is not None:
                    raise AssertionError(f"socket closed {self.closed} before the message; got {self.texts}")
                self._changed.clear()
                await self._changed.wait()

    async def until_type(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        return await self.until(lambda m: m.get("type") == kind, timeout)

    async def played_out(self, timeout: float = 10.0) -> None:
        """Until the queue has played everything received so far, and said so (when it reports)."""
        async with asyncio.timeout(timeout):
            while self._queue or (self.report_playback and self.reported < self.consumed):
                await asyncio.sleep(0.02)

    async def wait_closed(self, timeout: float = 10.0) -> tuple[int | None, str]:
        async with asyncio.timeout(timeout):
            while self.closed is None:
                self._changed.clear()
                await self._changed.wait()
        return self.closed

    async def _receive(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    self.audio += message
                    self._queue += message
                else:
                    parsed = json.loads(message)
                    self.texts.append(parsed)
                    if parsed.get("type") == "clear_audio":
                        self.played_at_clear = len(self.played)
                        self.consumed += len(self._queue) // 2
                        self._queue.clear()
                        await self._report()
                self._changed.set()
        except websockets.ConnectionClosed:
            pass
        self.closed = (self.ws.close_code, self.ws.close_reason)
        self._changed.set()

    async def _play(self) -> None:
        """The speaker: 20 ms of queued audio every 20 ms, reported every 60 ms and whenever the
        queue runs dry."""
        step = self.rate // 50 * 2
        ticks = 0
        while self.closed is None:
            await asyncio.sleep(0.02)
            if self._queue:
                chunk = bytes(self._queue[:step])
                del self._queue[:step]
                self.played += chunk
                self.consumed += len(chunk) // 2
                ticks += 1
                if ticks % 3 == 0 or not self._queue:
                    await self._report()

    async def _report(self) -> None:
        if self.report_playback and self.closed is None:
            try:
                await self.send_json({"type": "playback", "samples": self.consumed})
            except websockets.ConnectionClosed:
                pass
            else:
                self.reported = self.consumed


class open_page:
    """`async with open_page(url, token=...) as page`: connected, receiving and playing."""

    def __init__(self, url: str, *, token: str | None = None, rate: int | None = None, origin: str | None = None,
                 report_playback: bool = True, path: str = "/ws/realtime") -> None:
        query = [f"token={token}"] if token else []
        if rate:
            query.append(f"sample_rate={rate}")
        self._url = url.replace("http", "ws", 1) + path + ("?" + "&".join(query) if query else "")
        self._origin = origin
        self._rate = rate or 24000
        self._report = report_playback

    async def __aenter__(self) -> Page:
        self._ws = await websockets.connect(self._url, origin=self._origin, max_size=None)
        self.page = Page(self._ws, self._rate, self._report)
        self._tasks = [asyncio.create_task(self.page._receive()), asyncio.create_task(self.page._play())]
        return self.page

    async def __aexit__(self, *exc: object) -> None:
        await self._ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def sign_in(line, username: str = "marie") -> str:
    await line.service.browser.users.add(username, PASSWORD)
    async with httpx.AsyncClient(base_url=line.url) as client:
        response = await client.post("/api/web/token", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    assert response.cookies.get("octi_web_token") == response.json()["token"]
    return response.json()["token"]


async def started(page: Page) -> None:
    await page.send_json({"type": "start_conversation"})
    await page.until_type("ready")


async def stored_calls(line):
    """Every call as stored, once the conversations have ended and the writer has flushed."""
    while line.metrics.active_calls:
        await asyncio.sleep(0.05)
    assert await line.service.calllog.flush(timeout=15)
    async with await CallLogStore.open(line.settings.effective_database_url) as store:
        calls, _ = await store.list_calls(CallQuery())
        return [await store.get_call(call.id) for call in calls]
