"""StreamingResampler and the format converters, measured on real signals.

Levels are read off a windowed FFT of one second of steady-state output (1 Hz bins, so the
integer-Hz test tones sit on bins); rejection figures are relative to the input amplitude.
"""

import numpy as np
import pytest

from app.audio import analysis
from app.audio.analysis import db, level_at
from app.audio.convert import make_converter
from app.audio.formats import REALTIME_PCM16, TELEPHONE_ULAW, AudioFormat
from app.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from app.audio.resampler import StreamingResampler

AMPLITUDE = 16000.0
WARMUP_S = 0.1  # skip the filter's start-up transient before measuring


def tone(freq: float, rate: int, seconds: float = 1.0 + 2 * WARMUP_S, amplitude: float = AMPLITUDE) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2")


def run(in_rate: int, out_rate: int, samples: np.ndarray) -> np.ndarray:
    return np.frombuffer(StreamingResampler(in_rate, out_rate).process(samples.tobytes()), "<i2")


def spectrum(samples: np.ndarray, rate: int) -> np.ndarray:
    """One second after the filter's warm-up."""
    assert samples.size >= int(WARMUP_S * rate) + rate
    return analysis.spectrum(samples, rate, WARMUP_S)


# --- anti-aliasing and anti-imaging -------------------------------------------------------


def test_5khz_tone_does_not_fold_to_3khz():
    amps = spectrum(run(24000, 8000, tone(5000, 24000)), 8000)
    assert db(level_at(amps, 3000) / AMPLITUDE) < -60
    assert db(amps.max() / AMPLITUDE) < -60


@pytest.mark.parametrize("freq", [4600, 4800, 5300, 6000, 6700, 7400, 7900, 8200, 9000, 10100, 11000, 11900])
def test_downsampling_rejects_stopband_tones_by_60db(freq):
    amps = spectrum(run(24000, 8000, tone(freq, 24000)), 8000)
    alias = abs(freq - 8000 * round(freq / 8000))
    assert db(level_at(amps, alias) / AMPLITUDE) < -60
    assert db(amps.max() / AMPLITUDE) < -60  # nothing else leaks either


@pytest.mark.parametrize("freq", [300, 1000, 2000, 3000, 3400])
def test_upsampling_rejects_images_by_60db(freq):
    amps = spectrum(run(8000, 24000, tone(freq, 8000)), 24000)
    assert db(level_at(amps, freq) / AMPLITUDE) > -0.5
    for image in (8000 - freq, 8000 + freq):
        assert db(level_at(amps, image) / AMPLITUDE) < -60
    assert db(amps[4600:].max() / AMPLITUDE) < -60


@pytest.mark.parametrize(("in_rate", "out_rate"), [(24000, 8000), (8000, 24000)])
def test_passband_is_flat_to_3400hz(in_rate, out_rate):
    for freq in (100, 500, 1000, 2000, 3000, 3400):
        amps = spectrum(run(in_rate, out_rate, tone(freq, in_rate)), out_rate)
        assert abs(db(level_at(amps, freq) / AMPLITUDE)) < 0.5, freq


# --- fidelity and delay ----------------------------------------------------------------------


def snr_against_ideal(out: np.ndarray, rate: int, freq: float, delay_ms: float) -> float:
    """SNR of `out` against the exact input tone shifted by the claimed delay."""
    t = np.arange(out.size) / rate - delay_ms / 1000
    ideal = AMPLITUDE * np.sin(2 * np.pi * freq * t)
    start = int(WARMUP_S * rate)
    noise = out[start:].astype(np.float64) - ideal[start:]
    return 10 * np.log10(np.sum(ideal[start:] ** 2) / np.sum(noise**2))


def test_1khz_tone_snr_down_up_and_round_trip():
    down = StreamingResampler(24000, 8000)
    up = StreamingResampler(8000, 24000)
    assert 0 < down.delay_ms <= 2 and 0 < up.delay_ms <= 2
    src24 = tone(1000, 24000)
    src8 = tone(1000, 8000)

    at8 = np.frombuffer(down.process(src24.tobytes()), "<i2")
    assert snr_against_ideal(at8, 8000, 1000, down.delay_ms) > 60
    at24 = np.frombuffer(up.process(src8.tobytes()), "<i2")
    assert snr_against_ideal(at24, 24000, 1000, up.delay_ms) > 60
    round_trip = run(8000, 24000, at8)
    assert snr_against_ideal(round_trip, 24000, 1000, down.delay_ms + up.delay_ms) > 55
    # A wrong delay claim shows up as a phase error: 0.1 ms at 1 kHz is far below 60 dB.
    assert snr_against_ideal(at8, 8000, 1000, down.delay_ms + 0.1) < 40


