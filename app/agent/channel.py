"""What a call session needs from the caller's side, whatever carries the call.

Twilio Media Streams is one channel; a browser websocket will be another. A channel
turns its wire protocol into these events and these operations.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from app.audio.formats import AudioFormat


class CallOutcome(enum.StrEnum):
    CALLER_HUNG_UP = "caller_hung_up"
    AGENT_ENDED = "agent_ended"
    TRANSFERRED = "transferred"
    ERROR = "error"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class CallIdentity:
    call_id: str
    caller: str = ""
    called: str = ""
    channel: str = "twilio"
    extra: dict[str, str] = field(default_factory=dict)


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


ChannelEvent = CallerAudio | PlaybackMark | Digit

# Takes an event at once, from the transport's own callback; False declines it (it then comes
# through the channel's iterator, in order with the rest).
EventTaker = Callable[[ChannelEvent], bool]


class CallChannel(Protocol):
    audio_format: AudioFormat
    identity: CallIdentity

    def events(self, take_now: EventTaker | None = None) -> AsyncIterator[ChannelEvent]:
        """Caller events until the caller hangs up or the transport closes.

        A channel whose transport allows it hands each event to `take_now` as it arrives,
        without a task switch; those `take_now` declines, and all events of a channel that
        cannot, come through the iterator, in order.
        """
        ...

    async def send_audio(self, audio: bytes, mark: str) -> None:
        """Queue whole frames of audio for playback to the caller, then the mark `mark`: a
        PlaybackMark comes back once everything sent so far has been played."""
        ...

    async def clear_playback(self) -> None:
        """Drop all queued audio at once; pending marks come back flushed, not played."""
        ...

    async def end(self, outcome: CallOutcome) -> None:
        """Close the caller's side; the outcome decides what the caller hears next."""
        ...
