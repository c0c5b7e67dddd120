"""The one settings object, read from the environment (and an optional `.env`)."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.agent.opening_hours import OpeningHours
from app.channels.twilio.numbers import international

DEFAULT_INSTRUCTIONS = (
    "Tu es OCTI, un expert en aviculture qui répond au téléphone à des éleveurs de volailles. "
    "Parle uniquement en français, avec des phrases courtes et simples, comme au téléphone : "
    "deux ou trois phrases au plus, puis laisse la parole. "
    "Tu connais l'incubation, la ventilation, l'alimentation, l'abreuvement, la vaccination, "
    "la biosécurité et la santé des volailles. "
    "Si tu n'es pas sûr, dis-le franchement et conseille d'appeler le vétérinaire de l'élevage. "
    "En cas d'urgence sanitaire (mortalité brutale, suspicion d'influenza aviaire), "
    "dis d'appeler immédiatement le vétérinaire et la direction départementale de la protection des populations."
)

DEFAULT_GREETING = "Bonjour, ici OCTI, votre conseiller en aviculture. Je vous écoute, quelle est votre question ?"


class Settings(BaseSettings):
    """Every knob of the service; environment variable names are part of the interface."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # The speech-to-speech service: the Realtime API, or GPT-Live (full duplex, delegation).
    engine: Literal["openai-realtime", "gpt-live"] = "openai-realtime"
    # GPT-Live (ENGINE=gpt-live): its primary websocket (no query parameters) and model.
    gpt_live_url: str = "wss://api.openai.com/v1/live/sessions"
    gpt_live_model: str = "gpt-live-1.1"
    # How a GPT-Live call greets: `model` has the model say the greeting (its first turn);
    # `fixture` plays the model's own earlier greeting, kept as a clip, through
    # session.output_audio.fixture.play (engines/gpt_live/greeting.py).
    gpt_live_greeting: Literal["model", "fixture"] = "model"

    # OpenAI Realtime (or any GA-compatible server, e.g. Azure or the local double)
    openai_api_key: SecretStr | None = None
    openai_realtime_url: str = "wss://api.openai.com/v1/realtime"
    # gpt-realtime-2.1: the 2.x reasoning line with the better noise, silence and interruption
    # handling a barn needs; minimal reasoning for the earliest first audio (README, "Models").
    openai_realtime_model: str = "gpt-realtime-2.1"
    openai_reasoning_effort: Literal["minimal", "low", "medium", "high", "xhigh"] = "minimal"
    openai_voice: str = "marin"
    # gpt-realtime-whisper streams the caller's words while they speak, so retrieval is done
    # by the time the turn ends; gpt-transcribe only transcribes a committed turn (keywords).
    openai_transcribe_model: str = "gpt-realtime-whisper"
    openai_transcribe_language: str = "fr"
    openai_transcribe_delay: Literal["minimal", "low", "medium", "high", "xhigh"] = "low"
    # Farm words from the knowledge base given as transcription keywords (models that take them).
    transcribe_keywords: int = 60
    # Per answer: about 30 s of speech. An answer cut by the limit ends mid-sentence, so this
    # is a ceiling for runaway answers, not the length the instructions ask for.
    max_output_tokens: int | Literal["inf"] = 600
    # Retention-ratio truncation: once the conversation reaches the limit (0: the model's own),
    # the service drops old turns down to the ratio in one go, so the prompt cache is rebuilt
    # once rather than on every later answer. A low limit costs more than it saves while the
    # cache holds the conversation (benchmarks/README.md, "Call cost").
    truncation_token_limit: int = 0
    truncation_retention_ratio: float = 0.8
    turn_detection: Literal["server_vad", "semantic_vad"] = "server_vad"
    vad_threshold: float = 0.5
    vad_prefix_padding_ms: int = 300
    vad_silence_duration_ms: int = 500
    # True: the service cancels its answer itself when the caller starts talking; False: we do.
    # Only with BARGE_IN_MIN_MS=0: otherwise a noise must not cost the answer, so we always do.
    vad_interrupt_response: bool = True
    # An interruption is a barge-in once the caller's sound lasted this long or words were
    # recognised; shorter and wordless (a clang in the barn), OCTI resumes where it was cut.
    # 0: every interruption is a barge-in at once.
    barge_in_min_ms: int = Field(default=300, ge=0)
    noise_reduction: Literal["far_field", "near_field", "off"] = "far_field"

    # Twilio
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    public_base_url: str | None = None
    # The media stream on a listener of its own (picows) on this port, beside the web server:
    # about a quarter less server CPU per call with pcm16 (benchmarks/README.md, "Relay").
    # 0: the web server serves it. STREAM_PUBLIC_URL: that listener's public base URL
    # (wss://host[:port], a tunnel of its own); default ws://HOST:STREAM_PORT.
    stream_port: int = Field(default=0, ge=0)
    stream_public_url: str | None = None
    # Where the REST client sends its requests; None: Twilio's own API (https://api.twilio.com).
    twilio_api_base: str | None = None
    twilio_phone_number: str | None = None  # the From number of our SMS and call-outs (E.164)

    # Audio between us and the model: pcm16 transcodes, pcmu passes μ-law through.
    audio_codec: Literal["pcm16", "pcmu"] = "pcm16"

    # The agent
    agent_instructions: str = DEFAULT_INSTRUCTIONS
    agent_greeting: str = DEFAULT_GREETING

    # Knowledge base and retrieval (RAG)
    knowledge_backend: Literal["embedded", "weaviate"] = "embedded"
    weaviate_url: str | None = None
    weaviate_api_key: SecretStr | None = None
    weaviate_collection: str = "OctiKnowledge"
    rag_mode: Literal["inject", "tool", "off"] = "inject"
    rag_timeout_ms: int = Field(default=300, ge=1)
    # How long a turn may wait, after the caller stopped, for its passages. Without the
    # caller's words by then, the answer gets the search tool (RAG_FALLBACK=tool) or none.
    rag_hold_ms: int = Field(default=80, ge=0)
    rag_fallback: Literal["tool", "none"] = "tool"
    rag_top_k: int = Field(default=4, ge=1, le=20)  # passages per answer: more only fill the model's context
    # Weight of the vector leg in the hybrid fusion (1 - alpha for keywords), as Weaviate's alpha.
    rag_alpha: float = Field(default=0.5, ge=0.0, le=1.0)

    # Call logs and review
    database_url: str | None = None          # default: SQLite under DATA_DIR
    store_caller_number: bool = False        # the raw number is stored only when asked
    # A caller who leaves a voicemail is promised a call-back: their number is kept for it.
    keep_call_back_numbers: bool = True
    caller_hash_salt: SecretStr | None = None  # default: derived from TWILIO_AUTH_TOKEN
    record_calls: bool = False               # stereo WAV per call; the greeting then says so
    review_username: str | None = None
    review_password: SecretStr | None = None  # plain, an argon2 hash, or an older "pbkdf2_sha256$…" one
    review_token: SecretStr | None = None
    # Mixed into the review cookies' signing key, the same on every host: without it (nor a
    # REVIEW_TOKEN), a REVIEW_PASSWORD given hashed is all it takes to sign a session cookie.
    review_session_secret: SecretStr | None = None
    # USD per 1M tokens: text in / cached / out, audio in / cached / out; transcription models
    # per minute of audio ("audio_minute"). From the service's model pages, 2026-12.
    model_prices: dict[str, dict[str, float]] = {
        "gpt-realtime-2.1": {"text_in": 4.0, "text_cached": 0.4, "text_out": 24.0,
                             "audio_in": 32.0, "audio_cached": 0.4, "audio_out": 64.0},
        "gpt-realtime-2.1-mini": {"text_in": 0.6, "text_cached": 0.06, "text_out": 2.4,
                                  "audio_in": 10.0, "audio_cached": 0.3, "audio_out": 20.0},
        "gpt-realtime-2": {"text_in": 4.0, "text_cached": 0.4, "text_out": 24.0,
                           "audio_in": 32.0, "audio_cached": 0.4, "audio_out": 64.0},
        "gpt-realtime-1.5": {"text_in": 4.0, "text_cached": 0.4, "text_out": 16.0,
                             "audio_in": 32.0, "audio_cached": 0.4, "audio_out": 64.0},
        "gpt-realtime": {"text_in": 4.0, "text_cached": 0.4, "text_out": 16.0,
                         "audio_in": 32.0, "audio_cached": 0.4, "audio_out": 64.0},
        "gpt-realtime-mini": {"text_in": 0.6, "text_cached": 0.06, "text_out": 2.4,
                              "audio_in": 10.0, "audio_cached": 0.3, "audio_out": 20.0},
        # GPT-Live bills time: USD per active minute, per standby (paused) minute.
        "gpt-live-1": {"active_minute": 0.05, "standby_minute": 0.02},
        "gpt-live-1.1": {"active_minute": 0.05, "standby_minute": 0.02},
        "gpt-realtime-whisper": {"audio_minute": 0.017},
        "gpt-live-transcribe": {"audio_minute": 0.017},
        "gpt-transcribe": {"audio_minute": 0.0045},
    }

    # Service
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=1, ge=1)  # `octi serve` processes on the port; more than one wants REDIS_URL
    data_dir: Path = Path("data")
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one object per line, for a log collector
    redis_url: str | None = None             # what workers and hosts share (README); default: in memory

    # Browser channel (/ws/realtime, /ws/voice, the softphone)
    web_token_secret: SecretStr | None = None  # signs access tokens; default: DATA_DIR/web-token-secret
    web_token_hours: float = 12.0
    # Origins (scheme://host[:port]) whose pages may open the websocket, comma-separated; the
    # service's own origin (PUBLIC_BASE_URL, or the Host of the request) always may.
    web_allowed_origins: str = ""
    web_session_max_seconds: float = 600.0
    web_sessions_per_hour: int = 5

    # Limits and timeouts
    max_call_minutes: float = 10.0  # a phone call's length; OCTI warns a minute before, then says goodbye
    dtmf_keys: str = "0=person,*=repeat,#=end"
    silence_prompt_seconds: float = 10.0  # 0: never prompt
    silence_goodbye_seconds: float = 10.0
    call_recap: bool = True  # after each call, the model summarises its advice (stored, shown in the review)
    # The recap by SMS to the caller: "ask" when they accept it by voice, "always", or "off".
    sms_recap: Literal["off", "ask", "always"] = "ask"
    allowed_callers: str = ""  # comma-separated E.164 numbers; empty: every caller
    calls_per_caller_per_hour: int = 10  # 0: no limit
    max_concurrent_calls: int = 200  # per instance (benchmarks/README.md: ~200 pcm16 calls a process); 0: no limit
    prewarm_ttl_seconds: float = 20.0
    # SIGTERM drains: calls under way go on this long at most; new calls are sent elsewhere
    # (DRAIN_REDIRECT, several instances behind PUBLIC_BASE_URL) or told the line is busy.
    drain_timeout_s: float = 600.0
    drain_redirect: bool = False
    stream_token_ttl_seconds: int = 120
    max_stream_message_bytes: int = 64 * 1024
    realtime_connect_timeout_seconds: float = 10.0
    # The service ends a session after this long (60 min): a call renews it before, between turns.
    realtime_session_max_minutes: float = Field(default=60.0, gt=0)
    # Tries to reconnect when the engine's connection drops mid-call (0: the call ends at once).
    reconnect_attempts: int = Field(default=3, ge=0)

    # A person to talk to (transfer_to_human and the "person" key): Twilio dials them
    transfer_number: str | None = None  # E.164; unset: OCTI says no advisor can be reached
    transfer_hours: str = ""  # "mon-fri 08:00-12:00 14:00-18:00; sat 09:00-12:00"; empty: always
    transfer_timezone: str = "Europe/Paris"
    transfer_ring_seconds: int = 20  # then the caller comes back to OCTI

    @field_validator("public_base_url", "stream_public_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("dtmf_keys")
    @classmethod
    def _check_dtmf_keys(cls, value: str) -> str:
        dtmf_actions(value)
        return value

    @field_validator("allowed_callers")
    @classmethod
    def _check_allowed_callers(cls, value: str) -> str:
        for number in filter(None, (n.strip() for n in value.split(","))):
            if international(number) is None:
                raise ValueError(f"« {number} » is not an international number: Twilio gives callers' numbers in "
                                 "E.164 (+33612345678), and only such a number can match them")
        return value

    @field_validator("transfer_number")
    @classmethod
    def _check_transfer_number(cls, value: str | None) -> str | None:
        if value and international(value) is None:
            raise ValueError(f"« {value} » is not an international number (E.164, e.g. +33612345678)")
        return value

    @model_validator(mode="after")
    def _check_transfer_hours(self) -> Settings:
        OpeningHours.parse(self.transfer_hours, self.transfer_timezone)
        return self

    @property
    def opening_hours(self) -> OpeningHours:
        return OpeningHours.parse(self.transfer_hours, self.transfer_timezone)

    @property
    def dtmf_actions(self) -> dict[str, str]:
        return dtmf_actions(self.dtmf_keys)

    @property
    def sends_sms(self) -> bool:
        """Twilio's REST API can text from our number."""
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_phone_number)

    @property
    def model_codec(self) -> str:
        """The audio between us and the model: GPT-Live takes the telephone's μ-law as it is."""
        return "pcmu" if self.engine == "gpt-live" else self.audio_codec

    @property
    def speech_model(self) -> str:
        """The model that carries the conversation, whichever the engine."""
        return self.gpt_live_model if self.engine == "gpt-live" else self.openai_realtime_model

    @property
    def realtime_configured(self) -> bool:
        return bool(self.openai_api_key and self.openai_api_key.get_secret_value())

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'calls.sqlite3').resolve()}"

    @property
    def binds_loopback_only(self) -> bool:
        return self.host in {"127.0.0.1", "localhost", "::1"}

    @property
    def exposed(self) -> bool:
        """Reachable from elsewhere: bound beyond loopback, or given a public URL. A tunnel
        (ngrok) forwards to 127.0.0.1, so a loopback bind alone proves nothing, and every real
        deployment sets PUBLIC_BASE_URL for Twilio."""
        return not self.binds_loopback_only or bool(self.public_base_url)


