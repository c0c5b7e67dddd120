"""A websocket double of the OpenAI Realtime GA API, for offline calls, integration tests and load runs.

Point ``OPENAI_REALTIME_URL`` at it (``python -m app.simulators.realtime_double``) to try the phone
line without OpenAI. It speaks the GA protocol strictly enough to catch client mistakes:

* every client event is validated against the openai SDK's pydantic models, unknown keys
  included, and rejected with the service's error codes, messages and ``param`` paths;
* turn detection is an energy VAD that runs on the audio timeline (ms of audio appended), not
  the wall clock, so the same audio always gives the same events;
* answers stream slices of a real French recording, in varying chunk sizes and faster than real
  time, with the matching part of its text as transcript;
* cancellation, barge-in, truncation and the one-active-response rule behave like the service.

What it cannot do, it scripts: the transcript of the n-th caller utterance comes from a list,
delivered as the configured transcription model would (`app.simulators.transcriber`: streamed
while the caller speaks, or after the commit).
Each connection keeps a record (events both ways, errors, responses, truncations) that tests
can inspect or await.

The parts: `server` (handshakes, connections, failure injection) hands each session to a
`connection` (state, record, lifecycle, dispatch), which owns the `session` configuration, the
`input_audio` buffer with its `vad`, the `caller_transcripts`, the `conversation` items and the
`responses` (with `function_calls` and token `accounting`); `voice` is the recording answers are
cut from, `formats` the audio formats, `records` what tests read, `command` the CLI.
"""

from app.simulators.realtime_double.command import cli
from app.simulators.realtime_double.connection import BETA_CLOSE_CODE, ID_ALPHABET, DoubleConnection
from app.simulators.realtime_double.formats import BYTES_PER_MS, FORMAT_KINDS, UNITS_PER_MS
from app.simulators.realtime_double.input_audio import MIN_COMMIT_MS
from app.simulators.realtime_double.records import ClosedInfo, RejectedHandshake, ResponseRecord, TruncationRecord
from app.simulators.realtime_double.responses import DELTA_MS_RANGE
from app.simulators.realtime_double.server import RealtimeDouble
from app.simulators.realtime_double.session import (
    DEFAULT_MODEL,
    DEFAULT_SEMANTIC_VAD,
    DEFAULT_SERVER_VAD,
    DEFAULT_VOICE,
    KEEP_ON_NULL,
    SEMANTIC_PREFIX_MS,
    SEMANTIC_SILENCE_MS,
    SESSION_LIFETIME_SECONDS,
)
from app.simulators.realtime_double.vad import EnergyVad
from app.simulators.realtime_double.voice import ASSET_PATH, ASSET_TEXT, VoiceAsset, load_voice_asset, snap_to_word

__all__ = [
    "ASSET_PATH",
    "ASSET_TEXT",
    "BETA_CLOSE_CODE",
    "BYTES_PER_MS",
    "DEFAULT_MODEL",
    "DEFAULT_SEMANTIC_VAD",
    "DEFAULT_SERVER_VAD",
    "DEFAULT_VOICE",
    "DELTA_MS_RANGE",
    "FORMAT_KINDS",
    "ID_ALPHABET",
    "KEEP_ON_NULL",
    "MIN_COMMIT_MS",
    "SEMANTIC_PREFIX_MS",
    "SEMANTIC_SILENCE_MS",
    "SESSION_LIFETIME_SECONDS",
    "UNITS_PER_MS",
    "ClosedInfo",
    "DoubleConnection",
    "EnergyVad",
    "RealtimeDouble",
    "RejectedHandshake",
    "ResponseRecord",
    "TruncationRecord",
    "VoiceAsset",
    "cli",
    "load_voice_asset",
    "snap_to_word",
]
