"""The recording the double's answers are cut from, and the words spoken in each slice of it."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from app.simulators.realtime_double.formats import BYTES_PER_MS, downsample_24k_to_8k, pcm16_to_g711

ASSET_PATH = Path(__file__).parents[1] / "assets" / "octi_voice.wav"
ASSET_TEXT = (
    "Pour des œufs de poule, réglez la couveuse à trente-sept virgule sept degrés, avec une humidité "
    "de cinquante à cinquante-cinq pour cent. Retournez les œufs plusieurs fois par jour jusqu'au "
    "dix-huitième jour. Ensuite, arrêtez le retournement et montez l'humidité vers soixante-cinq pour "
    "cent pour l'éclosion. Vérifiez votre thermomètre avec un deuxième appareil, car une erreur d'un "
    "demi-degré suffit à faire chuter le taux d'éclosion."
)


@dataclass(frozen=True)
class VoiceAsset:
    """The recording answers are cut from, pre-encoded in every output format."""

    audio: dict[str, bytes]  # "pcm" (PCM16 24 kHz), "pcmu" and "pcma" (G.711 8 kHz)
    duration_ms: int
    text: str

    def slice_audio(self, kind: str, start_ms: int, duration_ms: int) -> bytes:
        """`duration_ms` of audio from `start_ms`, wrapping around the end of the recording."""
        data, per_ms = self.audio[kind], BYTES_PER_MS[kind]
        out = bytearray()
        position, left = start_ms % self.duration_ms, duration_ms
        while left > 0:
            take = min(left, self.duration_ms - position)
            out += data[position * per_ms : (position + take) * per_ms]
            left -= take
            position = 0
        return bytes(out)

    def transcript(self, start_ms: int, duration_ms: int) -> str:
        """The words spoken in that span, by proportion of the text (the asset has no timings)."""
        text, length = self.text, len(self.text)
        pieces: list[str] = []
        position, left = start_ms % self.duration_ms, duration_ms
        while left > 0:
            take = min(left, self.duration_ms - position)
            begin = snap_to_word(text, round(position * length / self.duration_ms))
            end = snap_to_word(text, round((position + take) * length / self.duration_ms))
            piece = text[begin:end].strip()
            if piece:
                pieces.append(piece)
            left -= take
            position = 0
        return " ".join(pieces)


def snap_to_word(text: str, index: int) -> int:
    """Move a character index forward to the start of a word, so slices hold whole words."""
    if index <= 0:
        return 0
    if index >= len(text):
        return len(text)
    if text[index - 1].isspace():
        return index
    following = text.find(" ", index)
    return len(text) if following < 0 else following + 1


@cache
def load_voice_asset(path: Path = ASSET_PATH) -> VoiceAsset:
    """Read the WAV once per process and encode it for every output format up front, so
    streaming an answer is only slicing."""
    with wave.open(str(path), "rb") as wav:
        shape = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
        if shape != (1, 2, 24000):
            raise ValueError(f"{path}: expected PCM16 mono 24 kHz, got channels/width/rate {shape}")
        pcm = wav.readframes(wav.getnframes())
    duration_ms = len(pcm) // BYTES_PER_MS["pcm"]
    pcm = pcm[: duration_ms * BYTES_PER_MS["pcm"]]
    narrow = downsample_24k_to_8k(pcm)
    narrow = narrow[: duration_ms * 16].ljust(duration_ms * 16, b"\0")
    return VoiceAsset(
        audio={"pcm": pcm, "pcmu": pcm16_to_g711(narrow, "pcmu"), "pcma": pcm16_to_g711(narrow, "pcma")},
        duration_ms=duration_ms,
        text=ASSET_TEXT,
    )
