"""What one session of the GPT-Live double keeps: the speeches it queues, the delegations it
made, and the record tests read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Speech:
    """Something the model says: `ms` of the recording from `asset_ms`, or the fixture's audio."""

    kind: str  # greeting, acknowledgement, answer, fixture
    ms: int
    asset_ms: int = 0
    audio: bytes | None = None
    sent_ms: int = 0


@dataclass
class Delegation:
    id: str
    question: str
    result: str | None = None  # "commentary" or "thinking", once the application answered
    content: str = ""


@dataclass
class Record:
    """What tests read: client events as validated (audio counted, not kept), server events."""

    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    audio_in_ms: int = 0
    yields: int = 0
    spoken: list[str] = field(default_factory=list)  # the kind of each speech started
