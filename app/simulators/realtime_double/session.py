"""Session configuration: the defaults a connection starts with, and `session.update` applied to
them with the service's rules (what null keeps, what cannot change, what a model refuses)."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from app.engines.openai_realtime import models
from app.simulators.realtime_double.formats import FORMAT_KINDS, normalise_format
from app.simulators.realtime_schema import ClientEventError

DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "alloy"
DEFAULT_INSTRUCTIONS = (
    "You are a helpful, friendly voice assistant. Answer briefly and clearly, in the language "
    "the user speaks. (Default instructions of the OpenAI Realtime double.)"
)
SESSION_LIFETIME_SECONDS = 3600

DEFAULT_SERVER_VAD: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
DEFAULT_SEMANTIC_VAD: dict[str, Any] = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}
# Semantic VAD waits for a plausible end of turn; an energy VAD can only wait longer or shorter.
SEMANTIC_SILENCE_MS = {"low": 1500, "medium": 800, "auto": 800, "high": 400}
SEMANTIC_PREFIX_MS = 300

KEEP_ON_NULL = frozenset({"instructions", "output_modalities", "tools", "tool_choice", "max_output_tokens"})
_VOICE_LOCKED_MESSAGE = "Cannot update a conversation's voice if assistant audio is present."


def default_session(session_id: str, model: str, instructions: str, voice: str,
                    lifetime_seconds: float = SESSION_LIFETIME_SECONDS) -> dict[str, Any]:
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": instructions,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
        "expires_at": int(time.time() + lifetime_seconds),
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": dict(DEFAULT_SERVER_VAD),
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": voice, "speed": 1.0},
        },
    }


def updated_session(current: dict[str, Any], update: dict[str, Any], *, voice_locked: bool) -> dict[str, Any]:
    """`current` with a `session.update` applied; raises ClientEventError where the service refuses it."""
    if update.get("type") != "realtime":
        raise ClientEventError(
            "invalid_value",
            f"Invalid value: '{update.get('type')}'. This session's type is 'realtime' and cannot be changed.",
            "session.type",
        )
    session = copy.deepcopy(current)
    for key, value in update.items():
        if key == "type":
            continue
        if key == "model":
            if value not in (None, session["model"]):
                raise ClientEventError(
                    "invalid_value",
                    "The model of a session cannot be changed; open a new session.",
                    "session.model",
                )
            continue
        if key == "audio":
            _merge_audio(session["audio"], value or {})
            continue
        if value is None and key in KEEP_ON_NULL:
            continue  # null leaves these as they are
        session[key] = value
    check_modalities(session["output_modalities"], "session.output_modalities")
    _check_model_parameters(session)
    check_voice(session["audio"]["output"]["voice"], current, locked=voice_locked)
    return session


def input_kind(session: dict[str, Any]) -> str:
    """The kind of the client's input audio: "pcm", "pcmu" or "pcma"."""
    return FORMAT_KINDS[session["audio"]["input"]["format"].get("type") or "audio/pcm"]


def turn_detection(session: dict[str, Any]) -> dict[str, Any] | None:
    return session["audio"]["input"]["turn_detection"]


def check_modalities(modalities: list[str], param: str) -> None:
    if len(set(modalities)) != 1:
        raise ClientEventError(
            "invalid_value",
            f"Invalid value: {json.dumps(modalities)}. Supported combinations are: ['text'] and ['audio'].",
            param,
        )


def check_voice(voice: Any, session: dict[str, Any], *, locked: bool) -> None:
    """Once the assistant has spoken, the conversation keeps its voice."""
    if locked and voice != session["audio"]["output"]["voice"]:
        raise ClientEventError("cannot_update_voice", _VOICE_LOCKED_MESSAGE)


def _merge_audio(target: dict[str, Any], update: dict[str, Any]) -> None:
    for side in ("input", "output"):
        part = update.get(side)
        if not part:
            continue
        current = target[side]
        for key, value in part.items():
            if key == "format":
                if value is not None:
                    current["format"] = normalise_format(value)
            elif key == "turn_detection":
                current[key] = None if value is None else _turn_detection_with_defaults(value)
            elif key == "noise_reduction":
                # The SDK documents that an omitted strength keeps the current one.
                current[key] = None if value is None else {**(current.get(key) or {}), **value}
            else:
                current[key] = value


def _turn_detection_with_defaults(value: dict[str, Any]) -> dict[str, Any]:
    base = DEFAULT_SERVER_VAD if value.get("type") == "server_vad" else DEFAULT_SEMANTIC_VAD
    return {**base, **{key: item for key, item in value.items() if item is not None}}


def _check_model_parameters(session: dict[str, Any]) -> None:
    """Settings the types document as model-specific are refused on other models."""
    if session.get("reasoning") is not None and not models.reasoning_model(session["model"]):
        raise ClientEventError(
            "unsupported_parameter",
            f"Unsupported parameter: 'reasoning' is not supported with the model '{session['model']}'.",
            "session.reasoning",
        )
    transcription = session["audio"]["input"].get("transcription") or {}
    model = transcription.get("model") or ""
    for key, supporting in (("delay", models.DELAY_TRANSCRIPTION), ("keywords", models.KEYWORD_TRANSCRIPTION),
                            ("languages", models.KEYWORD_TRANSCRIPTION)):
        if transcription.get(key) is not None and model not in supporting:
            raise ClientEventError(
                "unsupported_parameter",
                f"Unsupported parameter: '{key}' is not supported with the transcription model '{model}'.",
                f"session.audio.input.transcription.{key}",
            )
    if transcription.get("prompt") and model in models.PROMPTLESS_TRANSCRIPTION:
        raise ClientEventError(
            "unsupported_parameter",
            f"Unsupported parameter: 'prompt' is not supported with the transcription model '{model}'.",
            "session.audio.input.transcription.prompt",
        )
