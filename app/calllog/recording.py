"""A stereo recording of a call (left: the caller, right: OCTI) on the caller's timeline.

The caller's side is every frame received, in order: frame n sits at n × 20 ms. OCTI's side
follows the far end's playback buffer: a chunk starts playing when it arrives or when the
previous one ends, whichever is later, and a `clear` silences whatever was still queued, so
a barge-in is heard in the recording exactly where it happened.
"""

from __future__ import annotations

import asyncio
import audioop
import wave
from pathlib import Path

from app.audio.convert import make_converter
from app.audio.formats import AudioFormat

# Telephone quality is what the caller had.
RECORDING_FORMAT = AudioFormat("pcm16", 8000)


class StereoRecorder:
    def __init__(self, caller_format: AudioFormat) -> None:
        self._format = caller_format
        self._caller = bytearray()
        self._assistant = bytearray()
        self._assistant_end = 0  # byte offset where OCTI's queued audio ends

    def _offset(self, ms: float) -> int:
        return int(ms * self._format.rate / 1000) * self._format.bytes_per_sample

    def caller_audio(self, audio: bytes) -> None:
        self._caller += audio

    def assistant_audio(self, audio: bytes, at_ms: float) -> None:
        """Audio sent to the caller at `at_ms` (ms since the stream started)."""
        start = max(self._offset(at_ms), self._assistant_end)
        end = start + len(audio)
        if len(self._assistant) < end:
            self._assistant += self._format.silence_byte * (end - len(self._assistant))
        self._assistant[start:end] = audio
        self._assistant_end = end

    def clear(self, at_ms: float) -> None:
        """The caller's playback was cleared at `at_ms`: nothing queued after it was heard."""
        cut = self._offset(at_ms)
        if cut < len(self._assistant):
            del self._assistant[cut:]
        self._assistant_end = min(self._assistant_end, cut)

    async def write(self, path: Path) -> Path:
        return await asyncio.to_thread(self._write, path, bytes(self._caller), bytes(self._assistant))

    def _write(self, path: Path, caller: bytes, assistant: bytes) -> Path:
        left, right = self._linear(caller), self._linear(assistant)
        length = max(len(left), len(right))
        left += b"\x00" * (length - len(left))
        right += b"\x00" * (length - len(right))
        stereo = audioop.add(audioop.tostereo(left, 2, 1, 0), audioop.tostereo(right, 2, 0, 1), 2)
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(2)
            wav.setsampwidth(2)
            wav.setframerate(RECORDING_FORMAT.rate)
            wav.writeframes(stereo)
        return path

    def _linear(self, audio: bytes) -> bytes:
        return make_converter(self._format, RECORDING_FORMAT).convert(audio)
