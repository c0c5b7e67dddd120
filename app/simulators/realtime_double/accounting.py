"""Token accounting: what the model reads after the session's truncation, and each response's usage."""

from __future__ import annotations

import json
import math
from typing import Any

from app.engines.openai_realtime import models
from app.simulators.realtime_double.items import ConversationItem, ResponseRun


class TokenAccounting:
    """One connection's truncations and prompt cache, which carry from one response to the next."""

    def __init__(self) -> None:
        # (instructions, text tokens, audio tokens, truncations so far) of the previous response's input
        self._last_input: tuple[str, int, int, int] | None = None
        self.truncations_applied = 0  # times the conversation was cut to fit the truncation limit

    def truncated(self, conversation: list[ConversationItem], max_output_tokens: Any, policy: Any,
                  model: str) -> list[ConversationItem]:
        """The conversation the model reads, after the session's truncation: "auto" drops the
        oldest items just enough to fit the context; a retention ratio, once over its limit,
        drops down to that fraction of the limit, so the next truncations come later."""
        policy = policy or "auto"
        visible = [item for item in conversation if not item.truncated_away]
        if policy == "disabled":
            return visible
        reserve = max_output_tokens if isinstance(max_output_tokens, int) else models.MAX_OUTPUT_TOKENS
        limit = models.context_window(model) - reserve
        keep = 1.0
        if isinstance(policy, dict):
            limit = min((policy.get("token_limits") or {}).get("post_instructions") or limit, limit)
            keep = policy["retention_ratio"]
        total = sum(_tokens(item) for item in visible)
        if total > limit:
            self.truncations_applied += 1
            while len(visible) > 1 and total > limit * keep:
                dropped = visible.pop(0)
                dropped.truncated_away = True
                total -= _tokens(dropped)
        return visible

    def usage(self, run: ResponseRun) -> dict[str, Any]:
        """Plausible token counts: audio in 1/100 ms (user) or 1/50 ms (assistant), out 1/50 ms,
        text about 4 characters a token, and a prompt cache over the previous turn."""
        record = run.record
        text_chars = len(record.instructions) + (len(json.dumps(run.tools)) if run.tools else 0)
        audio_tokens = 0
        for item in run.context:
            chars, tokens = _item_cost(item)
            text_chars += chars
            audio_tokens += tokens
        text_tokens = math.ceil(text_chars / 4)
        input_tokens = text_tokens + audio_tokens
        cached_text = cached_audio = 0
        if not run.oob:
            previous = self._last_input
            if (previous is not None and previous[0] == record.instructions and previous[1] + previous[2] >= 1024
                    and previous[3] == self.truncations_applied):
                cached_text, cached_audio = min(text_tokens, previous[1]), min(audio_tokens, previous[2])
                cached = (cached_text + cached_audio) // 64 * 64  # the cache works in 64-token blocks
                cached_audio = min(cached_audio, cached)
                cached_text = cached - cached_audio
            self._last_input = (record.instructions, text_tokens, audio_tokens, self.truncations_applied)
        output_audio = math.ceil(record.audio_ms / 50) if run.audio else 0
        output_text = math.ceil(len(record.transcript) / 4)
        output_tokens = output_audio + output_text
        return {
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {
                "text_tokens": text_tokens,
                "audio_tokens": audio_tokens,
                "image_tokens": 0,
                "cached_tokens": cached_text + cached_audio,
                "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": output_text, "audio_tokens": output_audio},
        }


def rate_limits_event(usage: dict[str, Any] | None) -> dict[str, Any]:
    used = usage["total_tokens"] if usage else 0
    return {
        "type": "rate_limits.updated",
        "rate_limits": [
            {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
            {"name": "tokens", "limit": 800000, "remaining": max(0, 800000 - used), "reset_seconds": 0.6},
        ],
    }


def _tokens(item: ConversationItem) -> int:
    chars, audio = _item_cost(item)
    return math.ceil(chars / 4) + audio


def _item_cost(item: ConversationItem) -> tuple[int, int]:
    """(text characters, audio tokens) an item adds to a model input."""
    data = item.data
    kind = data.get("type")
    if kind == "function_call":
        return len(data.get("name") or "") + len(data.get("arguments") or ""), 0
    if kind == "function_call_output":
        return len(data.get("output") or ""), 0
    if kind != "message":
        return len(json.dumps(data)), 0
    chars = audio = 0
    for part in data.get("content") or []:
        part_type = part.get("type")
        if part_type in ("input_text", "output_text"):
            chars += len(part.get("text") or "")
        elif part_type == "input_audio":
            audio = math.ceil(item.audio_ms / 100)
        elif part_type == "output_audio":
            audio = math.ceil(item.audio_ms / 50)
    return chars, audio
