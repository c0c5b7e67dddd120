"""Per-call, per-direction conversion between two `AudioFormat`s.

Each converter owns its own resampler state, so build one per call and per direction
(caller -> model, model -> caller) and call `reset()` when the stream restarts (barge-in).
"""

from __future__ import annotations

from typing import Protocol

from app.audio.formats import AudioFormat
from app.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from app.audio.resampler import StreamingResampler


class AudioConverter(Protocol):
    def convert(self, data: bytes) -> bytes:
        """Convert one chunk; returns whatever output is complete (possibly b"")."""
        ...

    def reset(self) -> None:
        """Drop buffered history so the next chunk starts a fresh stream."""
        ...


class _Passthrough:
    """Source and target are the same format: hand the bytes back untouched, no copy."""

    __slots__ = ()

    def convert(self, data: bytes) -> bytes:
        return data

    def reset(self) -> None:
        pass


class _Converter:
    """Decode to PCM16 if needed, resample if the rates differ, encode to μ-law if needed."""

    __slots__ = ("_decode", "_resampler", "_encode", "_carry")

    def __init__(self, source: AudioFormat, target: AudioFormat) -> None:
        self._decode = source.encoding == "pcmu"
        self._encode = target.encoding == "pcmu"
        self._resampler = StreamingResampler(source.rate, target.rate) if source.rate != target.rate else None
        self._carry = b""

    def convert(self, data: bytes) -> bytes:
        if self._decode:
            # One μ-law byte is one whole sample: nothing can be left dangling.
            pcm = ulaw_to_pcm16(data)
        else:
            # PCM16 may arrive split mid-sample; keep the odd byte for the next chunk.
            pcm = self._carry + data if self._carry else data
            if len(pcm) & 1:
                self._carry = bytes(pcm[-1:])
                pcm = pcm[:-1]
            else:
                self._carry = b""
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        if self._encode:
            return pcm16_to_ulaw(pcm)
        return bytes(pcm)

    def reset(self) -> None:
        self._carry = b""
        if self._resampler is not None:
            self._resampler.reset()


def make_converter(source: AudioFormat, target: AudioFormat) -> AudioConverter:
    """A converter from `source` to `target` with its own state.

    Raises ValueError for encodings we do not know or rates that are not an integer ratio.
    """
    for fmt in (source, target):
        if fmt.encoding not in ("pcmu", "pcm16"):
            raise ValueError(f"unsupported encoding {fmt.encoding!r}")
    if source == target:
        return _Passthrough()
    return _Converter(source, target)
