"""The audio formats the double takes and sends, its audio timeline, and their conversions.

Every position on the timeline is in units of 1/48000 s: a whole number of units per sample
at both 8 and 24 kHz, so appends in any format count exactly.
"""

from __future__ import annotations

import base64
import binascii
import warnings
from typing import Any

from app.simulators.realtime_schema import ClientEventError

with warnings.catch_warnings():
    # audioop is deprecated in 3.11/3.12 (audioop-lts replaces it from 3.13); it is what we want.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

UNITS_PER_MS = 48
FORMAT_KINDS = {"audio/pcm": "pcm", "audio/pcmu": "pcmu", "audio/pcma": "pcma"}
SAMPLE_RATES = {"pcm": 24000, "pcmu": 8000, "pcma": 8000}
BYTES_PER_MS = {"pcm": 48, "pcmu": 8, "pcma": 8}


def normalise_format(value: dict[str, Any]) -> dict[str, Any]:
    """A format as the service echoes it: PCM always with its rate, G.711 without one."""
    kind = value.get("type") or "audio/pcm"
    return {"type": "audio/pcm", "rate": 24000} if kind == "audio/pcm" else {"type": kind}


def decode_base64(value: str, param: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ClientEventError("invalid_value", f"Invalid '{param}': expected base64-encoded audio.", param) from None


def g711_to_pcm16(data: bytes, kind: str) -> bytes:
    """μ-law ("pcmu") or A-law ("pcma") bytes as PCM16 at the same rate."""
    return audioop.ulaw2lin(data, 2) if kind == "pcmu" else audioop.alaw2lin(data, 2)


def pcm16_to_g711(pcm: bytes, kind: str) -> bytes:
    return audioop.lin2ulaw(pcm, 2) if kind == "pcmu" else audioop.lin2alaw(pcm, 2)


def downsample_24k_to_8k(pcm: bytes) -> bytes:
    narrow, _ = audioop.ratecv(pcm, 2, 1, 24000, 8000, None)
    return narrow


def pcm16_rms(window: bytes | memoryview) -> int:
    return audioop.rms(window, 2)
