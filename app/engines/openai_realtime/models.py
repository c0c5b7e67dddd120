"""What the Realtime service's models do differently, as `openai.types.realtime` documents it.

Read by the session configuration (what to send to which model) and by the Realtime double
(what to accept), so both follow one reading of the contract.
"""

from __future__ import annotations

import re

# Transcription models that send the caller's words while they speak; the others transcribe
# a turn once it is committed (`AudioTranscription`).
STREAMING_TRANSCRIPTION = frozenset({"gpt-realtime-whisper", "gpt-live-transcribe"})
# `delay`: "Only supported with gpt-realtime-whisper in GA Realtime sessions."
DELAY_TRANSCRIPTION = frozenset({"gpt-realtime-whisper"})
# `keywords` and `languages`: "Supported by gpt-transcribe and gpt-live-transcribe."
KEYWORD_TRANSCRIPTION = frozenset({"gpt-transcribe", "gpt-live-transcribe"})
# `prompt`: "not supported with gpt-realtime-whisper in GA Realtime sessions."
PROMPTLESS_TRANSCRIPTION = frozenset({"gpt-realtime-whisper"})
# Transcription models billed per token rather than per second of audio.
TOKEN_BILLED_TRANSCRIPTION = frozenset({"gpt-4o-transcribe", "gpt-4o-mini-transcribe",
                                        "gpt-4o-mini-transcribe-2025-12-15", "gpt-4o-transcribe-diarize"})

# semantic_vad's longest wait for the end of a turn, per eagerness ("auto" is "medium"); its
# audio kept before speech is not documented, so nothing is deducted for it.
SEMANTIC_VAD_LONGEST_WAIT_MS = {"low": 8000, "medium": 4000, "high": 2000, "auto": 4000}

# Context windows in tokens (the service's model pages); others are assumed to be 2.x-sized.
CONTEXT_WINDOW = {"gpt-realtime": 32_768, "gpt-realtime-mini": 32_768, "gpt-realtime-1.5": 32_768}
DEFAULT_CONTEXT_WINDOW = 128_000
# The most a response may produce ("inf" for `max_output_tokens`), per the session docs.
MAX_OUTPUT_TOKENS = 4096


def reasoning_model(model: str) -> bool:
    """The gpt-realtime-2 line and later take `reasoning` ("reasoning-capable Realtime models")."""
    match = re.match(r"gpt-realtime-(\d+)", model)
    return match is not None and int(match.group(1)) >= 2


def streams_transcription(model: str | None) -> bool:
    return model in STREAMING_TRANSCRIPTION


def context_window(model: str) -> int:
    base = next((name for name in sorted(CONTEXT_WINDOW, key=len, reverse=True)
                 if model == name or model.startswith(name + "-20")), None)
    return CONTEXT_WINDOW[base] if base else DEFAULT_CONTEXT_WINDOW
