"""What a call session needs from the caller's side, whatever carries the call.

Twilio Media Streams is one channel; a browser websocket is another. A channel turns its
wire protocol into these events and these operations. Updates (`show`) are for channels with
a screen; a phone line ignores them.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from app.audio.formats import AudioFormat

if TYPE_CHECKING:
    from app.calllog.journal import CallJournal


class CallOutcome(enum.StrEnum):
    CALLER_HUNG_UP = "caller_hung_up"
    AGENT_ENDED = "agent_ended"
    TRANSFERRED = "transferred"
    ERROR = "error"
    TIMEOUT = "timeout"
    # Calls the line did not take (app/channels/twilio/admission.py).
    NOT_ALLOWED = "not_allowed"
    RATE_LIMITED = "rate_limited"
    BUSY = "busy"
    # A call-back that reached an answering machine: OCTI left a short message (no conversation).
    MACHINE_ANSWERED = "machine_answered"


@dataclass(frozen=True, slots=True)
class CallIdentity:
    call_id: str
    caller: str = ""
    called: str = ""
    channel: str = "twilio"
    extra: dict[str, str] = field(default_factory=dict)
    # A call OCTI placed to call the farmer back: the question it is about ("" when none was
    # given). None for a call the farmer placed.
    call_back: str | None = None


@dataclass(slots=True)  # not frozen: 50 a second per call, and a frozen __init__ costs 2.5x
class CallerAudio:
    audio: bytes
    received_at: float  # perf_counter() when the message arrived, to measure the bridge delay


@dataclass(frozen=True, slots=True)
class PlaybackMark:
    """The far end reports that playback reached a mark we placed (or flushed it)."""

    name: str


@dataclass(frozen=True, slots=True)
class Digit:
    digit: str


@dataclass(frozen=True, slots=True)
class TurnEnded:
    """The caller says they finished speaking (push-to-talk let go)."""


@dataclass(frozen=True, slots=True)
class ConversationReset:
    """The caller wants a fresh conversation on the same connection."""


@dataclass(frozen=True, slots=True)
class CallerInterrupts:
    """The caller asked OCTI to stop talking (a button, not their voice)."""


@dataclass(frozen=True, slots=True)
class CallerText:
    """The caller typed their question (no microphone)."""

    text: str


ChannelEvent = CallerAudio | PlaybackMark | Digit | TurnEnded | ConversationReset | CallerInterrupts | CallerText


# ------------------------------------------------------------------ updates for a screen


@dataclass(frozen=True, slots=True)
class SessionReady:
    """The model is ready: the caller may speak."""


@dataclass(frozen=True, slots=True)
class AnswerWords:
    """A new piece of what OCTI is saying."""

    text: str


@dataclass(frozen=True, slots=True)
class AnswerEnded:
    """All of an answer's audio has been sent."""


@dataclass(frozen=True, slots=True)
class Notice:
    """Something went wrong or is about to happen, in French, for the caller; `code` names it
    for programs."""

    message: str
    code: str = "notice"


ChannelUpdate = SessionReady | AnswerWords | AnswerEnded | Notice


class CallChannel(Protocol):
    audio_format: AudioFormat
    identity: CallIdentity
    # The longest a conversation may last on this channel (None: no limit of ours).
    max_seconds: float | None

    def events(self) -> AsyncIterator[ChannelEvent]:
        """Caller events, in order, until the caller hangs up or the transport closes."""
        ...

    async def send_audio(self, audio: bytes, mark: str) -> None:
        """Queue whole frames of audio for playback to the caller, then the mark `mark`: a
        PlaybackMark comes back once everything sent so far has been played."""
        ...

    async def clear_playback(self) -> None:
        """Drop all queued audio at once; pending marks come back flushed, not played."""
        ...

    async def show(self, update: ChannelUpdate) -> None:
        """Tell the caller's screen, if the channel has one."""
        ...

    def transfer_unavailable(self) -> str | None:
        """Why this call cannot be handed to a person now (French, for the caller), or None."""
        ...

    async def transfer(self, summary: str) -> str | None:
        """Hand the call to a person, who first hears `summary`; None once the channel has
        taken it away (the conversation is over), else why not, in French."""
        ...

    def texts_unavailable(self) -> str | None:
        """Why the caller cannot be sent a text after the call (French), or None."""
        ...

    async def send_text(self, text: str) -> None:
        """Text the caller (after the call: the channel may be closed). Raises on failure."""
        ...

    async def end(self, outcome: CallOutcome) -> None:
        """Close the caller's side; the outcome decides what the caller hears next."""
        ...


class Conversations(Protocol):
    """What a channel needs from the agent behind it."""

    def reachable(self) -> bool:
        """Whether a conversation can be held now (the engine answered lately)."""
        ...

    @property
    def connecting(self) -> int:
        """Conversations handed over whose engine is still being readied: not yet counted in
        `Metrics.active_calls`, but under way (a drain and the capacity wait for them too)."""
        ...

    def expect(self, call_id: str, channel_format: AudioFormat) -> None:
        """A call is on its way (the channel, which plays `channel_format`, is still setting
        up): get ready for it."""
        ...

    def release(self, call_id: str) -> None:
        """The call expected here is held by another instance: let go of what was readied."""
        ...

    async def converse(self, channel: CallChannel, journal: CallJournal) -> CallOutcome:
        """Hold the conversation until it ends; always ends the channel."""
        ...
