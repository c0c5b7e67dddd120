"""What the simulated caller does during the stream: utterances from WAV files, noise bursts,
DTMF, raw messages and when to hang up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

DEFAULT_SILENCE_BEFORE_REPLY_MS = 700


@dataclass(slots=True)
class Utterance:
    """One thing the caller says.

    - `at`: seconds since stream start.
    - neither `at` nor `after_answer_starts_ms` (default): speak once OCTI has spoken since the
      previous utterance began (for the first: since the stream started, i.e. the greeting)
      and its playback has then been idle for `CallScript.silence_before_reply_ms`.
    - `after_answer_starts_ms`: barge in, that many ms after the next playback burst (OCTI's
      answer) started playing.
    Utterances never overlap: each one also waits for its predecessor to finish.
    """

    wav: Path
    at: float | None = None
    after_answer_starts_ms: float | None = None
    label: str = ""

    def __post_init__(self) -> None:
        self.wav = Path(self.wav)
        if self.at is not None and self.after_answer_starts_ms is not None:
            raise ValueError("an utterance has either `at` or `after_answer_starts_ms`, not both")
        if not self.label:
            self.label = self.wav.stem


@dataclass(frozen=True, slots=True)
class Advisor:
    """The person a <Dial> rings (an advisor taking a transfer): whether they pick up, after how
    long, and how long they then talk before hanging up. Seconds are scaled by `CallScript.twiml_speed`."""

    answer: Literal["answers", "no-answer", "busy"] = "answers"
    ring_seconds: float = 2.0
    talk_seconds: float = 5.0


@dataclass(slots=True)
class NoiseBurst:
    """A short noise of the barn in the caller's line (a feeder's clang), no voice in it: played
    when due as an utterance is (`at`, `after_answer_starts_ms`, or after OCTI fell silent)."""

    duration_ms: float = 150.0
    dbfs: float = -15.0  # RMS level: a clang close to the phone
    at: float | None = None
    after_answer_starts_ms: float | None = None
    label: str = "noise"

    def __post_init__(self) -> None:
        if self.at is not None and self.after_answer_starts_ms is not None:
            raise ValueError("a noise burst has either `at` or `after_answer_starts_ms`, not both")


@dataclass(slots=True)
class CallScript:
    """What the caller does during the stream; times are seconds since stream start."""

    utterances: list[Utterance | NoiseBurst] = field(default_factory=list)
    dtmf: list[tuple[float, str]] = field(default_factory=list)
    hangup_after: float = 30.0
    # Hang up this long after the last utterance finished and playback went idle.
    hangup_when_done_after_s: float | None = None
    # Sent verbatim (text or binary frame) at those times; they take no sequence number.
    raw_messages: list[tuple[float, str | bytes]] = field(default_factory=list)
    silence_before_reply_ms: float = DEFAULT_SILENCE_BEFORE_REPLY_MS
    # Faint line noise instead of digital silence between utterances (e.g. -60 dBFS).
    comfort_noise_dbfs: float | None = None
    # Who answers a <Dial> run after a REST redirect, and how much faster than real time
    # <Pause>, ringing, <Dial timeout> and the dialled conversation go (tests use e.g. 20).
    advisor: Advisor = field(default_factory=Advisor)
    twiml_speed: float = 1.0
