"""Pure builders of the client events we send to a Realtime GA server.

Every builder returns a plain dict that validates against `openai.types.realtime`
(tests check it); the hot path (`append_audio`) is built as UTF-8 JSON bytes for speed.
"""

from __future__ import annotations

from binascii import b2a_base64
from collections.abc import Sequence
from typing import Any

from app.audio.formats import REALTIME_PCM16, TELEPHONE_ULAW, AudioFormat
from app.config import Settings
from app.engines.openai_realtime import models


def model_audio_format(settings: Settings) -> AudioFormat:
    """The caller's audio as the model hears it (AUDIO_CODEC)."""
    return TELEPHONE_ULAW if settings.audio_codec == "pcmu" else REALTIME_PCM16


def answer_format(channel_format: AudioFormat) -> AudioFormat:
    """The model answers in the format the caller's channel plays when the service offers it
    (μ-law on the phone, PCM16 24 kHz in a browser), so answers are never transcoded there;
    otherwise in PCM16 24 kHz. What the voice loses to 8 kHz μ-law it loses on the phone anyway."""
    return channel_format if channel_format in (TELEPHONE_ULAW, REALTIME_PCM16) else REALTIME_PCM16


def _format_object(fmt: AudioFormat) -> dict[str, Any]:
    if fmt.encoding == "pcmu":
        return {"type": "audio/pcmu"}
    return {"type": "audio/pcm", "rate": fmt.rate}


def turn_detection(settings: Settings, *, create_response: bool = True) -> dict[str, Any]:
    # While an interruption may still prove to be noise (BARGE_IN_MIN_MS), the answer must
    # live on: the service may not cancel it on its own.
    interrupt = settings.vad_interrupt_response and settings.barge_in_min_ms == 0
    if settings.turn_detection == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": "auto", "create_response": create_response,
                "interrupt_response": interrupt}
    return {
        "type": "server_vad",
        "threshold": settings.vad_threshold,
        "prefix_padding_ms": settings.vad_prefix_padding_ms,
        "silence_duration_ms": settings.vad_silence_duration_ms,
        "create_response": create_response,
        "interrupt_response": interrupt,
    }


def transcription(settings: Settings, keywords: Sequence[str] = ()) -> dict[str, Any]:
    """The caller's transcription, with the fields only some models take: `delay` for the
    streaming whisper, `keywords` (the farm vocabulary) for the gpt-transcribe family."""
    model = settings.openai_transcribe_model
    config: dict[str, Any] = {"model": model, "language": settings.openai_transcribe_language}
    if model in models.DELAY_TRANSCRIPTION:
        config["delay"] = settings.openai_transcribe_delay
    if model in models.KEYWORD_TRANSCRIPTION and keywords:
        config["keywords"] = list(keywords)
    return config


def truncation(settings: Settings) -> dict[str, Any]:
    """Past TRUNCATION_TOKEN_LIMIT tokens of conversation (0: the model's own limit), drop old
    turns down to the ratio; a limit never exceeds what the context leaves after an answer."""
    policy: dict[str, Any] = {"type": "retention_ratio", "retention_ratio": settings.truncation_retention_ratio}
    if settings.truncation_token_limit > 0:
        reserve = (settings.max_output_tokens if isinstance(settings.max_output_tokens, int)
                   else models.MAX_OUTPUT_TOKENS)
        ceiling = models.context_window(settings.openai_realtime_model) - reserve
        policy["token_limits"] = {"post_instructions": min(settings.truncation_token_limit, ceiling)}
    return policy


def session_update(settings: Settings, *, create_response: bool = True,
                   tools: list[dict[str, Any]] | None = None, keywords: Sequence[str] = (),
                   instructions: str | None = None, output_format: AudioFormat | None = None) -> dict[str, Any]:
    """The session configuration; without `create_response` the model waits for our response.create.
    Answers come in `output_format`, by default in the format the caller's audio goes in."""
    input_format = model_audio_format(settings)
    audio_input: dict[str, Any] = {
        "format": _format_object(input_format),
        "transcription": transcription(settings, keywords),
        "noise_reduction": None if settings.noise_reduction == "off" else {"type": settings.noise_reduction},
        "turn_detection": turn_detection(settings, create_response=create_response),
    }
    session: dict[str, Any] = {
        "type": "realtime",
        "model": settings.openai_realtime_model,
        "output_modalities": ["audio"],
        "instructions": settings.agent_instructions if instructions is None else instructions,
        "max_output_tokens": settings.max_output_tokens,
        "truncation": truncation(settings),
        "audio": {"input": audio_input, "output": {"format": _format_object(output_format or input_format),
                                                        "voice": settings.openai_voice}},
    }
    if models.reasoning_model(settings.openai_realtime_model):
        session["reasoning"] = {"effort": settings.openai_reasoning_effort}
    if tools:
        session["tools"] = tools
        session["tool_choice"] = "auto"
    return {"type": "session.update", "session": session}


def response_create(instructions: str | None = None, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Ask for a response; `instructions` (and `tools`) replace the session's for this response only."""
    response: dict[str, Any] = {"instructions": instructions} if instructions else {}
    if tools:
        response["tools"] = tools
        response["tool_choice"] = "auto"
    return {"type": "response.create", "response": response}


def system_message(item_id: str, text: str) -> dict[str, Any]:
    """A system message appended to the conversation (its id is ours, to delete it later)."""
    return {"type": "conversation.item.create",
            "item": {"id": item_id, "type": "message", "role": "system",
                     "content": [{"type": "input_text", "text": text}]}}


def text_message(role: str, text: str) -> dict[str, Any]:
    """A past turn given back as text (a user's words or what the assistant said)."""
    part = {"type": "input_text" if role == "user" else "output_text", "text": text}
    return {"type": "conversation.item.create", "item": {"type": "message", "role": role, "content": [part]}}


def function_output(call_id: str, output: str) -> dict[str, Any]:
    return {"type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output}}


def say_response(text: str) -> dict[str, Any]:
    """A response whose only job is to say `text`: the greeting, or a notice between answers."""
    return response_create(f"Dis exactement cette phrase, en français, sans rien ajouter : « {text} »")


def append_audio(audio: bytes) -> bytes:
    """The event as UTF-8 JSON, ready to frame: no str round trip for 50 appends a second."""
    return b'{"type":"input_audio_buffer.append","audio":"' + b2a_base64(audio, newline=False) + b'"}'


def truncate_item(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    return {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
            "audio_end_ms": audio_end_ms}


def delete_item(item_id: str) -> dict[str, Any]:
    return {"type": "conversation.item.delete", "item_id": item_id}


def out_of_band_text(instructions: str, purpose: str) -> dict[str, Any]:
    """A text response outside the conversation (it reads the conversation, adds nothing to it),
    tagged with `purpose` in its metadata so that its events can be told apart."""
    return {"type": "response.create",
            "response": {"conversation": "none", "output_modalities": ["text"], "instructions": instructions,
                         "metadata": {"octi": purpose}}}


def commit_audio() -> dict[str, Any]:
    return {"type": "input_audio_buffer.commit"}


def cancel_response() -> dict[str, Any]:
    return {"type": "response.cancel"}
