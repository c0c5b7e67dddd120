"""The browser's websocket as a `CallChannel`.

Playback is tracked by sample count: each chunk of answer audio sent ends at a known sample
position, and its mark is acknowledged once the page reports (`playback`) that its queue has
given out that many samples. A page that has never reported (the seed's own client) plays
what it gets and says nothing: its marks are acknowledged by the clock instead, once the
audio sent up to each had time to play, back to back from when it was sent, as a real player
would. Otherwise every answer would stay unheard for good: the caller's next question would
cut the last one and count as a barge-in, and a goodbye or the silence watcher would wait
for a playback that never ends.

What the page sends faster than it may (`pacing.py`) is dropped with an error, or ends the
conversation with a close (1008).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from time import perf_counter

from app.agent import phrases
from app.audio.formats import AudioFormat
from app.channels.browser import pacing, wire
from app.channels.contract import (
    AnswerEnded,
    AnswerWords,
    CallerAudio,
    CallerInterrupts,
    CallerText,
    CallIdentity,
    CallOutcome,
    ChannelEvent,
    ChannelUpdate,
    ConversationReset,
    Notice,
    PlaybackMark,
    SessionReady,
    TurnEnded,
)
from app.calllog.records import CallRecord
from app.channels.dropped import DroppedMessages
from app.channels.websocket_io import POLICY_VIOLATION, FrameSocket, SocketClosed, close_code
from app.metrics import Metrics


class BrowserChannel:
    def __init__(self, websocket: FrameSocket, identity: CallIdentity, audio_format: AudioFormat, *,
                 max_seconds: float | None, metrics: Metrics, submit: Callable[[CallRecord], None]) -> None:
        self._ws = websocket
        self.identity = identity
        self.audio_format = audio_format
        self.max_seconds = max_seconds
        self._dropped = DroppedMessages(metrics, call_id=identity.call_id, submit=submit)
        self._pacing = pacing.Pacing(audio_format)
        self._sent_samples = 0
        # (sample position where a chunk ends, when a page playing in real time is through it, its mark)
        self._pending: deque[tuple[int, float, str]] = deque()
        self._played_out_at = 0.0  # when a page playing in real time is through all it was sent
        self._reports = False  # the page sends `playback`: its reports, not the clock, say what played
        # The page's frames (one at a time: a slow conversation holds the socket back), and
        # between them the marks the clock acknowledges while `events` waits for a frame.
        self._inbox: asyncio.Queue[str | bytes | PlaybackMark | None] = asyncio.Queue(maxsize=1)
        self._closed = False

    async def events(self) -> AsyncIterator[ChannelEvent]:
        reader = asyncio.create_task(self._read(), name="browser-reader")
        try:
            while (frame := await self._next()) is not None:
                if isinstance(frame, PlaybackMark):
                    yield frame
                    continue
                try:
                    message = wire.parse_client(frame)
                    self._pacing.check(message)
                except pacing.Flooding as exc:
                    await self.refuse_frame(exc)
                    await self._close(POLICY_VIOLATION)
                    return
                except wire.WireError as exc:
                    await self.refuse_frame(exc)
                    continue
                match message:
                    case bytes():
                        yield CallerAudio(message, perf_counter())
                    case wire.Playback(samples=samples):
                        self._reports = True
                        mark = self._played(samples)
                        if mark is not None:
                            yield PlaybackMark(mark)
                    case wire.UserAudioEnd():
                        yield TurnEnded()
                    case wire.ResetSession():
                        yield ConversationReset()
                    case wire.UserText(text=text):
                        yield CallerText(text)
                    case wire.Interrupt():
                        yield CallerInterrupts()
                    case wire.StartConversation():
                        pass  # started already: nothing to do
        finally:
            reader.cancel()

    async def refuse_frame(self, exc: wire.WireError) -> None:
        """A frame the protocol does not allow: say so, and carry on."""
        self._dropped.drop(exc.code, str(exc))
        await self._send(wire.error(str(exc), exc.code))

    async def _read(self) -> None:
        while (frame := await self._ws.receive()) is not None:
            await self._inbox.put(frame)
        await self._inbox.put(None)

    async def _next(self) -> str | bytes | PlaybackMark | None:
        """A mark the clock acknowledged while the last frame was handled, else what comes next."""
        if (mark := self._played_by_clock()) is not None:
            return PlaybackMark(mark)
        return await self._inbox.get()

    def _played(self, samples: int) -> str | None:
        """The last mark whose chunk the page has finished with, if any."""
        mark = None
        while self._pending and self._pending[0][0] <= samples:
            mark = self._pending.popleft()[2]
        return mark

    def _played_by_clock(self) -> str | None:
        """The last mark whose chunk has had time to play, for a page that has never reported."""
        if self._reports:
            return None
        now = perf_counter()
        mark = None
        while self._pending and self._pending[0][1] <= now:
            mark = self._pending.popleft()[2]
        return mark

    def _clock_tick(self) -> None:
        """A chunk has had time to play: `events`, waiting for a frame, hears of it at once (were
        a frame waiting, `_next` looks at the clock before taking it)."""
        if self._inbox.empty() and (mark := self._played_by_clock()) is not None:
            self._inbox.put_nowait(PlaybackMark(mark))

    async def _send(self, message: str | bytes) -> None:
        if self._closed:
            return
        try:
            await self._ws.send(message)
        except SocketClosed:
            self._closed = True

    async def send_audio(self, audio: bytes, mark: str) -> None:
        samples = len(audio) // 2
        now = perf_counter()
        self._sent_samples += samples
        self._played_out_at = max(now, self._played_out_at) + samples / self.audio_format.rate
        self._pending.append((self._sent_samples, self._played_out_at, mark))
        if not self._reports:
            asyncio.get_running_loop().call_later(self._played_out_at - now, self._clock_tick)
        await self._send(audio)

    async def clear_playback(self) -> None:
        # The page drops its queue and counts the dropped samples as gone: what is pending
        # was not heard, and later reports start from everything sent so far.
        self._pending.clear()
        self._played_out_at = 0.0
        await self._send(wire.CLEAR_AUDIO)

    async def show(self, update: ChannelUpdate) -> None:
        match update:
            case SessionReady():
                await self._send(wire.READY)
            case AnswerWords(text=text):
                await self._send(wire.transcript_delta(text))
            case AnswerEnded():
                await self._send(wire.BOT_AUDIO_END)
            case Notice(message=message, code=code):
                await self._send(wire.error(message, code))

    def transfer_unavailable(self) -> str | None:
        return phrases.TRANSFER_BY_PHONE_ONLY

    async def transfer(self, summary: str) -> str | None:
        return phrases.TRANSFER_BY_PHONE_ONLY

    def texts_unavailable(self) -> str | None:
        return phrases.SMS_BY_PHONE_ONLY

    async def send_text(self, text: str) -> None:
        raise RuntimeError(phrases.SMS_BY_PHONE_ONLY)

    async def end(self, outcome: CallOutcome) -> None:
        if outcome != CallOutcome.ERROR:
            # Over, not failed: a page that reconnects after a drop must not start another
            # conversation (and another greeting) by itself.
            await self._send(wire.ended(outcome.value))
        await self._close(close_code(outcome))

    async def _close(self, code: int) -> None:
        if not self._closed:
            self._closed = True
            await self._ws.close(code)
