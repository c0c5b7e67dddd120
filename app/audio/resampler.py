"""Streaming polyphase FIR resampler for integer rate ratios, on numpy only.

Built for the phone line's 8 kHz <-> 24 kHz hops, where the requirements are:
anti-aliasing of >= 60 dB outside the telephone band (everything from 4.6 kHz up must not
fold back into 0-3.4 kHz), a flat passband up to 3.4 kHz, at most 2 ms of added delay,
and a few microseconds per 20 ms frame.

Filter: a linear-phase Kaiser-windowed sinc of 27 taps per phase (81 taps at 24 kHz),
cut-off at 0.485 x the low rate (3880 Hz for 8 kHz), beta 7.5.  By design: at least 76 dB
of rejection everywhere from 4.6 kHz up, 0.24 dB of droop at 3.4 kHz (flat to 0.001 dB up
to 3 kHz), and a delay of 40 samples at 24 kHz (1.667 ms).  Kaiser's usual equal ripple
would waste the 0.5 dB passband allowance, so the cut-off sits a little low in the
3.4-4.6 kHz transition band, trading droop at 3.4 kHz for stopband depth.  The design is
relative to the low rate, so other integer ratios (8k <-> 16k, 16k <-> 48k, ...) get the
same response, scaled.

Speed: one dot product per output sample would need a strided view of overlapping windows,
which numpy cannot hand to BLAS without copying every window.  Instead outputs are computed
in blocks of `_BLOCK`: each block is one row of a small overlapping view of the input,
multiplied by a constant banded matrix whose columns are the filter shifted by one output
step.  Per chunk, the cost is numpy's per-call overhead more than arithmetic, so a chunk
takes few calls on buffers and views reused from the last chunk: the PCM16 bytes are copied
in after the history (kept as PCM16), one copy gathers the rows and casts them to float32,
one `np.dot` does all the arithmetic in BLAS, then rint, clip and a cast to int16 (and a
table lookup for μ-law).  About 4 us per 20 ms frame, see benchmarks/.
The last block row runs past the input and is trimmed: outputs whose window is not complete
yet are never emitted, so nothing depends on how the stream was chunked.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from app.audio.g711 import pcm16_to_ulaw, ulaw_encoding_table

_TAPS_PER_PHASE = 27
_KAISER_BETA = 7.5
_CUTOFF = 0.485  # fraction of the low rate; 3880 Hz when the low rate is 8 kHz
_BLOCK = 16  # outputs (decimation) or inputs (interpolation) per matrix row
# Longer chunks are resampled in pieces of this many rows (256 ms of input at 24 kHz when
# decimating by 3), so the buffers an instance keeps stay under 90 KiB at 8 <-> 24 kHz.
_MAX_ROWS = 128

_I16 = np.dtype("<i2")
_F32 = np.dtype(np.float32)
# 0-d arrays: cheaper for ufuncs to take than Python scalars, which they convert on every call.
_I16_MAX = np.array(32767, _F32)
_I16_MIN = np.array(-32768, _F32)


@lru_cache(maxsize=None)
def _prototype(factor: int) -> np.ndarray:
    """Low-pass taps at the high rate for a `factor`:1 ratio, DC gain 1 (float64, read-only)."""
    n_taps = _TAPS_PER_PHASE * factor
    cutoff = _CUTOFF / factor  # in cycles per high-rate sample
    n = np.arange(n_taps) - (n_taps - 1) / 2
    taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(n_taps, _KAISER_BETA)
    taps /= taps.sum()
    taps.flags.writeable = False
    return taps


@lru_cache(maxsize=None)
def _decimation_matrix(factor: int) -> np.ndarray:
    """(width, _BLOCK) matrix: column c is the reversed filter starting at input c * factor."""
    taps = _prototype(factor)[::-1].astype(_F32)
    n_taps = taps.size
    matrix = np.zeros(((_BLOCK - 1) * factor + n_taps, _BLOCK), _F32)
    for c in range(_BLOCK):
        matrix[c * factor : c * factor + n_taps, c] = taps
    matrix.flags.writeable = False
    return matrix


@lru_cache(maxsize=None)
def _interpolation_matrix(factor: int) -> np.ndarray:
    """(width, _BLOCK * factor) matrix: input c of a row feeds outputs c*factor .. c*factor+factor-1.

    Zero-stuffing by `factor` and filtering is the same as running `factor` sub-filters
    (the phases) over the low-rate input, each scaled by `factor` to keep unit gain.
    """
    taps = _prototype(factor) * factor
    per_phase = taps.size // factor
    # phases[i, p]: weight of input (m + i) in output m*factor + p, inputs oldest first.
    phases = taps.reshape(per_phase, factor)[::-1].astype(_F32)
    matrix = np.zeros((_BLOCK + per_phase - 1, _BLOCK * factor), _F32)
    for c in range(_BLOCK):
        matrix[c : c + per_phase, c * factor : (c + 1) * factor] = phases
    matrix.flags.writeable = False
    return matrix


class StreamingResampler:
    """Resample a mono PCM16 stream by an integer ratio, one chunk at a time.

    Chunks may have any length, odd byte counts included: unfinished samples and the
    filter history are carried over, so the output is the same however the input is cut.
    With `ulaw_out`, the output is G.711 μ-law instead of PCM16: the encoding is a table
    lookup of the rounded samples, fused into the output stage.
    One instance per stream (per call and per direction); not thread-safe.
    """

    __slots__ = (
        "in_rate", "out_rate", "_factor", "_n_taps", "_matrix", "_width", "_step", "_hist_len",
        "_ulaw_table", "_held", "_carry", "_plan", "_piece_bytes", "_capacity", "_raw", "_raw_view",
        "_windows", "_gathered", "_out", "_y", "_pcm", "_index", "_codes",
    )

    def __init__(self, in_rate: int, out_rate: int, *, ulaw_out: bool = False) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._ulaw_table = ulaw_encoding_table() if ulaw_out else None
        self._matrix = None
        if in_rate == out_rate:
            self._factor, self._n_taps, self._hist_len = 1, 1, 0
        elif out_rate % in_rate == 0:
            self._factor = out_rate // in_rate
            self._n_taps = _TAPS_PER_PHASE * self._factor
            self._matrix = _interpolation_matrix(self._factor)
            self._step = _BLOCK
            self._hist_len = _TAPS_PER_PHASE - 1
        elif in_rate % out_rate == 0:
            self._factor = in_rate // out_rate
            self._n_taps = _TAPS_PER_PHASE * self._factor
            self._matrix = _decimation_matrix(self._factor)
            self._step = _BLOCK * self._factor
            self._hist_len = self._n_taps - 1
        else:
            raise ValueError(f"{in_rate} -> {out_rate} Hz is not an integer ratio")
        self._held = self._hist_len
        self._carry = b""
        self._plan: tuple = (-1,)  # matches no chunk: the first one builds its plan
        if self._matrix is not None:
            self._width = self._matrix.shape[0]
            self._piece_bytes = 2 * _MAX_ROWS * self._step
            self._capacity = 0
            self._raw = bytearray(2 * self._hist_len)  # the history starts as silence
            self._grow(2)

    @property
    def delay_ms(self) -> float:
        """Group delay the filter adds (linear phase: the same at every frequency)."""
        return (self._n_taps - 1) / 2 / max(self.in_rate, self.out_rate) * 1000

    @property
    def taps(self) -> np.ndarray:
        """The low-pass prototype at the high rate, DC gain 1 (for analysis and tests)."""
        return _prototype(self._factor) if self._factor > 1 else np.ones(1)

    def reset(self) -> None:
        """Forget all history (e.g. on barge-in): the next chunk starts from silence."""
        if self._matrix is not None:
            self._raw[: 2 * self._hist_len] = bytes(2 * self._hist_len)
        self._held = self._hist_len
        self._carry = b""

    def process(self, pcm16: bytes) -> bytes:
        """Resample one chunk of PCM16 LE; returns every output sample that is now complete.

        The output is PCM16 LE, or μ-law with `ulaw_out`.
        """
        if self._carry or len(pcm16) & 1:
            pcm16 = self._whole_samples(pcm16)
        if self._matrix is None:
            return bytes(pcm16) if self._ulaw_table is None else pcm16_to_ulaw(pcm16)
        if len(pcm16) > self._piece_bytes:
            whole, step = memoryview(pcm16), self._piece_bytes
            return b"".join([self._resample(whole[i : i + step]) for i in range(0, len(whole), step)])
        return self._resample(pcm16)

    def _resample(self, pcm16: bytes) -> bytes:
        """One chunk of whole samples, no longer than `_piece_bytes`."""
        if not pcm16:
            return b""
        plan = self._plan
        if plan[0] != len(pcm16) or plan[1] != self._held:
            plan = self._plan = self._plan_for(len(pcm16))
        _, _, fresh, windows, rows, out, y, keep_to, keep_from, kept, pcm, index, codes = plan
        fresh[:] = pcm16
        self._held = kept
        if windows is None:
            return b""
        # One copy gathers the overlapping windows and casts them: BLAS gets a contiguous matrix.
        rows[...] = windows
        self._raw[keep_to] = self._raw[keep_from]
        np.dot(rows, self._matrix, out=out)
        # Round to nearest and saturate before the cast, which would truncate and wrap around.
        np.rint(y, out=y)
        y.clip(_I16_MIN, _I16_MAX, out=y)
        pcm[...] = y
        if codes is None:
            return pcm.tobytes()
        # "wrap" skips the bounds check: any uint16 is a valid index into the 65536 entries.
        self._ulaw_table.take(index, out=codes, mode="wrap")
        return codes.tobytes()

    def _whole_samples(self, pcm16: bytes) -> bytes:
        """Prepend the byte left over from the last chunk and keep back a new odd one."""
        if self._carry:
            pcm16 = self._carry + pcm16
        if len(pcm16) & 1:
            self._carry = bytes(pcm16[-1:])
            return pcm16[:-1]
        self._carry = b""
        return pcm16

    def _plan_for(self, n_bytes: int) -> tuple:
        """Views of the buffers for a chunk of `n_bytes` that follows `_held` samples of history.

        `process` keeps the last plan, so a run of equal chunks (the caller's 20 ms frames)
        skips even these few slicings.
        """
        held, factor = self._held, self._factor
        n_in = held + n_bytes // 2
        if self.in_rate > self.out_rate:
            # Output k is the window of n_taps inputs starting at k * factor (history included).
            n_out = max(0, (n_in - self._n_taps) // factor + 1)
            consumed = n_out * factor
        else:
            n_out, consumed = (n_in - held) * factor, n_in - held
        n_rows = _rows(n_out, self._matrix.shape[1])
        if n_rows > self._capacity:
            self._grow(n_rows)
        codes = None if self._ulaw_table is None else self._codes[:n_out]
        return (
            n_bytes, held, self._raw_view[2 * held : 2 * n_in], self._windows[:n_rows] if n_out else None,
            self._gathered[:n_rows], self._out[:n_rows], self._y[:n_out],
            slice(0, 2 * (n_in - consumed)), slice(2 * consumed, 2 * n_in), n_in - consumed,
            self._pcm[:n_out], self._index[:n_out], codes,
        )

    def _grow(self, n_rows: int) -> None:
        """Reallocate the buffers for `n_rows` block rows; they are reused for smaller chunks."""
        step, width, cols = self._step, self._width, self._matrix.shape[1]
        # Room for every window of the last row, and for the inputs a decimating row has not
        # reached yet. The last row reads past the input into stale samples or zeros, finite
        # values under weights that are zero for every output kept: they add exact zeros.
        raw = bytearray(2 * (n_rows * step + width))
        raw[: 2 * self._held] = self._raw[: 2 * self._held]
        self._raw = raw
        self._raw_view = memoryview(raw)
        self._windows = np.ndarray((n_rows, width), _I16, raw, 0, (2 * step, 2))
        self._gathered = np.zeros((n_rows, width), _F32)
        self._out = np.zeros((n_rows, cols), _F32)
        self._y = self._out.reshape(-1)
        self._pcm = np.zeros(n_rows * cols, _I16)
        self._index = self._pcm.view(np.uint16)
        if self._ulaw_table is not None:
            self._codes = np.zeros(n_rows * cols, np.uint8)
        self._capacity = n_rows


def _rows(n_out: int, cols: int) -> int:
    """Block rows needed for n_out outputs, `cols` per row.

    Never fewer than two: BLAS takes a single row down its matrix-vector path, which sums
    in another order, and the same sample would then differ by chunking (by 1 LSB at most).
    """
    return max(2, -(-n_out // cols))
