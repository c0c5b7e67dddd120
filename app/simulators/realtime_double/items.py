"""The state a connection's parts share: conversation items, and the response runs writing them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from app.simulators.realtime_double.records import ResponseRecord


@dataclass(eq=False)
class ConversationItem:
    data: dict[str, Any]  # public JSON shape, never with audio
    audio_ms: int = 0  # input audio, or output audio left after truncation
    generated_ms: int = 0  # output audio generated for it
    heard: str | None = None  # a user message's words, known to the model before any transcript
    truncated_away: bool = False  # dropped from the model's input by the session's truncation
    input_audio: dict[int, str] = field(default_factory=dict)  # client-sent base64 by content index
    run: ResponseRun | None = None


@dataclass(eq=False)
class ResponseRun:
    """A response while it is generated, and what the double needs to cut or retrieve its audio."""

    record: ResponseRecord
    item: ConversationItem
    context: list[ConversationItem]
    audio: bool
    format_kind: str
    asset_start: int
    script: str
    max_output_tokens: Any
    tools: list[Any]
    limit_reason: str | None
    oob: bool
    task: asyncio.Task[None] | None = None
    sent_chars: int = 0
    done: bool = False


def public_item(item: ConversationItem) -> dict[str, Any]:
    """A copy of the item's public shape that later changes to the item do not reach."""
    data = item.data
    if "content" in data:
        return {**data, "content": [dict(part) for part in data["content"]]}
    return dict(data)


def strip_audio(item: dict[str, Any]) -> dict[str, Any]:
    content = item.get("content")
    if not isinstance(content, list) or not any(isinstance(p, dict) and "audio" in p for p in content):
        return item
    return {**item, "content": [{k: v for k, v in p.items() if k != "audio"} for p in content]}
