"""Turn detection: an energy VAD on the audio timeline, so the same audio gives the same turns.

Like the service's, it takes any loud enough sound for speech: a clang in the barn starts and
ends a turn. What tells a voice from a noise is left to the transcription, which hears words
only in a turn with voice in it (`voice_ms`): windows whose zero-crossing rate is that of
voiced speech (vowels cross zero under ~1500 times a second; hiss, rattles and clangs, spread
over the telephone band, 3000–5000 times). Low, humming noise would pass for voice.
"""

from __future__ import annotations

import audioop

from app.simulators.realtime_double.formats import UNITS_PER_MS, pcm16_rms

SPEECH_START_MS = 100  # energy above threshold this long starts a turn
VAD_WINDOW_MS = 10
VOICED_CROSSINGS_PER_SECOND = 1500
VOICE_FOR_WORDS_MS = 100  # a turn with less voice than this has no words


def threshold_to_rms(threshold: float) -> float:
    """Map the API's 0..1 VAD threshold onto PCM16 RMS: 0.5 is -40 dBFS (about 328).

    Phone speech sits around -30..-15 dBFS in 10 ms windows; line noise and μ-law idle
    codes sit far below -55 dBFS, the floor at threshold 0.
    """
    return 32768.0 * 10 ** ((-55.0 + 30.0 * threshold) / 20.0)


class EnergyVad:
    """Energy turn detector on the audio timeline, in 10 ms windows.

    Speech starts after SPEECH_START_MS of consecutive windows at or above the threshold (the
    onset is the first of them) and stops after `silence_ms` of consecutive windows below it.
    Positions are timeline units (1/48000 s) counted from the first byte ever appended.
    """

    def __init__(self, threshold: float = 0.5, silence_ms: int = 500) -> None:
        self.threshold_rms = threshold_to_rms(threshold)
        self.silence_ms = silence_ms
        self.position = 0
        self.speaking = False
        self._pending = b""
        self._voiced_ms = 0
        self._silent_ms = 0
        self._onset = 0
        self.voice_ms = 0  # voice-like audio since the onset of the turn in progress (or last)

    def configure(self, threshold: float, silence_ms: int) -> None:
        self.threshold_rms = threshold_to_rms(threshold)
        self.silence_ms = silence_ms

    def reset(self, position: int) -> None:
        """Forget any turn in progress and resume at `position` (after a commit, clear or format change)."""
        self.position = position
        self.speaking = False
        self._pending = b""
        self._voiced_ms = self._silent_ms = 0
        self.voice_ms = 0

    @property
    def heard_voice(self) -> bool:
        """The turn in progress (or the last one) has enough voice in it for words."""
        return self.voice_ms >= VOICE_FOR_WORDS_MS

    def feed(self, pcm: bytes, rate: int) -> list[tuple[str, int]]:
        """Consume PCM16 at `rate`; return ("start", onset) / ("stop", end) events in order."""
        data = self._pending + pcm if self._pending else pcm
        window = rate // 1000 * VAD_WINDOW_MS * 2
        step = VAD_WINDOW_MS * UNITS_PER_MS
        view = memoryview(data)
        events: list[tuple[str, int]] = []
        offset = 0
        voice_crossings = VOICED_CROSSINGS_PER_SECOND * VAD_WINDOW_MS // 1000
        while offset + window <= len(data):
            chunk = view[offset : offset + window]
            voiced = pcm16_rms(chunk) >= self.threshold_rms
            start = self.position
            self.position += step
            offset += window
            if voiced and not self.speaking and self._voiced_ms == 0:
                self.voice_ms = 0  # a new onset
            if voiced and audioop.cross(chunk, 2) < voice_crossings:
                self.voice_ms += VAD_WINDOW_MS
            if not self.speaking:
                if voiced:
                    if self._voiced_ms == 0:
                        self._onset = start
                    self._voiced_ms += VAD_WINDOW_MS
                    if self._voiced_ms >= SPEECH_START_MS:
                        self.speaking = True
                        self._silent_ms = 0
                        events.append(("start", self._onset))
                else:
                    self._voiced_ms = 0
            elif voiced:
                self._silent_ms = 0
            else:
                self._silent_ms += VAD_WINDOW_MS
                if self._silent_ms >= self.silence_ms:
                    self.speaking = False
                    self._voiced_ms = 0
                    events.append(("stop", self.position))
        self._pending = bytes(view[offset:])
        return events
