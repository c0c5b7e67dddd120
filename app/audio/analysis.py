"""Measuring audio quality (tests, benchmarks): tone levels read off a windowed spectrum."""

from __future__ import annotations

import numpy as np


def spectrum(samples: np.ndarray, rate: int, start_s: float) -> np.ndarray:
    """Amplitude per 1 Hz bin over one second from `start_s` (a tone of amplitude A reads A).

    The 4-term Blackman-Harris window has sidelobes at -92 dB, well below the alias and
    image levels we measure; one second gives 1 Hz bins.
    """
    start = int(start_s * rate)
    x = samples[start : start + rate].astype(np.float64)
    if x.size < rate:
        x = np.pad(x, (0, rate - x.size))
    n = np.arange(rate)
    window = (
        0.35875
        - 0.48829 * np.cos(2 * np.pi * n / rate)
        + 0.14128 * np.cos(4 * np.pi * n / rate)
        - 0.01168 * np.cos(6 * np.pi * n / rate)
    )
    return 2 * np.abs(np.fft.rfft(x * window)) / window.sum()


def db(ratio: float) -> float:
    return 20 * np.log10(max(ratio, 1e-12))  # an all-zero output reads -240 dB


def level_at(amplitudes: np.ndarray, freq: int) -> float:
    """The tone's amplitude: the window's main lobe spans ±4 bins."""
    return float(amplitudes[max(freq - 5, 0) : freq + 6].max())