def test_impulse_peaks_at_the_reported_delay():
    impulse = np.zeros(800, "<i2")
    impulse[0] = 10000
    up = StreamingResampler(8000, 24000)
    out = np.frombuffer(up.process(impulse.tobytes()), "<i2")
    assert np.argmax(out) == round(up.delay_ms * 24)
    assert up.delay_ms <= 2


def test_output_is_rounded_not_truncated():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(24000) * 6000).clip(-32768, 32767).astype("<i2")
    r = StreamingResampler(24000, 8000)
    out = np.frombuffer(r.process(x.tobytes()), "<i2")
    # Float64 reference of the same filter: y[k] = sum_j h[j] x[3k - j].
    exact = np.convolve(x.astype(np.float64), r.taps)[::3][: out.size]
    error = out - exact
    assert np.max(np.abs(error)) <= 0.5 + 0.01  # float32 arithmetic, then round to nearest
    assert abs(np.mean(error)) < 0.02  # no bias either


def test_full_scale_overshoot_saturates_instead_of_wrapping():
    square = np.where(np.arange(8000) % 80 < 40, 32767, -32768).astype("<i2")
    r = StreamingResampler(8000, 24000)
    out = np.frombuffer(r.process(square.tobytes()), "<i2").astype(np.int64)
    stuffed = np.zeros(square.size * 3)
    stuffed[::3] = square
    exact = np.convolve(stuffed, r.taps * 3)[: out.size]
    assert exact.max() > 32767.5 and exact.min() < -32768.5  # the filter does overshoot
    assert np.max(np.abs(out - np.clip(exact, -32768, 32767))) <= 1
    assert out.max() == 32767 and out.min() == -32768


# --- streaming behaviour ---------------------------------------------------------------------


