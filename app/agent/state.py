"""A call's state, in small pieces: what was said, what the model is saying, the caller's turn."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Literal

from app.agent.rag import TurnRetrieval
from app.knowledge.retrieval import Retrieval
from app.channels.contract import CallOutcome


@dataclass(slots=True)
class Turn:
    index: int
    role: Literal["caller", "assistant"]
    item_id: str
    text: str = ""
    interrupted: bool = False
    heard_ms: float | None = None
    retrieval: Retrieval | None = None
    # Offsets on the call timeline (ms since the stream started).
    start_ms: float | None = None
    end_ms: float | None = None
    # Assistant turns: when the model's first audio arrived (perf_counter), and the latencies
    # from the caller's end of speech to it, and from it to the first frame sent to the caller.
    model_audio_at: float | None = None
    last_model_audio_at: float | None = None  # and its latest: said after a tool's result or not
    speech_end_to_model_audio_ms: float | None = None
    model_audio_to_caller_ms: float | None = None
    logged: bool = False  # handed to the call log at least once


@dataclass(slots=True)
class CallState:
    """What was said and what the call cost: the turns in order, by item, the counters."""

    started_at: float = field(default_factory=perf_counter)  # the call timeline's zero
    turns: list[Turn] = field(default_factory=list)
    caller_turns: dict[str, Turn] = field(default_factory=dict)
    assistant_turns: dict[str, Turn] = field(default_factory=dict)
    barge_ins: int = 0
    digits: list[str] = field(default_factory=list)
    usage: list[dict[str, Any]] = field(default_factory=list)
    transcription_usage: list[dict[str, Any]] = field(default_factory=list)
    speech_end_ms: float | None = None  # the caller's last end of speech not yet answered
    outcome: CallOutcome | None = None  # set when the call must end, with how
    recap_by_sms: bool = False  # the caller asked for the recap by SMS
    # The next turn's index, the call log's key for it: never reused, even when a noise's
    # turn leaves `turns` after a later turn was made (`forget_caller_turn`).
    next_index: int = 0

    def timeline_ms(self, at: float) -> float:
        return (at - self.started_at) * 1000

    def new_turn(self, role: Literal["caller", "assistant"], item_id: str) -> Turn:
        turn = Turn(self.next_index, role, item_id)
        self.next_index += 1
        self.turns.append(turn)
        return turn

    def caller_turn(self, item_id: str) -> Turn:
        turn = self.caller_turns.get(item_id)
        if turn is None:
            turn = self.caller_turns[item_id] = self.new_turn("caller", item_id)
        return turn

    def forget_caller_turn(self, turn: Turn) -> None:
        """A caller turn that was only a noise: it never was a turn of the conversation."""
        self.caller_turns.pop(turn.item_id, None)
        self.turns.remove(turn)

    def assistant_turn(self, item_id: str) -> Turn:
        """Looked up on every audio chunk: by item id, not by scanning the turns."""
        turn = self.assistant_turns.get(item_id)
        if turn is None:
            turn = self.assistant_turns[item_id] = self.new_turn("assistant", item_id)
        return turn

    def previous_question(self, turn: Turn | None = None) -> str | None:
        return next((t.text for t in reversed(self.turns) if t.role == "caller" and t.text and t is not turn), None)

    def last_caller_turn(self) -> Turn | None:
        return next((t for t in reversed(self.turns) if t.role == "caller"), None)


@dataclass(slots=True)
class AnswerState:
    """What the model is saying: the answer under way, answers muted by a barge-in, answers
    whose audio was all sent, and the audio generated per spoken item."""

    active: str | None = None
    muted: set[str] = field(default_factory=set)
    sent: set[str] = field(default_factory=set)
    generated_ms: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Cut:
    """Where the caller stopped hearing OCTI: `heard_ms` of the spoken item `playing` (None
    when nothing was playing), and the items they never heard."""

    playing: str | None
    heard_ms: float
    unheard: list[str]


@dataclass(slots=True)
class HeldVoice:
    """OCTI's voice while an interruption is judged: cleared at the caller, kept here. `cut` is
    where the caller stopped hearing it; `audio` what they have not heard yet, in order, as
    (item, audio in the caller's format): what was cleared, then what the model went on saying."""

    cut: Cut
    cleared: bool  # the caller was hearing OCTI when it was paused
    audio: list[tuple[str, bytearray]] = field(default_factory=list)
    ended: bool = False  # an answer's audio ended meanwhile: the channel is owed its AnswerEnded


@dataclass(slots=True)
class KnowledgeTurnState:
    """RAG_MODE=inject: the caller turn under way whose words retrieval follows, the ended turns
    whose answer is being released, and that release."""

    following: TurnRetrieval | None = None
    following_turn: str = ""
    releasing: dict[str, TurnRetrieval] = field(default_factory=dict)
    release: asyncio.Task[None] | None = None
