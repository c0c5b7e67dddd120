"""Compare StreamingResampler with soxr (HQ, streaming) and audioop.ratecv on 8k <-> 24k.

Run from the repo root: .venv/bin/python benchmarks/resampler.py

Every implementation is driven the way the phone line drives it: 20 ms chunks, state
carried from chunk to chunk.  Figures, per direction:
  rejection  worst alias (24k->8k, input tones 4.6-11.5 kHz) or image (8k->24k, input tones
             0.1-3.4 kHz, everything above 4.6 kHz at the output) level, in dB below the tone
  passband   gain range over 0.1-3.4 kHz tones
  signal     delay of the waveform in the output stream (phase slope over 0.2-3.3 kHz)
  held back  input the implementation has taken but not yet answered for (mean / max over
             20 ms chunks): latency on top of the signal delay
  µs/frame   wall time per 20 ms chunk (bytes in, bytes out), best of several runs
Then the time per chunk of the two converters the relay runs (`make_converter`, μ-law codec
included): caller frames to the model, and model audio in 20 ms and 100 ms chunks back.
soxr is a dev-only dependency; it is imported here and nowhere in the app.
"""

from __future__ import annotations

import os
import platform
import sys
import timeit
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.audio import analysis  # noqa: E402
from app.audio.analysis import db, level_at  # noqa: E402
from app.audio.convert import make_converter  # noqa: E402
from app.audio.formats import REALTIME_PCM16, TELEPHONE_ULAW, AudioFormat  # noqa: E402
from app.audio.g711 import pcm16_to_ulaw  # noqa: E402
from app.audio.resampler import StreamingResampler  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # stdlib audioop on 3.11/3.12
    import audioop

FRAME_MS = 20
AMPLITUDE = 16000.0
TARGET_DB, TARGET_MS, TARGET_US = 60.0, 2.0, 10.0

Process = Callable[[bytes], bytes]


# --- the contenders, each a factory of a fresh streaming bytes -> bytes function ------------


def ours(in_rate: int, out_rate: int) -> Process:
    return StreamingResampler(in_rate, out_rate).process


def soxr_hq(in_rate: int, out_rate: int) -> Process:
    stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
    return lambda data: stream.resample_chunk(np.frombuffer(data, "<i2")).tobytes()


def ratecv(in_rate: int, out_rate: int) -> Process:
    state = None

    def process(data: bytes) -> bytes:
        nonlocal state
        out, state = audioop.ratecv(data, 2, 1, in_rate, out_rate, state)
        return out

    return process


CONTENDERS = {"StreamingResampler": ours, "soxr HQ (stream)": soxr_hq, "audioop.ratecv": ratecv}


# --- measurement helpers ---------------------------------------------------------------------


def stream(process: Process, samples: np.ndarray, rate: int) -> tuple[np.ndarray, list[int]]:
    """Feed `samples` in 20 ms chunks; return the output and the output count after each chunk."""
    data = samples.astype("<i2").tobytes()
    step = rate * FRAME_MS // 1000 * 2
    out, counts, total = [], [], 0
    for i in range(0, len(data), step):
        chunk = process(data[i : i + step])
        out.append(chunk)
        total += len(chunk) // 2
        counts.append(total)
    return np.frombuffer(b"".join(out), "<i2"), counts


