"""What the caller says, frame by frame: each utterance (or noise burst) once the script says it
is due (at a time, after OCTI fell silent, or over OCTI's answer), silence or line noise in between."""

from __future__ import annotations

import numpy as np

from app.simulators import twilio_wire as wire
from app.simulators.twilio_caller.playback import Playback
from app.simulators.twilio_caller.records import CallResult, UtteranceRecord
from app.simulators.twilio_caller.script import CallScript, NoiseBurst, Utterance
from app.simulators.twilio_caller.timeline import CallTimeline
from app.simulators.twilio_wire import BYTES_PER_MS, FRAME_BYTES, SILENCE_FRAME


class CallerSpeech:
    """The caller's side of the media clock; times are ms since the stream started."""

    def __init__(self, script: CallScript, audio: list[bytes], bounds: list[tuple[float, float] | None],
                 playback: Playback, result: CallResult, timeline: CallTimeline) -> None:
        self.script = script
        self.audio = audio  # each utterance as μ-law 8 kHz
        self.bounds = bounds  # where the voice starts and ends in each
        self.playback = playback
        self.result = result
        self.timeline = timeline
        self.rng = np.random.default_rng(0x0C71)
        self.next_utt = 0
        self.speaking: tuple[int, int, int] | None = None  # (index, offset, start_ms)
        self.prev_start_ms: int | None = None
        self.prev_end_ms: float | None = None

    def frame(self, tick_ms: int, chunk: int) -> bytes:
        """The 20 ms the caller sends at `tick_ms`, as media chunk number `chunk`."""
        if self.speaking is None and self.next_utt < len(self.audio):
            utt = self.script.utterances[self.next_utt]
            if self._ready(utt, tick_ms):
                self.speaking = (self.next_utt, 0, tick_ms)
                self.next_utt += 1
                self.prev_start_ms = tick_ms
                burst = self.playback.current
                duration_ms = len(self.audio[self.speaking[0]]) / BYTES_PER_MS
                voice_start, voice_end = self.bounds[self.speaking[0]] or (0.0, duration_ms)
                noise = isinstance(utt, NoiseBurst)
                self.result.utterances.append(UtteranceRecord(
                    index=len(self.result.utterances), label=utt.label, wav="" if noise else str(utt.wav),
                    noise=noise, start_t=tick_ms / 1000,
                    end_t=(tick_ms + duration_ms) / 1000, duration_ms=duration_ms,
                    barge_in=utt.after_answer_starts_ms is not None, over_playback=not self.playback.idle,
                    speech_start_t=(tick_ms + voice_start) / 1000, speech_end_t=(tick_ms + voice_end) / 1000,
                    burst=burst.index if burst else None))
                self.timeline.log("sent", "media", utterance=utt.label, boundary="start", chunk=str(chunk),
                                  timestamp=str(tick_ms))
        if self.speaking is None:
            if self.script.comfort_noise_dbfs is not None:
                return wire.comfort_noise_frame(self.rng, self.script.comfort_noise_dbfs)
            return SILENCE_FRAME
        index, offset, start_ms = self.speaking
        audio = self.audio[index]
        frame = audio[offset:offset + FRAME_BYTES]
        offset += len(frame)
        if offset >= len(audio):
            self.speaking = None
            end_ms = start_ms + len(audio) / BYTES_PER_MS
            self.prev_end_ms = end_ms
            self.timeline.log("sent", "media", utterance=self.script.utterances[index].label, boundary="end",
                              chunk=str(chunk), timestamp=str(tick_ms), audio_end_t=end_ms / 1000)
        else:
            self.speaking = (index, offset, start_ms)
        return frame + SILENCE_FRAME[len(frame):]

    def done(self, tick_ms: int) -> bool:
        """Whether the caller hangs up now: everything said, and OCTI silent long enough after."""
        after = self.script.hangup_when_done_after_s
        if after is None or self.speaking or self.next_utt < len(self.audio):
            return False
        if not self.playback.idle:
            return False
        quiet_since = max(self.prev_end_ms or 0, self.playback.last_audio_end_ms or 0)
        return tick_ms - quiet_since >= after * 1000

    def _ready(self, utt: Utterance | NoiseBurst, tick_ms: int) -> bool:
        if utt.at is not None:
            return tick_ms >= round(utt.at * 1000)
        since = self.prev_start_ms if self.prev_start_ms is not None else -1
        answer = next((b for b in self.playback.bursts if b.start_t * 1000 >= since), None)
        if answer is None:
            return False
        if utt.after_answer_starts_ms is not None:
            return tick_ms >= answer.start_t * 1000 + utt.after_answer_starts_ms
        if not self.playback.idle or self.playback.last_audio_end_ms is None:
            return False
        quiet_since = max(self.prev_end_ms or 0, self.playback.last_audio_end_ms)
        return tick_ms - quiet_since >= self.script.silence_before_reply_ms
