"""G.711 μ-law <-> 16-bit linear PCM (mono, little-endian on the little-endian hosts we run on).

`audioop` is stdlib up to Python 3.12 and comes from the `audioop-lts` package on 3.13+.
Its C codec is the standard G.711 table, far faster than anything written in numpy.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np

with warnings.catch_warnings():
    # Python 3.11/3.12 warn that stdlib audioop is deprecated; audioop-lts takes over on 3.13+.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def ulaw_to_pcm16(data: bytes) -> bytes:
    """Decode μ-law bytes (one per sample) to PCM16; the result is twice as long."""
    return audioop.ulaw2lin(data, 2)


def ulaw_level(data: bytes) -> int:
    """RMS of μ-law audio as PCM16 (0 for digital silence): how loud a chunk is."""
    return audioop.rms(audioop.ulaw2lin(data, 2), 2) if data else 0


def pcm16_level(data: bytes) -> int:
    """RMS of PCM16 audio: how loud a chunk is. A byte left over (a sample split between two
    chunks) is not counted."""
    return audioop.rms(data[: len(data) & ~1], 2) if len(data) > 1 else 0


def pcm16_to_ulaw(data: bytes) -> bytes:
    """Encode PCM16 to μ-law. `data` must hold whole samples (an even byte count)."""
    return audioop.lin2ulaw(data, 2)


@lru_cache(maxsize=1)
def ulaw_encoding_table() -> np.ndarray:
    """The μ-law code of every PCM16 sample, indexed by the sample's bits read as uint16.

    For samples already in a numpy array (the resampler's output), one `take` from this table
    costs less than half of `audioop.lin2ulaw` on the same samples. Built with `pcm16_to_ulaw`
    itself, so it gives the same codes. Read-only, 64 KiB.
    """
    return np.frombuffer(pcm16_to_ulaw(np.arange(65536, dtype="<u2").tobytes()), np.uint8)
