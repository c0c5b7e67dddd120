"""The call-log schema (SQLAlchemy 2 declarative), and the engine every part of it uses.

Four tables: `calls` (one row per call), `turns` (the conversation, one row per turn),
`turn_passages` (the knowledge passages a caller turn retrieved) and `call_events`.
The schema itself is created and evolved by the Alembic migrations in `migrations/`;
these models must stay in step with them (a test compares the two).

Timestamps are stored in UTC. PostgreSQL keeps them as `timestamptz`; SQLite has no time
zone type, so `UTCDateTime` stores naive UTC there (one fixed text format, which also keeps
range comparisons correct) and hands back aware UTC datetimes on both.

Text search must work on both databases without extensions, accent- and case-insensitively
(callers say "œufs", the transcript may say "oeufs"): each turn keeps a folded copy of its
text in `turns.search_text` (see `fold`), searched with LIKE.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    false,
    make_url,
)
from sqlalchemy.engine import Dialect, URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool

# Deterministic constraint names: Alembic needs names to alter or drop constraints later.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Caller-turn retrieval outcomes that mean "OCTI had no knowledge to answer with".
NO_KNOWLEDGE_OUTCOMES = ("empty", "timeout", "error", "unavailable")
# Event types that flag a call as having had an error.
ERROR_EVENT_TYPES = ("error", "upstream_failure", "model_error", "stream_error")

# Ligatures NFKD leaves alone but French writes both ways; curly apostrophes of transcripts.
_FOLD_EXTRA = str.maketrans({"œ": "oe", "æ": "ae", "’": "'", "‘": "'", "ʼ": "'"})


def fold(text: str) -> str:
    """Case- and accent-insensitive form of a text, for search: "Œufs Cassés" → "oeufs casses"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold().translate(_FOLD_EXTRA))
    return " ".join("".join(ch for ch in decomposed if not unicodedata.combining(ch)).split())


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime in, an aware UTC datetime out, whatever the database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CallRow(Base):
    __tablename__ = "calls"
    # SQLite AUTOINCREMENT: ids of purged calls are never handed out again.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    # True while only later records (turn, event, end) of the call have arrived.
    placeholder: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    stream_sid: Mapped[str] = mapped_column(String(64), server_default="", default="")
    channel: Mapped[str] = mapped_column(String(16), server_default="", default="")
    caller_masked: Mapped[str] = mapped_column(String(32), server_default="", default="")
    caller_hash: Mapped[str] = mapped_column(String(128), server_default="", default="", index=True)
    caller_number: Mapped[str | None] = mapped_column(String(32))
    called: Mapped[str] = mapped_column(String(32), server_default="", default="")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    duration_s: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str | None] = mapped_column(String(32))
    codec: Mapped[str] = mapped_column(String(16), server_default="", default="")
    model: Mapped[str] = mapped_column(String(128), server_default="", default="")
    rag_mode: Mapped[str] = mapped_column(String(16), server_default="", default="")
    input_tokens: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    input_audio_tokens: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    output_audio_tokens: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    # USD, realtime model and transcription together. NULL: unknown (a model without a price),
    # never $0; a call still going on has 0 until it ends.
    cost_usd: Mapped[float | None] = mapped_column(Float, server_default="0", default=0.0)
    turns: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    barge_ins: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    recording_path: Mapped[str | None] = mapped_column(Text)
    recorded: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    # The caller's transcription: its model, what it was billed on (seconds of audio, or
    # tokens: text input tokens are input less audio) and its part of cost_usd (NULL: unknown,
    # or not known for calls logged before transcription was priced).
    transcription_model: Mapped[str] = mapped_column(String(128), server_default="", default="")
    transcription_seconds: Mapped[float] = mapped_column(Float, server_default="0", default=0.0)
    transcription_input_tokens: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    transcription_input_audio_tokens: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    transcription_output_tokens: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    transcription_cost_usd: Mapped[float | None] = mapped_column(Float)
    recap: Mapped[str | None] = mapped_column(Text)


# The list: newest first (id breaks ties), optionally filtered on the outcome.
Index("ix_calls_started_at", CallRow.started_at.desc(), CallRow.id.desc())
Index("ix_calls_outcome_started_at", CallRow.outcome, CallRow.started_at.desc())


class TurnRow(Base):
    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("call_id", "turn_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    turn_index: Mapped[int] = mapped_column(Integer)        # TurnRecorded.index
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text, server_default="", default="")
    search_text: Mapped[str] = mapped_column(Text, server_default="", default="")  # fold(text)
    start_ms: Mapped[float | None] = mapped_column(Float)
    end_ms: Mapped[float | None] = mapped_column(Float)
    interrupted: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    heard_ms: Mapped[float | None] = mapped_column(Float)
    retrieval_ms: Mapped[float | None] = mapped_column(Float)
    retrieval_outcome: Mapped[str | None] = mapped_column(String(16))
    speech_end_to_model_audio_ms: Mapped[float | None] = mapped_column(Float)
    model_audio_to_caller_ms: Mapped[float | None] = mapped_column(Float)


class PassageRow(Base):
    __tablename__ = "turn_passages"
    __table_args__ = (UniqueConstraint("turn_id", "rank"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)              # 0-based, in retrieval order
    passage_id: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(Text, server_default="", default="")
    title: Mapped[str] = mapped_column(Text, server_default="", default="")
    score: Mapped[float] = mapped_column(Float, server_default="0", default=0.0)


class EventRow(Base):
    __tablename__ = "call_events"
    # A replayed event is recognised by its key: sha256 of (at, type, detail), see store.py.
    __table_args__ = (UniqueConstraint("call_id", "dedupe_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    type: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, server_default="", default="")
    dedupe_key: Mapped[str] = mapped_column(String(64))


Index("ix_call_events_call_id_at", EventRow.call_id, EventRow.at)


class WebUserRow(Base):
    """Someone who may talk to OCTI from a browser (app/accounts)."""

    __tablename__ = "web_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)


# ---------------------------------------------------------------------------- engines


def async_url(url: str | URL) -> URL:
    """The async-driver form of a database URL: sqlite → aiosqlite, postgresql → asyncpg."""
    parsed = make_url(url)
    driver = parsed.drivername
    if driver in ("sqlite", "sqlite+pysqlite"):
        return parsed.set(drivername="sqlite+aiosqlite")
    if driver in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+asyncpg")
    return parsed


def sqlite_path(url: str | URL) -> str | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return parsed.database


def make_engine(url: str | URL, *, pooled: bool = True) -> AsyncEngine:
    """An async engine set up for the call log (SQLite pragmas, short connection timeouts)."""
    parsed = async_url(url)
    options: dict[str, Any] = {}
    if not pooled:
        options["poolclass"] = NullPool
    if parsed.get_backend_name() == "postgresql":
        options["pool_pre_ping"] = True   # survive a server restart between two batches
        options["connect_args"] = {"timeout": 5}
    engine = create_async_engine(parsed, **options)
    if parsed.get_backend_name() == "sqlite":
        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")  # the CLI and the service share the file
            # Readers (the CLI, the review, another worker) then never hold up the service's writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()
    return engine


__all__ = [
    "Base", "CallRow", "TurnRow", "PassageRow", "EventRow", "WebUserRow", "UTCDateTime", "fold",
    "NO_KNOWLEDGE_OUTCOMES", "ERROR_EVENT_TYPES", "async_url", "sqlite_path", "make_engine",
]
