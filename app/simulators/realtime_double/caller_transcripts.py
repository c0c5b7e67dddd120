"""The caller's words, scripted, delivered as the session's transcription model would
(`app.simulators.transcriber`): streamed while the caller speaks, or after the commit.

A turn the VAD found gets the script's next words only once voice was heard in it
(`EnergyVad.heard_voice`): a noise burst is a turn without words, and takes none from the script."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import TYPE_CHECKING

from websockets.exceptions import ConnectionClosed

from app.engines.openai_realtime import models
from app.simulators import transcriber
from app.simulators.realtime_double.formats import UNITS_PER_MS
from app.simulators.realtime_double.items import ConversationItem
from app.simulators.transcriber import StreamedUtterance

if TYPE_CHECKING:
    from app.simulators.realtime_double.connection import DoubleConnection


class CallerTranscripts:
    """Transcription of one connection's user turns; positions are on the audio timeline."""

    def __init__(self, connection: DoubleConnection) -> None:
        self.connection = connection
        self._streams: dict[str, StreamedUtterance] = {}
        self._unvoiced: dict[str, int] = {}  # turns the VAD found with no voice yet, by onset

    @property
    def model(self) -> str:
        return (self.connection.session["audio"]["input"]["transcription"] or {}).get("model") or ""

    @property
    def streaming(self) -> bool:
        return models.streams_transcription(self.model)

    def speech_started(self, item_id: str, onset: int) -> None:
        self._unvoiced[item_id] = onset

    def voice_heard(self, item_id: str) -> None:
        """A turn has voice in it: it has words, streamed from its onset by a streaming model."""
        onset = self._unvoiced.pop(item_id, None)
        if onset is not None and self.streaming:
            self._streams[item_id] = self._streamed(item_id, onset)

    def speech_stopped(self, item_id: str, end: int) -> None:
        """The VAD heard silence: the caller stopped at `end`, the start of that silence."""
        stream = self._streams.get(item_id)
        if stream is not None:
            stream.speech_ended(max(end, stream.onset))

    def buffer_committed(self, item_id: str, onset: int, end: int) -> None:
        """The client committed the buffer from `onset` to `end` (without a VAD, the words
        stream from the commit)."""
        stream = self._streams.get(item_id)
        if stream is None and self.streaming:
            stream = self._streams[item_id] = self._streamed(item_id, onset)
        if stream is not None:
            stream.speech_ended(end)

    def buffer_cleared(self, item_id: str) -> None:
        self._streams.pop(item_id, None)
        self._unvoiced.pop(item_id, None)

    async def transcribe(self, item: ConversationItem, audio_ms: int, position: int) -> None:
        """A turn became a conversation item: the model knows its words at once, the client gets
        them as the transcription model delivers them, if the session asked for a transcription."""
        item_id = item.data["id"]
        stream = self._streams.get(item_id)
        noise = self._unvoiced.pop(item_id, None) is not None
        if stream is not None:
            item.heard = stream.transcript
        else:
            item.heard = "" if noise else self.connection.next_transcript()
        if self.connection.session["audio"]["input"]["transcription"] is None:
            self._streams.pop(item_id, None)
            return
        if stream is not None:
            stream.committed = True
            await self.send_due_words(position)
            self.connection.spawn(self._stream_after_commit(item_id, stream, position))
        elif noise and self.streaming:  # nothing was streamed: the empty text comes with the commit
            await self._completed(item_id, "", audio_ms)
        else:
            self.connection.spawn(self._transcribe_committed(item, audio_ms))

    async def send_due_words(self, position: int) -> None:
        """Words the streaming model has heard by `position`, then completions."""
        for item_id, stream in list(self._streams.items()):
            await self._send_due(item_id, stream, position)

    async def _send_due(self, item_id: str, stream: StreamedUtterance, position: int) -> None:
        text = stream.due(position)
        if text:
            await self.connection.send({"type": "conversation.item.input_audio_transcription.delta",
                                        "item_id": item_id, "content_index": 0, "delta": text})
        if stream.completion_due() and self._streams.get(item_id) is stream:
            del self._streams[item_id]
            item = self.connection.items.by_id.get(item_id)
            audio_ms = item.audio_ms if item is not None else 0
            await self._completed(item_id, stream.transcript, audio_ms)

    async def _stream_after_commit(self, item_id: str, stream: StreamedUtterance, position: int) -> None:
        """Once the turn is committed the transcription model goes on by itself, as the
        service's does: the words still due come at the pace of real time, whether or not more
        audio arrives (a client may send quiet audio in bursts, or none)."""
        units_per_second = UNITS_PER_MS * 1000
        committed_at = time.monotonic()
        with contextlib.suppress(ConnectionClosed):
            while self._streams.get(item_id) is stream:
                now = position + round((time.monotonic() - committed_at) * units_per_second)
                due = stream.next_due()
                if due is not None and due > now:
                    await asyncio.sleep((due - now) / units_per_second)
                    continue
                await self._send_due(item_id, stream, max(now, self.connection.input_audio.total_units))
                if due is None:  # all sent: completed, or never to be
                    return

    def _streamed(self, item_id: str, onset: int) -> StreamedUtterance:
        transcription = self.connection.session["audio"]["input"]["transcription"] or {}
        lag = self.connection.double.stream_lag_seconds
        if lag is None:
            lag = transcriber.STREAM_LAG_SECONDS[transcription.get("delay") or transcriber.DEFAULT_DELAY]
        return StreamedUtterance.start(item_id, self.connection.next_transcript(), onset, lag, UNITS_PER_MS * 1000)

    async def _transcribe_committed(self, item: ConversationItem, audio_ms: int) -> None:
        """A model that does not stream: the whole text, some time after the commit."""
        await asyncio.sleep(self.connection.transcription_seconds)
        transcript = item.heard or ""
        with contextlib.suppress(ConnectionClosed):
            for piece in _word_chunks(transcript, 3) if transcript else ():
                await self.connection.send({"type": "conversation.item.input_audio_transcription.delta",
                                            "item_id": item.data["id"], "content_index": 0, "delta": piece})
            await self._completed(item.data["id"], transcript, audio_ms)

    async def _completed(self, item_id: str, transcript: str, audio_ms: int) -> None:
        item = self.connection.items.by_id.get(item_id)
        if item is not None and item.data.get("content"):
            item.data["content"][0]["transcript"] = transcript
        await self.connection.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
                "usage": transcriber.transcription_usage(self.model, transcript, audio_ms),
            }
        )


def _word_chunks(text: str, count: int) -> list[str]:
    """Split into at most `count` pieces on word boundaries; the pieces concatenate to `text`."""
    words = text.split(" ")
    size = max(1, math.ceil(len(words) / count))
    pieces = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [piece + " " for piece in pieces[:-1]] + pieces[-1:]
