"""The browser's websocket protocol, as pure functions: frames in, messages out.

The seed backend's protocol (../shared/seeds/004), kept exactly, plus extensions (marked so) a
client may ignore:

From the page:
  {"type":"start_conversation"}   open the model session; the server answers `ready`
  binary frames                   the microphone, PCM16 little-endian mono (24 kHz, or the
                                  socket's `sample_rate`)
  {"type":"user_audio_end"}       the caller finished speaking (push-to-talk)
  {"type":"reset_session"}        a fresh conversation on the same socket
  {"type":"playback","samples":N} extension: N answer samples have left the page's queue since
                                  the socket opened, played, or dropped on `clear_audio`
  {"type":"user_text","text":…}   extension: a typed question (no microphone)
  {"type":"interrupt"}            extension: stop OCTI (a button), as when the caller talks over it

From the server:
  {"type":"ready"}                the model session is ready (again after a reset)
  binary frames                   OCTI's voice, same format as the microphone
  {"type":"bot_audio_end"}        all of an answer's audio has been sent
  {"type":"transcript_delta","text":…}   a piece of what OCTI says
  {"type":"error","message":…,"code":…}  in French; `code` (extension) for programs
  {"type":"clear_audio"}          extension: the caller talked over OCTI, drop the queued audio
  {"type":"ended","reason":…}     extension: OCTI ended the conversation (its goodbye, the caller's
                                  silence, the time limit; `reason` is the call log's outcome):
                                  the close that follows is no drop to reconnect after
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

# One message of microphone audio: up to a second at 48 kHz is plenty (pages send 20-100 ms).
MAX_AUDIO_BYTES = 96_000
MAX_TEXT_CHARS = 2000
# One control message: a `user_text` of MAX_TEXT_CHARS, every character escaped (\uXXXX), fits.
# Longer text frames are refused before being parsed.
MAX_CONTROL_CHARS = 16 * 1024
SAMPLE_RATES = (24_000, 16_000)  # the first is the default


@dataclass(frozen=True, slots=True)
class StartConversation:
    pass


@dataclass(frozen=True, slots=True)
class UserAudioEnd:
    pass


@dataclass(frozen=True, slots=True)
class ResetSession:
    pass


@dataclass(frozen=True, slots=True)
class Interrupt:
    pass


@dataclass(frozen=True, slots=True)
class Playback:
    samples: int


@dataclass(frozen=True, slots=True)
class UserText:
    text: str


ClientMessage = StartConversation | UserAudioEnd | ResetSession | Interrupt | Playback | UserText | bytes

_CONTROL = {"start_conversation": StartConversation(), "user_audio_end": UserAudioEnd(),
            "reset_session": ResetSession(), "interrupt": Interrupt()}


class WireError(ValueError):
    """A frame the protocol does not allow: `code` for programs, the message in French."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_client(frame: str | bytes) -> ClientMessage:
    """One frame from the page: a control message, or audio (bytes, a whole number of samples)."""
    if isinstance(frame, bytes):
        return _audio(frame)
    if len(frame) > MAX_CONTROL_CHARS:
        raise WireError("message_too_large",
                        f"Message texte trop long ({len(frame)} caractères, {MAX_CONTROL_CHARS} au plus).")
    try:
        message = orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise WireError("bad_json", "Message texte illisible : du JSON était attendu.") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise WireError("bad_message", "Message sans champ « type ».")
    kind = message["type"]
    if kind in _CONTROL:
        return _CONTROL[kind]
    if kind == "playback":
        samples = message.get("samples")
        if type(samples) is not int or samples < 0:
            raise WireError("bad_message", "« playback » attend un nombre d'échantillons entier positif.")
        return Playback(samples)
    if kind == "user_text":
        text = message.get("text")
        if not isinstance(text, str) or not text.strip():
            raise WireError("bad_message", "« user_text » attend un texte non vide.")
        if len(text) > MAX_TEXT_CHARS:
            raise WireError("bad_message", f"Texte trop long ({MAX_TEXT_CHARS} caractères au plus).")
        return UserText(text.strip())
    raise WireError("unknown_type", f"Type de message inconnu : {kind[:40]!r}.")


def _audio(frame: bytes) -> bytes:
    if not frame:
        raise WireError("bad_audio", "Trame audio vide.")
    if len(frame) > MAX_AUDIO_BYTES:
        raise WireError("audio_too_large", f"Trame audio trop grande ({len(frame)} octets, {MAX_AUDIO_BYTES} au plus).")
    if frame[:1] == b"{" and _is_json_object(frame):
        raise WireError("json_as_audio", "Message JSON reçu en binaire : envoyez-le comme texte.")
    if len(frame) % 2:
        raise WireError("bad_audio", "Trame audio de longueur impaire : le PCM16 compte deux octets par échantillon.")
    return frame


def _is_json_object(frame: bytes) -> bool:
    try:
        return isinstance(orjson.loads(frame), dict)
    except orjson.JSONDecodeError:
        return False


def sample_rate(requested: str | None) -> int:
    """The socket's audio rate from its `sample_rate` query parameter (default 24000)."""
    if requested is None or requested == "":
        return SAMPLE_RATES[0]
    if requested.isdigit() and int(requested) in SAMPLE_RATES:
        return int(requested)
    raise WireError("bad_sample_rate", "Fréquence d'échantillonnage non prise en charge : 24000 ou 16000.")


def _text(message: dict[str, object]) -> str:
    return orjson.dumps(message).decode()


READY = _text({"type": "ready"})
BOT_AUDIO_END = _text({"type": "bot_audio_end"})
CLEAR_AUDIO = _text({"type": "clear_audio"})


def transcript_delta(text: str) -> str:
    return _text({"type": "transcript_delta", "text": text})


def ended(reason: str) -> str:
    return _text({"type": "ended", "reason": reason})


def error(message: str, code: str) -> str:
    return _text({"type": "error", "message": message, "code": code})
