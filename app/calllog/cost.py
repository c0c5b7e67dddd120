"""What a call cost: token usage summed over the model's responses, priced per model.

`sum_usage` adds up the `usage` objects of the Realtime API's `response.done` events (GA
shape) into flat totals; `estimate_cost` prices totals with MODEL_PRICES (USD per 1M tokens:
text_in, text_cached, text_out, audio_in, audio_cached, audio_out).

The caller's words are transcribed by a separate model, billed on its own: either per minute
of audio (`audio_minute`, USD) or per token (audio_in, text_in, text_out). The usage objects
of `conversation.item.input_audio_transcription.completed` events are added up by
`sum_transcription_usage` and priced by `estimate_transcription_cost`; `call_cost` adds the
two parts.

GPT-Live bills time, not tokens: its usage reports (type `live_seconds`, the seconds billed
since the previous report, active and paused) are added up by `sum_live_usage` and priced by
`estimate_live_cost` per minute (`active_minute`, `standby_minute` for paused seconds).

A cost is unknown (None), never $0, when there was usage that MODEL_PRICES cannot price: a
model without an entry, or an entry without the price that usage needs. No usage at all
costs $0.0 whatever the model.

Cached input tokens are counted inside the input tokens: they are billed at the cached rate
instead of the input rate, not on top of it. When a total says how many cached tokens there
were but not of which modality (as `CallEnded` does), they are split between text and audio
in proportion to the input tokens of each.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

# The keys of `sum_usage`'s result, all integers.
USAGE_KEYS = (
    "responses",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "input_text_tokens",
    "input_audio_tokens",
    "cached_tokens",
    "cached_text_tokens",
    "cached_audio_tokens",
    "output_text_tokens",
    "output_audio_tokens",
)

# The keys of `sum_transcription_usage`'s result: seconds (a float), the others integers.
TRANSCRIPTION_USAGE_KEYS = (
    "seconds",
    "input_tokens",
    "input_audio_tokens",
    "input_text_tokens",
    "output_tokens",
)

# The `type` of a GPT-Live usage report; the keys of `sum_live_usage`'s result (seconds).
LIVE_USAGE = "live_seconds"
LIVE_USAGE_KEYS = ("seconds", "active_seconds", "paused_seconds")

_warned: set[tuple[str, str]] = set()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def sum_usage(usages: Iterable[Mapping[str, Any] | None]) -> dict[str, int]:
    """Totals of `response.done` usage objects; missing or malformed fields count as 0.

        {"total_tokens", "input_tokens", "output_tokens",
         "input_token_details": {"text_tokens", "audio_tokens", "cached_tokens",
                                 "cached_tokens_details": {"text_tokens", "audio_tokens"}},
         "output_token_details": {"text_tokens", "audio_tokens"}}
    """
    totals = dict.fromkeys(USAGE_KEYS, 0)
    for usage in usages:
        if not isinstance(usage, Mapping) or usage.get("type") == LIVE_USAGE:
            continue
        inputs = usage.get("input_token_details") or {}
        outputs = usage.get("output_token_details") or {}
        cached = inputs.get("cached_tokens_details") or {}
        totals["responses"] += 1
        totals["total_tokens"] += _int(usage.get("total_tokens"))
        totals["input_tokens"] += _int(usage.get("input_tokens"))
        totals["output_tokens"] += _int(usage.get("output_tokens"))
        totals["input_text_tokens"] += _int(inputs.get("text_tokens"))
        totals["input_audio_tokens"] += _int(inputs.get("audio_tokens"))
        totals["cached_tokens"] += _int(inputs.get("cached_tokens"))
        totals["cached_text_tokens"] += _int(cached.get("text_tokens"))
        totals["cached_audio_tokens"] += _int(cached.get("audio_tokens"))
        totals["output_text_tokens"] += _int(outputs.get("text_tokens"))
        totals["output_audio_tokens"] += _int(outputs.get("audio_tokens"))
    return totals


def sum_live_usage(usages: Iterable[Mapping[str, Any] | None]) -> dict[str, float]:
    """Totals of GPT-Live usage reports (seconds billed since the previous report each)."""
    totals = dict.fromkeys(LIVE_USAGE_KEYS, 0.0)
    for usage in usages:
        if isinstance(usage, Mapping) and usage.get("type") == LIVE_USAGE:
            for key in LIVE_USAGE_KEYS:
                totals[key] += _seconds(usage.get(key))
    return {key: round(value, 3) for key, value in totals.items()}


def estimate_live_cost(model: str, totals: Mapping[str, Any], prices: Mapping[str, Mapping[str, float]]) -> float | None:
    """USD for GPT-Live `totals` (as returned by `sum_live_usage`): active seconds at
    `active_minute`, paused ones at `standby_minute`. None when `model` has no price for them;
    no time at all costs 0.0."""
    active, paused = _seconds(totals.get("active_seconds")), _seconds(totals.get("paused_seconds"))
    if not (active or paused):
        return 0.0
    table = model_prices(model, prices)
    usd = _priced([(active / 60, "active_minute"), (paused / 60, "standby_minute")], table) if table else None
    if usd is None:
        _warn_once(model, "the minutes of the live model")
        return None
    return round(usd, 6)


def model_prices(model: str, prices: Mapping[str, Mapping[str, float]]) -> Mapping[str, float] | None:
    """The prices of `model`: its own entry, else the longest entry it is a dated snapshot of
    ("gpt-realtime-2025-08-28" → "gpt-realtime"); None when unknown."""
    if model in prices:
        return prices[model]
    candidates = [name for name in prices if model.startswith(name + "-")]
    return prices[max(candidates, key=len)] if candidates else None


def _warn_once(model: str, what: str) -> None:
    if (model, what) not in _warned:
        _warned.add((model, what))
        log.warning("no price for %s with model %r in MODEL_PRICES: its calls are logged with an unknown cost",
                     what, model)


def _priced(parts: Iterable[tuple[float, str]], table: Mapping[str, float]) -> float | None:
    """Sum of quantity × price for each (quantity, price key); None when a quantity that is
    not zero has no price (or a price that is not a number)."""
    total = 0.0
    for quantity, key in parts:
        if not quantity:
            continue
        price = table.get(key)
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price):
            return None
        total += quantity * price
    return total


def estimate_cost(model: str, usage_totals: Mapping[str, Any],
                  prices: Mapping[str, Mapping[str, float]]) -> float | None:
    """USD for `usage_totals` (as returned by `sum_usage`; only input_tokens, input_audio_tokens,
    cached_tokens, output_tokens and output_audio_tokens are needed) at `model`'s prices.

    None (unknown) when there were tokens and `model` has no price for them, with a warning
    logged once per model name; no tokens at all cost 0.0.
    """
    def count(key: str) -> int:
        return _int(usage_totals.get(key))

    input_audio = count("input_audio_tokens")
    input_text = count("input_text_tokens") or max(count("input_tokens") - input_audio, 0)
    output_audio = count("output_audio_tokens")
    output_text = count("output_text_tokens") or max(count("output_tokens") - output_audio, 0)

    cached_text, cached_audio = count("cached_text_tokens"), count("cached_audio_tokens")
    unattributed = max(count("cached_tokens") - cached_text - cached_audio, 0)
    if unattributed:
        inputs = input_text + input_audio
        share = round(unattributed * input_audio / inputs) if inputs else 0
        cached_audio += share
        cached_text += unattributed - share
    cached_text, cached_audio = min(cached_text, input_text), min(cached_audio, input_audio)

    parts = (
        (input_text - cached_text, "text_in"),
        (cached_text, "text_cached"),
        (output_text, "text_out"),
        (input_audio - cached_audio, "audio_in"),
        (cached_audio, "audio_cached"),
        (output_audio, "audio_out"),
    )
    if not any(quantity for quantity, _ in parts):
        return 0.0
    table = model_prices(model, prices)
    usd = _priced(parts, table) if table is not None else None
    if usd is None:
        _warn_once(model, "the tokens of the realtime model")
        return None
    return round(usd / 1_000_000, 6)


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0.0
    return float(value) if value > 0 else 0.0


def sum_transcription_usage(usages: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """Totals of the `usage` objects of input audio transcription events, either

        {"type": "duration", "seconds": float}
        {"type": "tokens", "input_tokens", "output_tokens", "total_tokens",
         "input_token_details": {"audio_tokens", "text_tokens"}}

    Missing or malformed fields count as 0. Input tokens without their details are taken as
    audio (what a transcription model reads is the caller's audio).
    """
    totals: dict[str, Any] = dict.fromkeys(TRANSCRIPTION_USAGE_KEYS, 0)
    totals["seconds"] = 0.0
    for usage in usages:
        if not isinstance(usage, Mapping):
            continue
        kind = usage.get("type")
        if kind == "duration" or (kind is None and "seconds" in usage):
            totals["seconds"] += _seconds(usage.get("seconds"))
            continue
        if kind not in ("tokens", None):
            continue
        details = usage.get("input_token_details")
        details = details if isinstance(details, Mapping) else {}
        inputs = _int(usage.get("input_tokens"))
        text = _int(details.get("text_tokens"))
        audio = _int(details.get("audio_tokens")) or max(inputs - text, 0)
        totals["input_tokens"] += max(inputs, audio + text)
        totals["input_audio_tokens"] += audio
        totals["input_text_tokens"] += text
        totals["output_tokens"] += _int(usage.get("output_tokens"))
    totals["seconds"] = round(totals["seconds"], 3)
    return totals


def estimate_transcription_cost(model: str, usage_totals: Mapping[str, Any],
                                prices: Mapping[str, Mapping[str, float]]) -> float | None:
    """USD for transcription `usage_totals` (as returned by `sum_transcription_usage`) at
    `model`'s prices: seconds at `audio_minute` per minute, tokens at audio_in / text_in /
    text_out per 1M. None (unknown) when there was usage that `model` has no price for;
    no usage at all costs 0.0."""
    seconds = _seconds(usage_totals.get("seconds"))
    audio_in = _int(usage_totals.get("input_audio_tokens"))
    text_in = _int(usage_totals.get("input_text_tokens")) or max(_int(usage_totals.get("input_tokens")) - audio_in, 0)
    text_out = _int(usage_totals.get("output_tokens"))
    if not (seconds or audio_in or text_in or text_out):
        return 0.0
    table = model_prices(model, prices)
    by_minute = _priced([(seconds / 60, "audio_minute")], table) if table is not None else None
    by_token = (_priced([(audio_in, "audio_in"), (text_in, "text_in"), (text_out, "text_out")], table)
                if table is not None else None)
    if by_minute is None or by_token is None:
        _warn_once(model, "the transcription of the caller")
        return None
    return round(by_minute + by_token / 1_000_000, 6)


def call_cost(realtime: float | None, transcription: float | None) -> float | None:
    """A call's cost: its realtime part plus its transcription part, unknown if either is."""
    if realtime is None or transcription is None:
        return None
    return round(realtime + transcription, 6)
