"""Per-call, per-direction conversion between two `AudioFormat`s.

Each converter owns its own resampler state, so build one per call and per direction
(caller -> model, model -> caller) and call `reset()` when the stream restarts (barge-in).
"""

from __future__ import annotations

from math import lcm
from typing import Protocol

from app.audio.formats import AudioFormat
from app.audio.g711 import ulaw_to_pcm16
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
    """Decode μ-law if needed, then resample and encode in one StreamingResampler.

    The resampler also covers equal rates (PCM16 handed back as is, or encoded), and it
    carries a PCM16 byte split across chunks, so the converter itself keeps no state.
    """

    __slots__ = ("_decode", "_resampler")

    def __init__(self, source: AudioFormat, target: AudioFormat) -> None:
        self._decode = source.encoding == "pcmu"
        ulaw_out = target.encoding == "pcmu"
        self._resampler = StreamingResampler(source.rate, target.rate, ulaw_out=ulaw_out)

    def convert(self, data: bytes) -> bytes:
        if self._decode:
            # One μ-law byte is one whole sample: nothing can be left dangling.
            data = ulaw_to_pcm16(data)
        return self._resampler.process(data)

    def reset(self) -> None:
        self._resampler.reset()


class _ViaCommonRate:
    """Rates that are not an integer ratio (16 <-> 24 kHz): up to their least common multiple,
    then down, each step a `_Converter`. Off the phone line's hot path."""

    __slots__ = ("_up", "_down")

    def __init__(self, source: AudioFormat, target: AudioFormat) -> None:
        common = AudioFormat("pcm16", lcm(source.rate, target.rate))
        self._up = _Converter(source, common)
        self._down = _Converter(common, target)

    def convert(self, data: bytes) -> bytes:
        return self._down.convert(self._up.convert(data))

    def reset(self) -> None:
        self._up.reset()
        self._down.reset()


# Beyond this, the common rate of two rates is not worth resampling through.
MAX_COMMON_RATE = 96_000


def make_converter(source: AudioFormat, target: AudioFormat) -> AudioConverter:
    """A converter from `source` to `target` with its own state.

    Raises ValueError for encodings we do not know, or rates whose common multiple is above
    MAX_COMMON_RATE.
    """
    for fmt in (source, target):
        if fmt.encoding not in ("pcmu", "pcm16"):
            raise ValueError(f"unsupported encoding {fmt.encoding!r}")
    if source == target:
        return _Passthrough()
    high, low = max(source.rate, target.rate), min(source.rate, target.rate)
    if high % low == 0:
        return _Converter(source, target)
    if lcm(high, low) > MAX_COMMON_RATE:
        raise ValueError(f"{source.rate} -> {target.rate} Hz: no common rate up to {MAX_COMMON_RATE}")
    return _ViaCommonRate(source, target)
