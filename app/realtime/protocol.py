"""Pure builders of the client events we send to a Realtime GA server.

Every builder returns a plain dict that validates against `openai.types.realtime`
(tests check it); the hot path (`append_audio`) is built as UTF-8 JSON bytes for speed.
"""

from __future__ import annotations

from binascii import b2a_base64
from typing import Any

from app.audio.formats import REALTIME_PCM16, TELEPHONE_ULAW, AudioFormat
from app.config import Settings


def model_audio_format(settings: Settings) -> AudioFormat:
    return TELEPHONE_ULAW if settings.audio_codec == "pcmu" else REALTIME_PCM16


def _format_object(fmt: AudioFormat) -> dict[str, Any]:
    if fmt.encoding == "pcmu":
        return {"type": "audio/pcmu"}
    return {"type": "audio/pcm", "rate": fmt.rate}


def turn_detection(settings: Settings, *, create_response: bool = True) -> dict[str, Any]:
    if settings.turn_detection == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": "auto", "create_response": create_response,
                "interrupt_response": settings.vad_interrupt_response}
    return {
        "type": "server_vad",
        "threshold": settings.vad_threshold,
        "prefix_padding_ms": settings.vad_prefix_padding_ms,
        "silence_duration_ms": settings.vad_silence_duration_ms,
        "create_response": create_response,
        "interrupt_response": settings.vad_interrupt_response,
    }


def session_update(settings: Settings, *, create_response: bool = True,
                   tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The session configuration; without `create_response` the model waits for our response.create."""
    fmt = _format_object(model_audio_format(settings))
    audio_input: dict[str, Any] = {
        "format": fmt,
        "transcription": {"model": settings.openai_transcribe_model,
                          "language": settings.openai_transcribe_language},
        "noise_reduction": None if settings.noise_reduction == "off" else {"type": settings.noise_reduction},
        "turn_detection": turn_detection(settings, create_response=create_response),
    }
    session: dict[str, Any] = {
        "type": "realtime",
        "model": settings.openai_realtime_model,
        "output_modalities": ["audio"],
        "instructions": settings.agent_instructions,
        "audio": {"input": audio_input, "output": {"format": fmt, "voice": settings.openai_voice}},
    }
    if tools:
        session["tools"] = tools
        session["tool_choice"] = "auto"
    return {"type": "session.update", "session": session}


def response_create(instructions: str | None = None) -> dict[str, Any]:
    """Ask for a response; `instructions` replace the session's for this response only."""
    return {"type": "response.create", "response": {"instructions": instructions} if instructions else {}}


def function_output(call_id: str, output: str) -> dict[str, Any]:
    return {"type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output}}


def greeting_response(greeting: str) -> dict[str, Any]:
    """The assistant speaks first: a response whose only job is to say the greeting."""
    return response_create(
        "Commence l'appel en disant exactement cette phrase, en français, "
        f"sans rien ajouter : « {greeting} »"
    )


def append_audio(audio: bytes) -> bytes:
    """The event as UTF-8 JSON, ready to frame: no str round trip for 50 appends a second."""
    return b'{"type":"input_audio_buffer.append","audio":"' + b2a_base64(audio, newline=False) + b'"}'


def truncate_item(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    return {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
            "audio_end_ms": audio_end_ms}


def delete_item(item_id: str) -> dict[str, Any]:
    return {"type": "conversation.item.delete", "item_id": item_id}


def cancel_response() -> dict[str, Any]:
    return {"type": "response.cancel"}
