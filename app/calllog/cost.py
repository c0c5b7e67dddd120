"""What a call cost: token usage summed over the model's responses, priced per model.

`sum_usage` adds up the `usage` objects of the Realtime API's `response.done` events (GA
shape) into flat totals; `estimate_cost` prices totals with MODEL_PRICES (USD per 1M tokens:
text_in, text_cached, text_out, audio_in, audio_cached, audio_out).

Cached input tokens are counted inside the input tokens: they are billed at the cached rate
instead of the input rate, not on top of it. When a total says how many cached tokens there
were but not of which modality (as `CallEnded` does), they are split between text and audio
in proportion to the input tokens of each.
"""

from __future__ import annotations

import logging
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

_warned_models: set[str] = set()


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
        if not isinstance(usage, Mapping):
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


def model_prices(model: str, prices: Mapping[str, Mapping[str, float]]) -> Mapping[str, float] | None:
    """The prices of `model`: its own entry, else the longest entry it is a dated snapshot of
    ("gpt-realtime-2025-08-28" → "gpt-realtime"); None when unknown."""
    if model in prices:
        return prices[model]
    candidates = [name for name in prices if model.startswith(name + "-")]
    return prices[max(candidates, key=len)] if candidates else None


def estimate_cost(model: str, usage_totals: Mapping[str, Any], prices: Mapping[str, Mapping[str, float]]) -> float:
    """USD for `usage_totals` (as returned by `sum_usage`; only input_tokens, input_audio_tokens,
    cached_tokens, output_tokens and output_audio_tokens are needed) at `model`'s prices.

    An unknown model costs 0.0, with a warning logged once per model name.
    """
    table = model_prices(model, prices)
    if table is None:
        if model not in _warned_models:
            _warned_models.add(model)
            log.warning("no price for model %r in MODEL_PRICES: its calls are logged at $0", model)
        return 0.0

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

    def price(key: str) -> float:
        return float(table.get(key, 0.0))

    usd = (
        (input_text - cached_text) * price("text_in")
        + cached_text * price("text_cached")
        + output_text * price("text_out")
        + (input_audio - cached_audio) * price("audio_in")
        + cached_audio * price("audio_cached")
        + output_audio * price("audio_out")
    ) / 1_000_000
    return round(usd, 6)