DTMF_ACTIONS = ("person", "repeat", "end")


def dtmf_actions(setting: str) -> dict[str, str]:
    """DTMF_KEYS ("0=person,*=repeat,#=end") as {key: action}; ValueError when malformed."""
    keys: dict[str, str] = {}
    for pair in filter(None, (part.strip() for part in setting.split(","))):
        key, _, action = (part.strip() for part in pair.partition("="))
        if len(key) != 1 or key not in "0123456789*#" or action not in DTMF_ACTIONS:
            raise ValueError(f"DTMF_KEYS: {pair!r} is not KEY=ACTION, with KEY one of 0-9 * # and ACTION one of "
                             f"{', '.join(DTMF_ACTIONS)}")
        keys[key] = action
    return keys


def kept_secret(data_dir: Path, name: str) -> bytes:
    """A random secret kept in DATA_DIR (made on first use), for values that must survive
    restarts and be shared by the CLI, the service and its workers on one machine.

    Workers starting together on a fresh DATA_DIR must all end up with the same secret: it is
    written whole to a file of its own, then linked into place, and whoever loses the race
    reads the winner's."""
    path = data_dir / name
    if path.exists():
        return path.read_bytes()
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=data_dir, prefix=f".{name}-") as candidate:
        os.chmod(candidate.name, 0o600)
        candidate.write(secrets.token_bytes(32))
        candidate.flush()
        with contextlib.suppress(FileExistsError):
            os.link(candidate.name, path)
    return path.read_bytes()


@lru_cache
def get_settings() -> Settings:
    return Settings()
