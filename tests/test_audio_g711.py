"""G.711 μ-law codec: the table round trip and the quantisation error bound."""

import numpy as np

from app.audio.g711 import pcm16_to_ulaw, ulaw_encoding_table, ulaw_to_pcm16

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def test_every_code_reencodes_to_itself_except_negative_zero():
    codes = bytes(range(256))
    pcm = ulaw_to_pcm16(codes)
    assert len(pcm) == 512
    back = pcm16_to_ulaw(pcm)
    # 0x7F is "negative zero": it decodes to 0 like 0xFF, and 0 encodes to 0xFF.
    expected = bytes(0xFF if c == 0x7F else c for c in codes)
    assert back == expected
    decoded = np.frombuffer(pcm, "<i2")
    assert np.unique(decoded).size == 255  # only the two zeros collide


def test_0xff_is_silence():
    assert ulaw_to_pcm16(b"\xff" * 4) == b"\x00" * 8
    assert ulaw_to_pcm16(b"\x7f") == b"\x00\x00"
    assert pcm16_to_ulaw(b"\x00\x00" * 3) == b"\xff" * 3


def test_extremes_decode_to_the_g711_limits():
    samples = np.frombuffer(ulaw_to_pcm16(b"\x80\x00"), "<i2")
    assert samples.tolist() == [32124, -32124]


def test_round_trip_error_is_within_one_quantisation_step():
    decoded = np.frombuffer(ulaw_to_pcm16(pcm16_to_ulaw(ALL_INT16.tobytes())), "<i2").astype(np.int64)
    x = ALL_INT16.astype(np.int64)
    error = np.abs(decoded - x)
    # μ-law is logarithmic: with the 132 bias, the step in each segment is at most
    # 1/16 of the biased magnitude (and only the segment-0 step of 8 near zero).
    assert np.all(error <= (np.abs(x) + 132) / 16)
    # Relative accuracy of a mid-level signal stays in the few-percent range.
    mid = (np.abs(x) > 1000) & (np.abs(x) < 30000)
    assert np.max(error[mid] / np.abs(x[mid])) < 0.07


def test_lengths_and_sign_are_preserved():
    pcm = np.array([0, 1000, -1000, 20000, -20000], dtype="<i2").tobytes()
    ulaw = pcm16_to_ulaw(pcm)
    assert len(ulaw) == 5
    decoded = np.frombuffer(ulaw_to_pcm16(ulaw), "<i2")
    assert decoded[0] == 0
    assert np.array_equal(np.sign(decoded[1:]), [1, -1, 1, -1])


def test_encoding_table_gives_the_codec_s_code_for_every_sample():
    table = ulaw_encoding_table()
    assert table.shape == (65536,) and table.dtype == np.uint8
    assert table[ALL_INT16.view(np.uint16)].tobytes() == pcm16_to_ulaw(ALL_INT16.tobytes())