def tone(freq: float, rate: int, seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(AMPLITUDE * np.sin(2 * np.pi * freq * t))


def spectrum(samples: np.ndarray, rate: int) -> np.ndarray:
    return analysis.spectrum(samples, rate, start_s=0.3)  # past every start-up transient


def rejection_db(factory: Callable[[int, int], Process], in_rate: int, out_rate: int) -> float:
    """Worst case (smallest) rejection over the stopband tone sweep."""
    worst = np.inf
    if in_rate > out_rate:  # decimation: tones that must not fold into the output
        for freq in range(4600, 11501, 100):
            amps = spectrum(stream(factory(in_rate, out_rate), tone(freq, in_rate), in_rate)[0], out_rate)
            worst = min(worst, -db(amps.max() / AMPLITUDE))
    else:  # interpolation: images of in-band tones
        for freq in range(100, 3401, 100):
            amps = spectrum(stream(factory(in_rate, out_rate), tone(freq, in_rate), in_rate)[0], out_rate)
            worst = min(worst, -db(amps[4600:].max() / AMPLITUDE))
    return worst


def passband_db(factory: Callable[[int, int], Process], in_rate: int, out_rate: int) -> tuple[float, float]:
    gains = []
    for freq in (100, 300, 1000, 2000, 3000, 3400):
        amps = spectrum(stream(factory(in_rate, out_rate), tone(freq, in_rate), in_rate)[0], out_rate)
        gains.append(db(level_at(amps, freq) / AMPLITUDE))
    return min(gains), max(gains)


def delays_ms(factory: Callable[[int, int], Process], in_rate: int, out_rate: int) -> tuple[float, float, float]:
    """(signal delay, mean held back, max held back) in ms, from a band-limited noise burst."""
    seconds = 2
    rng = np.random.default_rng(1)
    spec = np.fft.rfft(rng.standard_normal(in_rate * seconds))
    freqs = np.fft.rfftfreq(in_rate * seconds, 1 / in_rate)
    spec[(freqs < 100) | (freqs > 3400)] = 0
    noise = np.fft.irfft(spec)
    # Silence around a faded burst, so the window edges cut nothing but silence.
    envelope = np.zeros(noise.size)
    burst = slice(in_rate // 4, noise.size - in_rate // 4)
    envelope[burst] = np.hanning(burst.stop - burst.start)
    x = np.round(noise * envelope * (8000 / np.abs(noise * envelope).max()))

    process = factory(in_rate, out_rate)
    y, counts = stream(process, x, in_rate)
    in_ms = np.arange(1, len(counts) + 1) * FRAME_MS
    held = in_ms - np.array(counts) * 1000 / out_rate
    steady = held[len(held) // 4 :]

    # Linear-phase fit of the cross spectrum: phase(f) = -2 pi f delay.
    y = np.pad(y.astype(np.float64), (0, max(0, out_rate * seconds - y.size)))[: out_rate * seconds]
    k = np.arange(200 * seconds, 3300 * seconds)  # bins of 1/seconds Hz, same for both rates
    cross = np.fft.rfft(y)[k] * np.conj(np.fft.rfft(x)[k])
    phase = np.unwrap(np.angle(cross))
    weight = np.abs(cross)
    omega = 2 * np.pi * k / seconds
    slope = np.polyfit(omega, phase, 1, w=np.sqrt(weight))[0]
    return -slope * 1000, float(steady.mean()), float(steady.max())


def us_per_frame(factory: Callable[[int, int], Process], in_rate: int, out_rate: int) -> float:
    rng = np.random.default_rng(2)
    n = in_rate * FRAME_MS // 1000
    frames = [(rng.standard_normal(n) * 4000).astype("<i2").tobytes() for _ in range(100)]
    return best_us(factory(in_rate, out_rate), frames)


def converter_us(source: AudioFormat, target: AudioFormat, chunk_ms: int) -> float:
    rng = np.random.default_rng(3)
    n = source.rate * chunk_ms // 1000
    chunks = [(rng.standard_normal(n) * 4000).astype("<i2").tobytes() for _ in range(100)]
    if source.encoding == "pcmu":
        chunks = [pcm16_to_ulaw(c) for c in chunks]
    return best_us(make_converter(source, target).convert, chunks)


def best_us(process: Process, frames: list[bytes]) -> float:
    """Wall time per call of `process` over `frames`, in µs."""
    for f in frames:  # warm up: past start-up buffering, caches and allocators settled
        process(f)
    # Many short runs and the best of them: on a shared machine, the quiet runs are the truth.
    runs = timeit.repeat(lambda: [process(f) for f in frames], number=5, repeat=60)
    return min(runs) / (5 * len(frames)) * 1e6


# --- report ----------------------------------------------------------------------------------


def main() -> None:
    print(f"Python {platform.python_version()}, numpy {np.__version__}, soxr {soxr.__version__}, "
          f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}")
    print(f"StreamingResampler: {StreamingResampler(24000, 8000).taps.size} taps at 24 kHz\n")
    header = (f"{'direction':<10} {'implementation':<20} {'rejection':>10} {'passband':>14} "
              f"{'signal':>8} {'held back':>15} {'total':>8} {'µs/frame':>9}")
    print(header)
    print(f"{'':<10} {'':<20} {'(dB)':>10} {'(dB)':>14} {'(ms)':>8} {'mean/max (ms)':>15} {'(ms)':>8} {'(20 ms)':>9}")
    print("-" * len(header))
    verdicts = []
    for in_rate, out_rate in ((24000, 8000), (8000, 24000)):
        direction = f"{in_rate // 1000}k->{out_rate // 1000}k"
        for name, factory in CONTENDERS.items():
            rej = rejection_db(factory, in_rate, out_rate)
            lo, hi = passband_db(factory, in_rate, out_rate)
            signal, held_mean, held_max = delays_ms(factory, in_rate, out_rate)
            total = signal + held_max
            us = us_per_frame(factory, in_rate, out_rate)
            rej, lo, hi, signal = (v + 0.0 for v in (rej, lo, hi, signal))  # print -0.0 as 0.0
            print(f"{direction:<10} {name:<20} {rej:>10.1f} {lo:>+6.2f}..{hi:>+6.2f} {signal:>8.2f} "
                  f"{held_mean:>7.1f}/{held_max:<7.1f} {total:>8.2f} {us:>9.2f}")
            missed = [label for label, ok in (
                (f">= {TARGET_DB:.0f} dB", rej >= TARGET_DB),
                (f"<= {TARGET_MS:.0f} ms", total <= TARGET_MS),
                (f"<= {TARGET_US:.0f} µs", us <= TARGET_US),
            ) if not ok]
            verdicts.append(f"{name} {direction}: " + ("all met" if not missed else "misses " + ", ".join(missed)))
        print()
    print(f"Targets (>= {TARGET_DB:.0f} dB, <= {TARGET_MS:.0f} ms total, <= {TARGET_US:.0f} µs per frame):")
    for verdict in verdicts:
        print("  " + verdict)
    print("\nConverters (make_converter, μ-law codec included), µs per chunk:")
    for source, target, chunk_ms in (
        (TELEPHONE_ULAW, REALTIME_PCM16, 20),
        (REALTIME_PCM16, TELEPHONE_ULAW, 20),
        (REALTIME_PCM16, TELEPHONE_ULAW, 100),
    ):
        label = f"{source.encoding} {source.rate // 1000}k -> {target.encoding} {target.rate // 1000}k"
        print(f"  {label:<24} {chunk_ms:>3} ms {converter_us(source, target, chunk_ms):>7.2f}")


if __name__ == "__main__":
    main()