@pytest.mark.parametrize(("in_rate", "out_rate"), [(24000, 8000), (8000, 24000), (48000, 16000), (8000, 16000)])
def test_any_chunking_gives_the_one_shot_output(in_rate, out_rate):
    rng = np.random.default_rng(in_rate + out_rate)
    x = (rng.standard_normal(in_rate // 2) * 9000).clip(-32768, 32767).astype("<i2")
    data = x.tobytes()
    one_shot = np.frombuffer(StreamingResampler(in_rate, out_rate).process(data), "<i2")
    factor = max(in_rate, out_rate) // min(in_rate, out_rate)
    expected_len = x.size * factor if out_rate > in_rate else -(-x.size // factor)
    assert one_shot.size == expected_len

    streamed = StreamingResampler(in_rate, out_rate)
    parts, pos = [], 0
    # The odd byte counts first: after them the random sizes use the data up at most rates.
    sizes = [1, 1, 3, 5, 2, 960, 7] + list(rng.integers(0, 400, 300))
    i = 0
    while pos < len(data):
        n = int(sizes[i % len(sizes)])
        parts.append(streamed.process(data[pos : pos + n]))
        pos += n
        i += 1
    assert_same_output(parts, one_shot)


def assert_same_output(parts: list[bytes], one_shot: np.ndarray) -> None:
    """Chunked output equals the one-shot output: bit-exact with this BLAS; another BLAS may
    sum in another order, so 1 LSB is allowed."""
    chunked = np.frombuffer(b"".join(parts), "<i2")
    assert chunked.size == one_shot.size
    assert np.max(np.abs(chunked.astype(np.int32) - one_shot)) <= 1


@pytest.mark.parametrize(("in_rate", "out_rate"), [(24000, 8000), (8000, 24000)])
def test_long_chunks_after_an_odd_byte_give_the_one_shot_output(in_rate, out_rate):
    """Long chunks are resampled in pieces; the byte carried over must still lead the first one."""
    rng = np.random.default_rng(29)
    data = (rng.standard_normal(2 * in_rate) * 9000).clip(-32768, 32767).astype("<i2").tobytes()
    one_shot = np.frombuffer(StreamingResampler(in_rate, out_rate).process(data), "<i2")
    streamed = StreamingResampler(in_rate, out_rate)
    cuts = [0, 1, 30001, 30002, len(data)]
    parts = [streamed.process(data[a:b]) for a, b in zip(cuts, cuts[1:])]
    assert_same_output(parts, one_shot)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(24000, 8000), (8000, 24000)])
def test_reused_buffers_leave_nothing_behind(in_rate, out_rate):
    """A big loud chunk leaves stale samples past the end of the smaller chunks after it."""
    rng = np.random.default_rng(5)
    loud = (rng.standard_normal(in_rate) * 20000).clip(-32768, 32767).astype("<i2").tobytes()
    probe = tone(700, in_rate, seconds=0.1).tobytes()
    chunks = [probe[i : i + 200] for i in range(0, len(probe), 200)]
    fresh = StreamingResampler(in_rate, out_rate)
    expected = [fresh.process(c) for c in chunks]
    used = StreamingResampler(in_rate, out_rate)
    used.process(loud)
    used.reset()
    # Same shapes as the fresh instance's chunks, so exactly the same arithmetic.
    assert [used.process(c) for c in chunks] == expected


@pytest.mark.parametrize(("in_rate", "out_rate"), [(24000, 8000), (8000, 24000), (8000, 8000)])
def test_ulaw_output_is_the_pcm16_output_encoded(in_rate, out_rate):
    rng = np.random.default_rng(17)
    # Loud enough to saturate now and then: the clipped samples must encode the same too.
    x = (rng.standard_normal(in_rate // 2) * 14000).clip(-32768, 32767).astype("<i2").tobytes()
    sizes = [int(n) for n in rng.integers(0, 2000, 40)] + [1, 3, 4800, 7]  # odd byte counts included
    plain = StreamingResampler(in_rate, out_rate)
    fused = StreamingResampler(in_rate, out_rate, ulaw_out=True)
    pos, i = 0, 0
    while pos < len(x):
        chunk = x[pos : pos + sizes[i % len(sizes)]]
        assert fused.process(chunk) == pcm16_to_ulaw(plain.process(chunk))
        pos, i = pos + len(chunk), i + 1
    assert StreamingResampler(in_rate, out_rate, ulaw_out=True).process(x) == pcm16_to_ulaw(
        StreamingResampler(in_rate, out_rate).process(x)
    )


def test_reset_returns_to_the_initial_state():
    rng = np.random.default_rng(3)
    noise = (rng.standard_normal(1001) * 8000).astype("<i2").tobytes()
    probe = tone(700, 24000, seconds=0.1).tobytes()
    for rates in ((24000, 8000), (8000, 24000)):
        fresh = StreamingResampler(*rates).process(probe)
        used = StreamingResampler(*rates)
        used.process(noise[:-1])  # leaves history and a dangling byte behind
        used.reset()
        assert used.process(probe) == fresh


def test_rejects_non_integer_ratios():
    with pytest.raises(ValueError):
        StreamingResampler(8000, 11025)
    with pytest.raises(ValueError):
        StreamingResampler(0, 8000)


# --- converters ----------------------------------------------------------------------------


def test_passthrough_returns_the_same_object():
    for fmt in (TELEPHONE_ULAW, REALTIME_PCM16):
        converter = make_converter(fmt, fmt)
        data = bytes(range(200))
        assert converter.convert(data) is data
        converter.reset()


def test_ulaw_round_trip_through_24k_preserves_a_speech_band_tone():
    to_model = make_converter(TELEPHONE_ULAW, REALTIME_PCM16)
    to_caller = make_converter(REALTIME_PCM16, TELEPHONE_ULAW)
    caller = pcm16_to_ulaw(tone(1200, 8000).tobytes())
    model_side = b"".join(to_model.convert(caller[i : i + 160]) for i in range(0, len(caller), 160))
    assert len(model_side) == 2 * 3 * len(caller)
    back = b"".join(to_caller.convert(model_side[i : i + 960]) for i in range(0, len(model_side), 960))
    assert len(back) == len(caller)
    out = np.frombuffer(ulaw_to_pcm16(back), "<i2")
    delay = StreamingResampler(8000, 24000).delay_ms + StreamingResampler(24000, 8000).delay_ms
    # Two μ-law quantisations (about 38 dB each) dominate; the resamplers add nothing visible.
    assert snr_against_ideal(out, 8000, 1200, delay) > 33


def test_converters_are_decode_resample_encode():
    """The relay's two directions, frame by frame, against the plain building blocks."""
    rng = np.random.default_rng(23)
    caller = pcm16_to_ulaw((rng.standard_normal(8000) * 8000).clip(-32768, 32767).astype("<i2").tobytes())
    to_model = make_converter(TELEPHONE_ULAW, REALTIME_PCM16)
    up = StreamingResampler(8000, 24000)
    for i in range(0, len(caller), 160):
        frame = caller[i : i + 160]
        assert to_model.convert(frame) == up.process(ulaw_to_pcm16(frame))
    model = (rng.standard_normal(24000) * 12000).clip(-32768, 32767).astype("<i2").tobytes()
    to_caller = make_converter(REALTIME_PCM16, TELEPHONE_ULAW)
    down = StreamingResampler(24000, 8000)
    pos = 0
    for size in [4800, 960, 9600, 481, 2399, 12000, 4800] * 3:
        chunk = model[pos : pos + size]
        assert to_caller.convert(chunk) == pcm16_to_ulaw(down.process(chunk))
        pos += size


def test_pcm16_source_carries_a_split_sample():
    src = tone(1000, 24000, seconds=0.2).tobytes()
    whole = make_converter(REALTIME_PCM16, TELEPHONE_ULAW).convert(src)
    split = make_converter(REALTIME_PCM16, TELEPHONE_ULAW)
    pieces = [split.convert(src[i : i + 301]) for i in range(0, len(src), 301)]  # odd sizes
    assert b"".join(pieces) == whole
    # Same rate, no resampler: the converter itself must keep the odd byte.
    same_rate = make_converter(AudioFormat("pcm16", 8000), TELEPHONE_ULAW)
    pcm = tone(500, 8000, seconds=0.05).tobytes()
    encoded = b"".join(same_rate.convert(pcm[i : i + 7]) for i in range(0, len(pcm), 7))
    assert encoded == pcm16_to_ulaw(pcm)


def test_same_rate_codec_and_rate_only_conversions():
    ulaw = pcm16_to_ulaw(tone(440, 8000, seconds=0.05).tobytes())
    assert make_converter(TELEPHONE_ULAW, AudioFormat("pcm16", 8000)).convert(ulaw) == ulaw_to_pcm16(ulaw)
    pcm16k = tone(440, 16000, seconds=0.05).tobytes()
    assert make_converter(AudioFormat("pcm16", 16000), AudioFormat("pcm16", 8000)).convert(pcm16k) == (
        StreamingResampler(16000, 8000).process(pcm16k)
    )


def test_converter_reset_forgets_history():
    to_caller = make_converter(REALTIME_PCM16, TELEPHONE_ULAW)
    probe = tone(800, 24000, seconds=0.05).tobytes()
    fresh = make_converter(REALTIME_PCM16, TELEPHONE_ULAW).convert(probe)
    to_caller.convert(tone(3000, 24000, seconds=0.03).tobytes() + b"\x01")  # history + odd byte
    to_caller.reset()
    assert to_caller.convert(probe) == fresh


@pytest.mark.parametrize(("in_rate", "out_rate"), [(16000, 24000), (24000, 16000)])
def test_16_and_24_khz_convert_through_their_common_rate(in_rate, out_rate):
    """The browser's 16 kHz microphone and the model's 24 kHz: a speech-band tone passes at its
    level, the length follows the ratio, and any chunking gives the same output."""
    converter = make_converter(AudioFormat("pcm16", in_rate), AudioFormat("pcm16", out_rate))
    source = tone(1000, in_rate).tobytes()
    step = in_rate // 50 * 2 + 1  # 20 ms and an odd byte
    out = b"".join(converter.convert(source[i : i + step]) for i in range(0, len(source), step))
    one_shot = make_converter(AudioFormat("pcm16", in_rate), AudioFormat("pcm16", out_rate)).convert(source)
    assert out == one_shot
    samples = np.frombuffer(out, "<i2")
    assert abs(samples.size - len(source) // 2 * out_rate / in_rate) < 60  # the filters' delay
    amps = spectrum(samples, out_rate)
    assert abs(db(level_at(amps, 1000) / AMPLITUDE)) < 0.1


def test_a_24_to_16_khz_conversion_keeps_what_would_alias_out():
    """10 kHz is above 16 kHz's Nyquist: it must not fold to 6 kHz."""
    out = make_converter(AudioFormat("pcm16", 24000), AudioFormat("pcm16", 16000)).convert(tone(10000, 24000).tobytes())
    amps = spectrum(np.frombuffer(out, "<i2"), 16000)
    assert db(level_at(amps, 6000) / AMPLITUDE) < -60


def test_rates_without_a_usable_common_rate_are_refused():
    with pytest.raises(ValueError):
        make_converter(AudioFormat("pcm16", 44100), AudioFormat("pcm16", 24000))
