"""How the Realtime double's transcription models deliver the caller's words.

Two behaviours, as the service's models have them (`openai.types.realtime.AudioTranscription`):

* streaming models (`gpt-realtime-whisper`, `gpt-live-transcribe`) send
  `conversation.item.input_audio_transcription.delta` while the caller speaks, each word some
  time behind the audio (the `delay` setting trades that lag for accuracy), and `completed`
  once the turn is committed and its last word is out;
* every other model transcribes the committed turn: nothing arrives until the commit, then the
  text after a processing delay (0.3–1.5 s on the service, 0.8 s here by default).

The words are scripted (the double does not recognise speech). A streamed utterance's words
are laid out at a conversational pace from the speech onset; words the caller had not reached
at the pace when speech stopped are squeezed to the end of speech (a fast talker). Streaming
runs on the audio timeline, like the double's VAD, so the same audio gives the same events.

The service publishes no figures for the streaming lag per `delay`; `STREAM_LAG_SECONDS` holds
the double's assumptions, and `RealtimeDouble(stream_lag_seconds=…)` overrides them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from app.engines.openai_realtime.models import TOKEN_BILLED_TRANSCRIPTION

# Assumed lag of a streamed word behind the audio, per `delay` (unset: "medium").
STREAM_LAG_SECONDS = {"minimal": 0.15, "low": 0.3, "medium": 0.5, "high": 0.8, "xhigh": 1.2}
DEFAULT_DELAY = "medium"
# Default processing time of a committed turn for the models that do not stream.
COMMITTED_TURN_SECONDS = 0.8
# French conversational speech, in characters of transcript per second of audio.
CHARS_PER_SECOND = 14.0


def transcription_usage(model: str, transcript: str, audio_ms: int) -> dict[str, object]:
    """The `usage` of a completed transcription: duration, or tokens for the gpt-4o models."""
    if model in TOKEN_BILLED_TRANSCRIPTION:
        audio_tokens = math.ceil(audio_ms / 100)
        output = math.ceil(len(transcript) / 4)
        return {"type": "tokens", "input_tokens": audio_tokens, "output_tokens": output,
                "total_tokens": audio_tokens + output,
                "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": 0}}
    return {"type": "duration", "seconds": round(audio_ms / 1000, 3)}


@dataclass
class StreamedUtterance:
    """One caller utterance of a streaming model: which words are due at a timeline position.

    Positions are timeline units (1/48000 s), as in the double's VAD."""

    item_id: str
    transcript: str
    onset: int
    lag: int
    units_per_char: float
    # (end of the word in the transcript, position where the caller finished saying it)
    words: list[tuple[int, int]] = field(default_factory=list)
    sent_chars: int = 0
    committed: bool = False
    completed: bool = False

    @classmethod
    def start(cls, item_id: str, transcript: str, onset: int, lag_seconds: float,
              units_per_second: int) -> StreamedUtterance:
        utterance = cls(item_id, transcript, onset, round(lag_seconds * units_per_second),
                        units_per_second / CHARS_PER_SECOND)
        utterance.words = [(match.end(), onset + round(match.end() * utterance.units_per_char))
                           for match in re.finditer(r"\S+", transcript)]
        return utterance

    def speech_ended(self, end: int) -> None:
        """The caller stopped at `end`: words not yet reached at the pace were said by then."""
        self.words = [(chars, min(spoken, end)) for chars, spoken in self.words]

    def due(self, position: int) -> str:
        """The text newly heard by `position` (whole words, with the space before each)."""
        upto = self.sent_chars
        for chars, spoken in self.words:
            if chars > upto and spoken + self.lag <= position:
                upto = chars
        text, self.sent_chars = self.transcript[self.sent_chars:upto], upto
        return text

    def next_due(self) -> int | None:
        """The position at which the next word not yet sent is due (None: all were sent)."""
        return min((spoken + self.lag for chars, spoken in self.words if chars > self.sent_chars), default=None)

    @property
    def all_sent(self) -> bool:
        return self.sent_chars >= len(self.transcript.rstrip())

    def completion_due(self) -> bool:
        return self.committed and self.all_sent and not self.completed
