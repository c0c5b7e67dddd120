"""The caller's audio on its way to the engine: gathered into fewer sends wherever the
service's turn detection cannot be waiting on it, then converted to the engine's format.

Sends are a large share of a call's CPU (benchmarks/README.md, "Relay"), and Twilio's frames
are 20 ms. What must not wait is what turn detection acts on: sound between turns (the start
of speech) and quiet during and just after the caller's speech (its end). The rest waits:

- quiet audio between the caller's turns, about half of a call, goes GATHER_MS at a time: a
  client-driven service (the Realtime API's turn detection) reacts to sound, not to silence,
  so it only has to arrive in order;
- the caller's speech inside a turn goes SPEECH_GATHER_MS at a time: the service has already
  heard the turn begin, and cannot hear it end while speech goes on.

Sound outside a turn is sent at once with whatever was gathered before it, and so is every
quiet frame of a turn and of the HANGOVER_MS after the last sound (the service reports speech
some time after hearing it). On a line quiet between words, the service hears speech begin
and end as soon as it would with every frame sent alone; on a line whose noise never falls
under QUIET_RMS, it hears the end up to SPEECH_GATHER_MS - 20 ms later.
"""

from __future__ import annotations

from time import perf_counter

from app.audio.convert import make_converter
from app.audio.formats import AudioFormat
from app.audio.g711 import pcm16_level, ulaw_level

# -55 dBFS: the floor of turn detection even at its most sensitive (threshold 0); phone speech
# is at -30..-15 dBFS, an idle line's noise and μ-law idle codes below it.
QUIET_RMS = 58
# Longer than a service takes to report the speech it heard (SpeechStarted), network included.
HANGOVER_MS = 600.0
# Quiet audio goes this much at a time when the engine lets it wait: at 200 ms rather than 100,
# the relay's server took 5-15 % less CPU again (benchmarks/README.md, "Relay").
GATHER_MS = 200
# Speech inside the caller's turn goes this much at a time: two Twilio frames, so a noisy line's
# end of speech is heard at most 20 ms later, for a third fewer sends (benchmarks/README.md).
SPEECH_GATHER_MS = 40


class CallerAudioGate:
    """Says, frame by frame, which caller audio goes to the engine now (`take`), and hands over
    what it gathered whenever something else must come after it (`release`): both in the
    engine's format."""

    __slots__ = ("_level", "_to_engine", "_quiet_hold_bytes", "_speech_hold_bytes", "_gathered",
                 "_gathered_bytes", "_sound_until", "turn_open")

    def __init__(self, audio_format: AudioFormat, engine_format: AudioFormat, may_wait: bool) -> None:
        self._level = ulaw_level if audio_format.encoding == "pcmu" else pcm16_level
        self._to_engine = make_converter(audio_format, engine_format)
        # Whole samples, so each send is whole audio; 0: nothing is gathered.
        self._quiet_hold_bytes = audio_format.frame_bytes(GATHER_MS) if may_wait else 0
        self._speech_hold_bytes = audio_format.frame_bytes(SPEECH_GATHER_MS) if may_wait else 0
        self._gathered: list[bytes] = []
        self._gathered_bytes = 0
        self._sound_until = 0.0
        self.turn_open = False  # the engine reported the caller's speech, not yet its end

    def take(self, frame: bytes, now: float | None = None) -> bytes | None:
        """The audio to send now, this frame included (None: it is gathered, to go later)."""
        if self._quiet_hold_bytes == 0:
            return self._to_engine.convert(frame)
        now = perf_counter() if now is None else now
        if self._level(frame) >= QUIET_RMS:
            self._sound_until = now + HANGOVER_MS / 1000
            if self.turn_open:
                return self._gather(frame, self._speech_hold_bytes)
        elif not self.turn_open and now >= self._sound_until:
            return self._gather(frame, self._quiet_hold_bytes)
        if not self._gathered:
            return self._to_engine.convert(frame)
        self._gathered.append(frame)
        return self.release()

    def _gather(self, frame: bytes, hold_bytes: int) -> bytes | None:
        self._gathered.append(frame)
        self._gathered_bytes += len(frame)
        return self.release() if self._gathered_bytes >= hold_bytes else None

    def release(self) -> bytes | None:
        """Everything gathered, in order (None when nothing is)."""
        if not self._gathered:
            return None
        audio = b"".join(self._gathered)
        self._gathered.clear()
        self._gathered_bytes = 0
        return self._to_engine.convert(audio)
