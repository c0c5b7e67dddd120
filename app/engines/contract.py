"""What a call session needs from a speech-to-speech service, whatever the service.

An engine carries one conversation: caller audio in, the model's answers out, and the turn
events in between. The session speaks only this contract; each engine translates it to and
from its service's wire protocol (`app.engines.openai_realtime` for the Realtime API).

Two kinds of services fit:

* client-driven turns (the Realtime API with our own retrieval): the service detects speech,
  we ask for each answer (`answer`), cancel it and cut it at what was heard (`cut`);
* service-driven turns (GPT-Live, full duplex): the model decides when it speaks and when it
  yields to the caller; it reports what it did (`AnswerStarted`, `Yielded`), and it hands
  reasoning or tools to us as tool calls (delegation).

`EngineTraits` says which of the two an engine is, and what it can be asked to do.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Literal, Protocol

from app.audio.formats import AudioFormat


def announced_end(expires_at: Any) -> float | None:
    """A service's announced session end (`expires_at`, Unix seconds) on the `perf_counter()`
    clock the session's timers use; None when it is not a number."""
    if not isinstance(expires_at, (int, float)) or isinstance(expires_at, bool):
        return None
    return perf_counter() + (expires_at - time.time())


class EngineUnavailable(RuntimeError):
    """The service could not be reached or refused us."""


@dataclass(frozen=True, slots=True)
class EngineTraits:
    # "client": the session asks for each answer; "service": the model takes its own turns.
    turns: Literal["client", "service"]
    # The service can be told how much of an answer was heard (a truncate).
    cuts_answers: bool
    # The caller's words stream in while they speak (not only once their turn ended).
    streams_caller_words: bool
    # How long after the caller's last sound `SpeechStopped` comes at the latest (the silence
    # turn detection waits for): a turn not ended that long after it began lasted longer.
    speech_end_wait_ms: float = 0.0
    # Caller audio that turn detection is not waiting on may reach the service a little late,
    # gathered into fewer sends (app/agent/caller_audio.py): quiet between the caller's turns
    # (a turn starts on sound, never on silence), speech inside one (it ends on silence only).
    # Not so for a full-duplex model, which may take the floor in any pause.
    caller_audio_may_wait: bool = False


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call: name, description for the model, JSON-schema parameters."""

    name: str
    description: str
    parameters: dict[str, Any]


# ------------------------------------------------------------------ events from the engine


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started talking: `turn` names their turn; `at_ms` on the audio timeline."""

    turn: str
    at_ms: float


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """The caller stopped talking at `at_ms` (the service's silence wait already deducted);
    `spoken_ms`: how long their sound lasted (without the audio kept from before it)."""

    turn: str
    at_ms: float
    spoken_ms: float


@dataclass(frozen=True, slots=True)
class CallerWords:
    """The caller's words for a turn: a new piece (`final` False) or the whole text (True)."""

    turn: str
    text: str
    final: bool
    usage: dict[str, Any] | None = None  # the transcription's billing, with the final text


@dataclass(frozen=True, slots=True)
class AnswerStarted:
    answer: str


@dataclass(slots=True)  # not frozen: dozens a second per call
class AnswerAudio:
    """Audio of the answer's spoken item `item`, in the engine's `output_format`; `received_at` is
    perf_counter() when it arrived, for the bridge delay."""

    answer: str
    item: str
    audio: bytes
    received_at: float


@dataclass(frozen=True, slots=True)
class AnswerAudioDone:
    answer: str
    item: str


@dataclass(frozen=True, slots=True)
class AnswerTextPiece:
    """A new piece of what the spoken item says, as the model speaks it (for screens)."""

    item: str
    text: str


@dataclass(frozen=True, slots=True)
class AnswerText:
    """What the spoken item says, once complete."""

    item: str
    text: str


@dataclass(frozen=True, slots=True)
class AnswerDone:
    answer: str
    status: str  # completed, cancelled, incomplete, failed
    items: tuple[str, ...] = ()
    usage: dict[str, Any] | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Yielded:
    """A service-driven engine stopped speaking to let the caller in: what it had sent that
    the caller has not heard yet must go. `item`: the spoken item it stopped in."""

    answer: str
    item: str = ""


@dataclass(frozen=True, slots=True)
class ToolCall:
    call: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(frozen=True, slots=True)
