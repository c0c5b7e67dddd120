"""The audio formats that cross our sockets, and their arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """Mono audio: `pcmu` is G.711 μ-law (1 byte per sample), `pcm16` is 16-bit little-endian."""

    encoding: Literal["pcmu", "pcm16"]
    rate: int

    @property
    def bytes_per_sample(self) -> int:
        return 1 if self.encoding == "pcmu" else 2

    @property
    def bytes_per_ms(self) -> float:
        return self.rate * self.bytes_per_sample / 1000

    def duration_ms(self, n_bytes: int) -> float:
        return n_bytes / self.bytes_per_ms

    def frame_bytes(self, frame_ms: int = 20) -> int:
        return int(self.rate * frame_ms / 1000) * self.bytes_per_sample

    @property
    def silence_byte(self) -> bytes:
        return b"\xff" if self.encoding == "pcmu" else b"\x00"


TELEPHONE_ULAW = AudioFormat("pcmu", 8000)
REALTIME_PCM16 = AudioFormat("pcm16", 24000)
