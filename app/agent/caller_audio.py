"""The caller's audio on its way to the engine: frame by frame while they may be speaking,
gathered into fewer sends while the line is quiet between their turns, then converted to the
engine's format.

About half of a call is the caller listening. Outside the caller's turns a client-driven
service (the Realtime API's turn detection) reacts to sound, not to silence, so the quiet
audio only has to reach it in order, not within 20 ms. Sending it 200 ms at a time, instead
of as Twilio's 20 ms frames, takes nine sends (and nine resampling calls) in ten off that half
of the call, and sends are a large share of a call's CPU (benchmarks/README.md, "Relay").

Sound is never held: a frame above QUIET_RMS is sent at once with whatever was gathered before
it, and so is every frame of a caller's turn, and of the HANGOVER_MS after the last sound (the
service reports speech some time after hearing it). The service hears speech begin and end as
soon as it would with every frame sent alone.
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
GATHER_MS = 200.0


class CallerAudioGate:
    """Says, frame by frame, which caller audio goes to the engine now (`take`), and hands over
    what it gathered whenever something else must come after it (`release`): both in the
    engine's format."""

    __slots__ = ("_level", "_to_engine", "_hold_bytes", "_gathered", "_gathered_bytes", "_sound_until",
                 "turn_open")

    def __init__(self, audio_format: AudioFormat, engine_format: AudioFormat, may_wait: bool) -> None:
        self._level = ulaw_level if audio_format.encoding == "pcmu" else pcm16_level
        self._to_engine = make_converter(audio_format, engine_format)
        # Whole samples, so each send is whole audio; 0: nothing is gathered.
        samples = int(GATHER_MS * audio_format.rate / 1000) if may_wait else 0
        self._hold_bytes = samples * audio_format.bytes_per_sample
        self._gathered: list[bytes] = []
        self._gathered_bytes = 0
        self._sound_until = 0.0
        self.turn_open = False  # the engine reported the caller's speech, not yet its end

    def take(self, frame: bytes, now: float | None = None) -> bytes | None:
        """The audio to send now, this frame included (None: it is gathered, to go later)."""
        if self._hold_bytes == 0:
            return self._to_engine.convert(frame)
        now = perf_counter() if now is None else now
        if self._level(frame) >= QUIET_RMS:
            self._sound_until = now + HANGOVER_MS / 1000
        elif not self.turn_open and now >= self._sound_until:
            self._gathered.append(frame)
            self._gathered_bytes += len(frame)
            return self.release() if self._gathered_bytes >= self._hold_bytes else None
        if not self._gathered:
            return self._to_engine.convert(frame)
        self._gathered.append(frame)
        return self.release()

    def release(self) -> bytes | None:
        """Everything gathered, in order (None when nothing is)."""
        if not self._gathered:
            return None
        audio = b"".join(self._gathered)
        self._gathered.clear()
        self._gathered_bytes = 0
        return self._to_engine.convert(audio)