class EngineError:
    code: str
    message: str
    fatal: bool  # the conversation cannot go on


@dataclass(frozen=True, slots=True)
class Summary:
    """An out-of-band text answer and what it was billed."""

    text: str
    usage: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Billing the engine reports outside answers (e.g. per active minute)."""

    usage: dict[str, Any]


EngineEvent = (SpeechStarted | SpeechStopped | CallerWords | AnswerStarted | AnswerAudio | AnswerAudioDone
               | AnswerTextPiece | AnswerText | AnswerDone | Yielded | ToolCall | EngineError | UsageReport)


# ------------------------------------------------------------------ the conversation so far


@dataclass(frozen=True, slots=True)
class Exchange:
    """One turn of the conversation, as text: what a new session is given to carry on.
    `cut`: the caller heard only this much of what the assistant was saying."""

    role: Literal["caller", "assistant"]
    text: str
    cut: bool = False


@dataclass(frozen=True, slots=True)
class Conversation:
    """The conversation so far; `context`: the knowledge for the next answer only (the
    passages of the question under way), forgotten once that answer is done."""

    exchanges: Sequence[Exchange] = field(default_factory=tuple)
    context: str | None = None


# ------------------------------------------------------------------ the engine


class Engine(Protocol):
    traits: EngineTraits
    input_format: AudioFormat  # the caller's audio, as `send_audio` takes it
    output_format: AudioFormat  # the answers' audio (`AnswerAudio`)

    def events(self) -> AsyncIterator[EngineEvent]:
        """The engine's events in order, until its connection ends (a fatal error ends it too):
        then `recycle` may carry the conversation on, and `events` be read again."""
        ...

    @property
    def is_open(self) -> bool:
        """The connection to the service is up (a pre-warmed engine may have lost it)."""
        ...

    @property
    def close_reason(self) -> str:
        """Why the events ended (for the call log), once they have."""
        ...

    @property
    def session_ends_at(self) -> float | None:
        """When the service will end the current session (a `perf_counter()` time), as it
        announced it (`announced_end`); None until it has, or when it does not."""
        ...

    async def send_audio(self, audio: bytes) -> None:
        """Caller audio, in `input_format`."""
        ...

    async def greet(self, text: str) -> None:
        """Have the model say `text` (first, or as a notice between answers)."""
        ...

    async def add_caller_text(self, text: str) -> None:
        """The caller typed instead of speaking: their words join the conversation (no answer
        is asked for)."""
        ...

    async def end_turn(self) -> None:
        """The caller says their turn is over (push-to-talk released): end it now, without
        waiting for the silence the service's turn detection needs. A `SpeechStopped` follows
        unless the service had already ended the turn by itself."""
        ...

    async def answer(self, *, context: str | None = None, tools: Sequence[ToolSpec] = (),
                     instructions: str | None = None) -> None:
        """Client-driven turns: answer now. `context` is given for this answer only (passages);
        `tools` and `instructions` replace the session's for this answer only."""
        ...

    async def cancel(self) -> None:
        """Stop the answer under way."""
        ...

    async def cut(self, item: str, heard_ms: float) -> None:
        """The caller heard `heard_ms` of the spoken item `item`: forget the rest (0: all of it)."""
        ...

    async def discard(self, item: str) -> None:
        """Forget a spoken item entirely (never heard)."""
        ...

    async def tool_result(self, call: str, output: str, *, then_answer: bool = True) -> None:
        """The result of a tool call, for the model to carry on with (`then_answer` False: it
        stays silent, e.g. when the call is ending)."""
        ...

    async def summarize(self, instructions: str) -> Summary | None:
        """Out of band, once the conversation is over: a text answer to `instructions` that does
        not join the conversation (None when the service gave none). Reads the events itself:
        call it after the session stopped reading them."""
        ...

    async def recycle(self, conversation: Conversation) -> None:
        """Carry on in a fresh service session, given the conversation so far (an empty one
        starts the conversation afresh), whether the current one is still up or was lost.
        Raises EngineUnavailable when the fresh session cannot be opened."""
        ...

    async def close(self) -> dict[str, Any] | None:
        """End the session. Returns the usage the service reports only as it ends (billed since
        the last `UsageReport`: GPT-Live's `session.closed`), for the call's cost; else None."""
        ...
