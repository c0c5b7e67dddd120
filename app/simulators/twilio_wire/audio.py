"""The phone line's audio as Twilio carries it: μ-law 8 kHz mono in 20 ms frames, the caller's
recordings converted to it, where the voice is in them, and line noise."""

from __future__ import annotations

import warnings
import wave
from pathlib import Path

import numpy as np

from app.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16

with warnings.catch_warnings():
    # Deprecated on 3.11/3.12 only; the audioop-lts package provides it from 3.13 on.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000  # 160 μ-law bytes = 20 ms
BYTES_PER_MS = SAMPLE_RATE // 1000
MULAW_SILENCE = b"\xff"
SILENCE_FRAME = MULAW_SILENCE * FRAME_BYTES
PLAYBACK_LIMIT_BYTES = 10 * 60 * SAMPLE_RATE  # about 10 minutes of buffered audio (warning 31931)


def _lowpass(pcm16: bytes, rate: int, cutoff_hz: float = 3600.0, taps: int = 101) -> bytes:
    # ratecv interpolates without an anti-alias filter, so content above 4 kHz would fold
    # into the telephone band; a windowed-sinc FIR removes it first.
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
    if samples.size == 0:
        return pcm16
    n = np.arange(taps) - (taps - 1) / 2
    kernel = np.sinc(2 * cutoff_hz / rate * n) * np.hamming(taps)
    kernel /= kernel.sum()
    filtered = np.convolve(samples, kernel, mode="same")
    return np.clip(np.rint(filtered), -32768, 32767).astype("<i2").tobytes()


def wav_to_ulaw(path: str | Path) -> bytes:
    """Any PCM WAV (rate, width, channels) → μ-law 8 kHz mono, what a phone line carries."""
    with wave.open(str(path), "rb") as wav:
        width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    if width == 1:
        raw = audioop.bias(raw, 1, -128)  # 8-bit WAV is unsigned, audioop expects signed
    pcm = audioop.lin2lin(raw, width, 2) if width != 2 else raw
    if channels == 2:
        pcm = audioop.tomono(pcm, 2, 0.5, 0.5)
    elif channels > 2:
        frames = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels).astype(np.int32)
        pcm = frames.mean(axis=1).round().astype("<i2").tobytes()
    if rate != SAMPLE_RATE:
        if rate > SAMPLE_RATE:
            pcm = _lowpass(pcm, rate)
        state = None
        out = bytearray()
        block = rate * 2  # one second of PCM16 per call, the converter state carried across
        for offset in range(0, len(pcm), block):
            converted, state = audioop.ratecv(pcm[offset:offset + block], 2, 1, rate, SAMPLE_RATE, state)
            out += converted
        pcm = bytes(out)
    return pcm16_to_ulaw(pcm)


def speech_bounds(ulaw: bytes) -> tuple[float, float] | None:
    """Where the voice starts and ends in a recording (ms), ignoring leading/trailing near-silence.

    Recordings carry some silence around the words; latency is felt from the last word, not
    from the end of the file. None when the whole recording is quiet.
    """
    step = 10 * BYTES_PER_MS  # 10 ms of samples
    pcm = np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64)
    usable = pcm.size // step * step
    if usable == 0:
        return None
    rms = np.sqrt(np.mean(pcm[:usable].reshape(-1, step) ** 2, axis=1))
    if rms.max() < 100:  # about -50 dBFS: nothing a VAD would call speech
        return None
    loud = np.flatnonzero(rms >= max(rms.max() * 0.05, 100))  # within 26 dB of the loudest frame
    return float(loud[0] * 10), float((loud[-1] + 1) * 10)


def comfort_noise_frame(rng: np.random.Generator, dbfs: float) -> bytes:
    """20 ms of faint white noise, like the hiss of a real line rather than digital silence."""
    rms = 32767 * 10 ** (dbfs / 20)
    samples = np.clip(rng.normal(0.0, rms, FRAME_BYTES), -32768, 32767).astype("<i2")
    return pcm16_to_ulaw(samples.tobytes())


NOISE_BAND_HZ = (500.0, 3400.0)


def noise_burst(duration_ms: float, dbfs: float, seed: int = 0) -> bytes:
    """A short noise of the barn as a phone carries it (a feeder's clang, a gate): noise spread
    over the telephone band, struck then dying away, with no voice in it. μ-law 8 kHz."""
    count = round(duration_ms * BYTES_PER_MS)
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.normal(size=count))
    frequencies = np.fft.rfftfreq(count, 1 / SAMPLE_RATE)
    spectrum[(frequencies < NOISE_BAND_HZ[0]) | (frequencies > NOISE_BAND_HZ[1])] = 0
    samples = np.fft.irfft(spectrum, count) * np.exp(-np.arange(count) / (count / 3))  # -26 dB by its end
    samples *= 32767 * 10 ** (dbfs / 20) / max(float(np.sqrt(np.mean(samples**2))), 1e-9)
    return pcm16_to_ulaw(np.clip(samples, -32768, 32767).astype("<i2").tobytes())
