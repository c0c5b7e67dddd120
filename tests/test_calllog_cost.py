"""Usage totals and call cost, with the documented prices (USD per 1M tokens)."""

from __future__ import annotations

import logging

import pytest

from app.calllog import cost
from app.calllog.cost import (
    call_cost,
    estimate_cost,
    estimate_transcription_cost,
    sum_transcription_usage,
    sum_usage,
)
from app.config import Settings

# gpt-realtime: text in 4 / cached 0.4 / out 16, audio in 32 / cached 0.4 / out 64.
PRICES = Settings().model_prices


def usage(text_in: int, audio_in: int, cached_text: int, cached_audio: int, text_out: int, audio_out: int) -> dict:
    """A `response.done` usage object, GA shape (cached tokens are inside the input tokens)."""
    return {
        "total_tokens": text_in + audio_in + text_out + audio_out,
        "input_tokens": text_in + audio_in,
        "output_tokens": text_out + audio_out,
        "input_token_details": {
            "text_tokens": text_in, "audio_tokens": audio_in, "image_tokens": 0,
            "cached_tokens": cached_text + cached_audio,
            "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


def test_documented_prices() -> None:
    assert PRICES["gpt-realtime"] == {"text_in": 4.0, "text_cached": 0.4, "text_out": 16.0,
                                      "audio_in": 32.0, "audio_cached": 0.4, "audio_out": 64.0}


def test_sum_usage_adds_up_responses() -> None:
    totals = sum_usage([usage(1000, 5000, 0, 0, 100, 2000), usage(1500, 7000, 800, 4000, 50, 1000),
                        None, {"unexpected": True}])
    assert totals == {
        "responses": 3, "total_tokens": 17650, "input_tokens": 14500, "output_tokens": 3150,
        "input_text_tokens": 2500, "input_audio_tokens": 12000,
        "cached_tokens": 4800, "cached_text_tokens": 800, "cached_audio_tokens": 4000,
        "output_text_tokens": 150, "output_audio_tokens": 3000,
    }
    assert sum_usage([]) == dict.fromkeys(totals, 0)


def test_a_call_at_gpt_realtime_prices() -> None:
    totals = sum_usage([usage(10_000, 50_000, 2_000, 10_000, 1_000, 20_000)])
    expected = (8_000 * 4 + 2_000 * 0.4 + 1_000 * 16 + 40_000 * 32 + 10_000 * 0.4 + 20_000 * 64) / 1_000_000
    assert expected == pytest.approx(2.6128)
    assert estimate_cost("gpt-realtime", totals, PRICES) == pytest.approx(2.6128)


def test_cached_tokens_replace_the_input_rate_not_add_to_it() -> None:
    all_cached = sum_usage([usage(1_000_000, 1_000_000, 1_000_000, 1_000_000, 0, 0)])
    assert estimate_cost("gpt-realtime", all_cached, PRICES) == pytest.approx(0.4 + 0.4)
    none_cached = sum_usage([usage(1_000_000, 1_000_000, 0, 0, 0, 0)])
    assert estimate_cost("gpt-realtime", none_cached, PRICES) == pytest.approx(4 + 32)


def test_totals_without_details_as_a_call_end_carries_them() -> None:
    # CallEnded: input/output totals, their audio part, cached tokens without their modality;
    # the cached tokens are split by the share of audio in the input (here 3/4 audio).
    totals = {"input_tokens": 400_000, "input_audio_tokens": 300_000, "cached_tokens": 100_000,
              "output_tokens": 200_000, "output_audio_tokens": 150_000}
    expected = (75_000 * 4 + 25_000 * 0.4 + 225_000 * 32 + 75_000 * 0.4 + 50_000 * 16 + 150_000 * 64) / 1_000_000
    assert estimate_cost("gpt-realtime", totals, PRICES) == pytest.approx(expected)
    mini = PRICES["gpt-realtime-mini"]
    expected_mini = (75_000 * mini["text_in"] + 25_000 * mini["text_cached"] + 225_000 * mini["audio_in"]
                     + 75_000 * mini["audio_cached"] + 50_000 * mini["text_out"]
                     + 150_000 * mini["audio_out"]) / 1_000_000
    assert estimate_cost("gpt-realtime-mini", totals, PRICES) == pytest.approx(expected_mini)


def test_dated_snapshots_use_their_model_prices() -> None:
    totals = sum_usage([usage(0, 0, 0, 0, 0, 1_000_000)])
    assert estimate_cost("gpt-realtime-2025-08-28", totals, PRICES) == pytest.approx(64.0)
    assert estimate_cost("gpt-realtime-mini-2025-10-06", totals, PRICES) == pytest.approx(20.0)


def test_an_unknown_model_is_an_unknown_cost_with_one_warning(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(cost, "_warned", set())
    totals = sum_usage([usage(1000, 1000, 0, 0, 1000, 1000)])
    with caplog.at_level(logging.WARNING, logger="app.calllog.cost"):
        assert estimate_cost("my-azure-deployment", totals, PRICES) is None
        assert estimate_cost("my-azure-deployment", totals, PRICES) is None
        assert estimate_cost("gpt-realtime", totals, PRICES) > 0
    warnings = [r for r in caplog.records if r.name == "app.calllog.cost"]
    assert len(warnings) == 1 and "my-azure-deployment" in warnings[0].getMessage()


def test_snapshots_of_the_current_models_and_lookalikes() -> None:
    totals = sum_usage([usage(0, 0, 0, 0, 0, 1_000_000)])
    # The longest model name the snapshot extends: 2.1, not 2, nor gpt-realtime.
    assert estimate_cost("gpt-realtime-2.1-2026-07-09", totals, PRICES) == pytest.approx(64.0)
    assert estimate_cost("gpt-realtime-2.1-mini-2026-07-09", totals, PRICES) == pytest.approx(20.0)
    assert cost.model_prices("gpt-realtime-2.1-2026-07-09", PRICES) is PRICES["gpt-realtime-2.1"]
    # A name that merely starts like a priced one is not a snapshot of it.
    assert estimate_cost("gpt-realtime2", totals, PRICES) is None
    assert estimate_cost("", totals, PRICES) is None


def test_no_usage_costs_nothing_known_and_a_missing_price_is_unknown() -> None:
    nothing = sum_usage([])
    assert estimate_cost("gpt-realtime", nothing, PRICES) == 0.0
    assert estimate_cost("my-azure-deployment", nothing, PRICES) == 0.0   # nothing used, nothing owed
    # A model priced for some modalities only: unknown as soon as it uses another one.
    prices = {"text-only": {"text_in": 1.0, "text_out": 2.0}}
    assert estimate_cost("text-only", sum_usage([usage(1_000_000, 0, 0, 0, 1_000_000, 0)]), prices) == 3.0
    assert estimate_cost("text-only", sum_usage([usage(1000, 0, 0, 0, 0, 1000)]), prices) is None
    # A transcription model's entry cannot price a realtime model's tokens.
    assert estimate_cost("gpt-realtime-whisper", sum_usage([usage(1000, 0, 0, 0, 0, 0)]), PRICES) is None
    # A free model is $0, and known.
    free = {"free": dict.fromkeys(("text_in", "text_cached", "text_out", "audio_in", "audio_cached", "audio_out"), 0)}
    assert estimate_cost("free", sum_usage([usage(10, 10, 5, 5, 10, 10)]), free) == 0.0


# gpt-realtime-whisper / gpt-live-transcribe: $0.017 per minute, gpt-transcribe: $0.0045 per minute.
TRANSCRIBER_PRICES = {**PRICES, "token-transcriber": {"audio_in": 3.0, "text_in": 1.25, "text_out": 5.0}}


def duration(seconds: float) -> dict:
    return {"type": "duration", "seconds": seconds}


def tokens(audio: int, text: int, out: int, *, details: bool = True) -> dict:
    used = {"type": "tokens", "input_tokens": audio + text, "output_tokens": out, "total_tokens": audio + text + out}
    if details:
        used["input_token_details"] = {"audio_tokens": audio, "text_tokens": text}
    return used


def test_transcription_usage_adds_up_durations_and_tokens() -> None:
    totals = sum_transcription_usage([duration(2.5), duration(4.25), tokens(800, 40, 25), None, {"type": "other"},
                                      tokens(100, 0, 5, details=False), duration(float("nan")), duration(-3)])
    assert totals == {"seconds": 6.75, "input_tokens": 940, "input_audio_tokens": 900, "input_text_tokens": 40,
                      "output_tokens": 30}
    assert sum_transcription_usage([]) == {"seconds": 0.0, "input_tokens": 0, "input_audio_tokens": 0,
                                           "input_text_tokens": 0, "output_tokens": 0}


def test_transcription_by_the_minute() -> None:
    heard = sum_transcription_usage([duration(30.0), duration(60.0)])
    assert estimate_transcription_cost("gpt-realtime-whisper", heard, PRICES) == pytest.approx(1.5 * 0.017)
    assert estimate_transcription_cost("gpt-live-transcribe", heard, PRICES) == pytest.approx(1.5 * 0.017)
    assert estimate_transcription_cost("gpt-transcribe", heard, PRICES) == pytest.approx(1.5 * 0.0045)
    assert estimate_transcription_cost("gpt-transcribe-2026-05-01", heard, PRICES) == pytest.approx(1.5 * 0.0045)
    assert estimate_transcription_cost("whisper-on-azure", heard, PRICES) is None
    # A model priced by the token has no price per minute.
    assert estimate_transcription_cost("token-transcriber", heard, TRANSCRIBER_PRICES) is None


def test_transcription_by_the_token() -> None:
    heard = sum_transcription_usage([tokens(600_000, 100_000, 200_000), tokens(400_000, 0, 0, details=False)])
    expected = (1_000_000 * 3.0 + 100_000 * 1.25 + 200_000 * 5.0) / 1_000_000
    assert estimate_transcription_cost("token-transcriber", heard, TRANSCRIBER_PRICES) == pytest.approx(expected)
    # gpt-transcribe is priced by the minute only: tokens from it cannot be priced.
    assert estimate_transcription_cost("gpt-transcribe", heard, PRICES) is None
    # As the store has them: input tokens and their audio part (the rest is text).
    stored = {"seconds": 0.0, "input_tokens": 1_100_000, "input_audio_tokens": 1_000_000, "output_tokens": 200_000}
    assert estimate_transcription_cost("token-transcriber", stored, TRANSCRIBER_PRICES) == pytest.approx(expected)


def test_no_transcription_usage_costs_nothing_whatever_the_model() -> None:
    nothing = sum_transcription_usage([])
    assert estimate_transcription_cost("gpt-realtime-whisper", nothing, PRICES) == 0.0
    assert estimate_transcription_cost("unpriced", nothing, PRICES) == 0.0
    assert estimate_transcription_cost("", nothing, PRICES) == 0.0


def test_a_call_costs_both_parts_and_is_unknown_if_either_is() -> None:
    assert call_cost(0.25, 0.0125) == pytest.approx(0.2625)
    assert call_cost(0.25, 0.0) == 0.25
    assert call_cost(None, 0.0125) is None
    assert call_cost(0.25, None) is None
    assert call_cost(0.0, 0.0) == 0.0
