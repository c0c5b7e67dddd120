"""How fast a page may send what costs: its microphone audio, and the messages that set the
model to work.

A microphone runs in real time. Unbounded, a signed-in client could send audio many times
faster for a whole conversation: all of it forwarded to the model (billed), and with
RECORD_CALLS held in memory for the recording. So a page's audio may run ahead of the clock by
AUDIO_BURST_SECONDS (frames a network hiccup held up arrive in a bunch); audio past that is
dropped, each frame with an `error` (`audio_too_fast`), and a page AUDIO_CLOSE_SECONDS ahead is
no microphone: its socket is closed (1008, `audio_flood`).

The allowances come back a little faster than real time (CATCH_UP): a page that sends without
a pause, as the softphone does, would otherwise never regain what a hiccup took, and would
lose a frame to every later jitter.

A typed question stops OCTI, joins the model's conversation (billed with every later answer)
and starts a search; a reset opens a new model session; the end of a push-to-talk turn asks
for an answer. A person sends a few of them at once at most: MESSAGE_BURST, then
MESSAGES_PER_SECOND; past that each is refused with an `error` (`too_many_messages`).
"""

from __future__ import annotations

import time

from app.audio.formats import AudioFormat
from app.channels.browser import wire

AUDIO_BURST_SECONDS = 2.0
AUDIO_CLOSE_SECONDS = 10.0
CATCH_UP = 1.1  # seconds of allowance back per second
MESSAGE_BURST = 3
MESSAGES_PER_SECOND = 1.0
COSTLY_MESSAGES = (wire.UserText, wire.ResetSession, wire.UserAudioEnd)


class TokenBucket:
    """Up to `capacity` at once, given back at `per_second` (never beyond `capacity`).

    Not the `limits` library of app/ratelimit.py: it has no token bucket, so it cannot say "a
    few at once, then one a second", and its moving window keeps one entry per unit counted (a
    millisecond of audio here, 50 frames a second per call)."""

    def __init__(self, capacity: float, per_second: float) -> None:
        self._capacity = capacity
        self._per_second = per_second
        self._level = capacity
        self._at = time.monotonic()

    def take(self, amount: float) -> bool:
        """Take `amount` when there is that much (True); else take nothing (False)."""
        now = time.monotonic()
        self._level = min(self._capacity, self._level + (now - self._at) * self._per_second)
        self._at = now
        if amount > self._level:
            return False
        self._level -= amount
        return True


class Flooding(wire.WireError):
    """A frame past what the page may send at all: the socket is closed."""


class Pacing:
    """One page's allowances, from when its conversation started."""

    def __init__(self, audio_format: AudioFormat) -> None:
        self._format = audio_format
        # The largest frame the wire takes (3 s at 16 kHz) must fit at once.
        burst = max(AUDIO_BURST_SECONDS, audio_format.duration_ms(wire.MAX_AUDIO_BYTES) / 1000)
        self._forwarded = TokenBucket(burst, CATCH_UP)
        self._received = TokenBucket(max(AUDIO_CLOSE_SECONDS, burst), CATCH_UP)
        self._costly = TokenBucket(MESSAGE_BURST, MESSAGES_PER_SECOND)

    def check(self, message: wire.ClientMessage) -> None:
        """Raises WireError when `message` must be dropped, Flooding when the socket must close."""
        if isinstance(message, COSTLY_MESSAGES):
            if not self._costly.take(1):
                raise wire.WireError("too_many_messages",
                                     "Trop de messages à la suite : attendez une seconde avant de réessayer.")
            return
        if not isinstance(message, bytes):
            return
        seconds = self._format.duration_ms(len(message)) / 1000
        if not self._received.take(seconds):
            raise Flooding("audio_flood", "Le micro envoie bien plus vite que le temps réel : conversation fermée.")
        if not self._forwarded.take(seconds):
            raise wire.WireError("audio_too_fast",
                                 "Le micro envoie plus vite que le temps réel : cet audio est ignoré.")
