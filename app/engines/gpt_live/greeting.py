"""The greeting as a clip the service plays (`GPT_LIVE_GREETING=fixture`).

`session.output_audio.fixture.play` plays raw mono PCM16 24 kHz audio (at most 30 s) through
the session's output, without the model. The clip is the model's own greeting, kept from an
earlier call: no text-to-speech, and the caller hears the session's voice. Only the greeting
every inbound call hears has a clip (the engine decides); while it has none yet (the first call,
a new `AGENT_GREETING`, voice or model) the model says it, and what it said is kept as its clip
when the model said it through without yielding.

Clips live under `DATA_DIR/greetings/`, named after the greeting text, the voice and the model;
beside each WAV, a text file holds what the model's transcript said it said (the call log's
text for the greeting when the clip plays).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import wave
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.audio.convert import make_converter
from app.audio.formats import REALTIME_PCM16, TELEPHONE_ULAW
from app.audio.g711 import ulaw_level
from app.config import Settings
from app.engines.contract import AnswerAudio, AnswerDone, AnswerStarted, AnswerTextPiece, EngineEvent, Yielded
from app.engines.gpt_live.translator import LOUD_RMS

FIXTURE_EVENT_ID = "octi_greeting_fixture"
FIXTURE_MAX_MS = 30_000
# Quiet 20 ms frames at the end of what the model said are not kept: the fixture ends with the voice.
FRAME_BYTES = TELEPHONE_ULAW.frame_bytes(20)


@dataclass(frozen=True, slots=True)
class GreetingClip:
    pcm24k: bytes  # raw mono PCM16 little-endian at 24 kHz: the fixture's format
    transcript: str

    @property
    def seconds(self) -> float:
        return REALTIME_PCM16.duration_ms(len(self.pcm24k)) / 1000


def clip_path(settings: Settings, text: str) -> Path:
    key = hashlib.sha256(f"{settings.gpt_live_model}\n{settings.openai_voice}\n{text}".encode()).hexdigest()[:32]
    return settings.data_dir / "greetings" / f"{key}.wav"


def load_clip(path: Path) -> GreetingClip | None:
    """The clip kept at `path`, or None (blocking: run it in a thread)."""
    try:
        with wave.open(str(path)) as wav:
            if (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) != (REALTIME_PCM16.rate, 2, 1):
                return None
            pcm = wav.readframes(wav.getnframes())
        transcript = path.with_suffix(".txt").read_text(encoding="utf-8").strip()
    except (OSError, EOFError, wave.Error):
        return None
    return GreetingClip(pcm, transcript) if pcm else None


def save_clip(path: Path, ulaw: bytes, transcript: str) -> None:
    """Keep the model's greeting (μ-law 8 kHz, as it came) as a 24 kHz clip (blocking: run it in
    a thread). Written aside, then renamed, the text first: a reader never finds half a clip,
    nor a clip without its text."""
    converter = make_converter(TELEPHONE_ULAW, REALTIME_PCM16)
    # Trailing silence pushes the resampler's last samples out.
    pcm = converter.convert(ulaw + TELEPHONE_ULAW.silence_byte * FRAME_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique names: two first calls of one process may keep the same greeting at once.
    unique = f".{os.getpid()}.{secrets.token_hex(4)}.part"
    text_part, wav_part = path.with_suffix(".txt" + unique), path.with_suffix(".wav" + unique)
    text_part.write_text(transcript, encoding="utf-8")
    with wave.open(str(wav_part), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(REALTIME_PCM16.rate)
        wav.writeframes(pcm)
    os.replace(text_part, path.with_suffix(".txt"))
    os.replace(wav_part, path)


def fixture_play(clip: GreetingClip) -> dict[str, Any]:
    return {"type": "session.output_audio.fixture.play", "event_id": FIXTURE_EVENT_ID,
            "audio": b64encode(clip.pcm24k).decode()}


def fixture_refused(event: dict[str, Any]) -> bool:
    """The service refused our fixture (then the model says the greeting)."""
    if event.get("type") != "error":
        return False
    error = event.get("error") or {}
    return FIXTURE_EVENT_ID in (event.get("client_event_id"), error.get("client_event_id"))


@dataclass(slots=True)
class GreetingRecorder:
    """What the model says of the greeting, kept as its clip once it said it all."""

    path: Path
    answer: str | None = None
    item: str | None = None
    audio: bytearray = field(default_factory=bytearray)
    transcript: str = ""

    def observe(self, event: EngineEvent) -> bool | None:
        """True: the greeting is complete, save it; False: it was not (the model yielded, or
        it is too long for a fixture), forget it; None: still listening."""
        match event:
            case AnswerStarted(answer=answer) if self.answer is None:
                self.answer = answer
            case AnswerAudio(answer=answer, item=item, audio=audio) if answer == self.answer:
                self.item = item
                self.audio += audio
            case AnswerTextPiece(item=item, text=text) if item == self.item:
                self.transcript += text
            case Yielded(answer=answer) if answer == self.answer:
                return False
            case AnswerDone(answer=answer, status=status) if answer == self.answer:
                return status == "completed" and 0 < TELEPHONE_ULAW.duration_ms(len(self.spoken())) <= FIXTURE_MAX_MS
        return None

    def spoken(self) -> bytes:
        """The greeting's audio without the quiet frames after its last word."""
        end = len(self.audio)
        while end > 0 and ulaw_level(bytes(self.audio[max(end - FRAME_BYTES, 0):end])) < LOUD_RMS:
            end -= FRAME_BYTES
        return bytes(self.audio[:max(end, 0)])
