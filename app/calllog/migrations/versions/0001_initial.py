"""Initial call-log schema: calls, turns, turn_passages, call_events.

Revision ID: 0001
Revises:
Create Date: 2025-11-21

Written by hand from app/calllog/models.py (tests compare the two). On PostgreSQL, a
trigram index speeds up transcript search when the pg_trgm extension can be installed;
without it (or on SQLite) search still works, by a scan.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRGM_INDEX = "ix_turns_search_text_trgm"


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("call_sid", sa.String(length=64), nullable=False),
        sa.Column("placeholder", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("stream_sid", sa.String(length=64), server_default="", nullable=False),
        sa.Column("channel", sa.String(length=16), server_default="", nullable=False),
        sa.Column("caller_masked", sa.String(length=32), server_default="", nullable=False),
        sa.Column("caller_hash", sa.String(length=128), server_default="", nullable=False),
        sa.Column("caller_number", sa.String(length=32), nullable=True),
        sa.Column("called", sa.String(length=32), server_default="", nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("codec", sa.String(length=16), server_default="", nullable=False),
        sa.Column("model", sa.String(length=128), server_default="", nullable=False),
        sa.Column("rag_mode", sa.String(length=16), server_default="", nullable=False),
        sa.Column("input_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("output_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("input_audio_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("output_audio_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cached_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cost_usd", sa.Float(), server_default="0", nullable=False),
        sa.Column("turns", sa.Integer(), server_default="0", nullable=False),
        sa.Column("barge_ins", sa.Integer(), server_default="0", nullable=False),
        sa.Column("recording_path", sa.Text(), nullable=True),
        sa.Column("recorded", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_calls"),
        sa.UniqueConstraint("call_sid", name="uq_calls_call_sid"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_calls_caller_hash", "calls", ["caller_hash"])
    op.create_index("ix_calls_started_at", "calls", [sa.text("started_at DESC"), sa.text("id DESC")])
    op.create_index("ix_calls_outcome_started_at", "calls", ["outcome", sa.text("started_at DESC")])

    op.create_table(
        "turns",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("turn_index", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), server_default="", nullable=False),
        sa.Column("search_text", sa.Text(), server_default="", nullable=False),
        sa.Column("start_ms", sa.Float(), nullable=True),
        sa.Column("end_ms", sa.Float(), nullable=True),
        sa.Column("interrupted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("heard_ms", sa.Float(), nullable=True),
        sa.Column("retrieval_ms", sa.Float(), nullable=True),
        sa.Column("retrieval_outcome", sa.String(length=16), nullable=True),
        sa.Column("speech_end_to_model_audio_ms", sa.Float(), nullable=True),
        sa.Column("model_audio_to_caller_ms", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], name="fk_turns_call_id_calls", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_turns"),
        sa.UniqueConstraint("call_id", "turn_index", name="uq_turns_call_id_turn_index"),
    )

    op.create_table(
        "turn_passages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("turn_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("passage_id", sa.String(length=255), nullable=False),
        sa.Column("source", sa.Text(), server_default="", nullable=False),
        sa.Column("title", sa.Text(), server_default="", nullable=False),
        sa.Column("score", sa.Float(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(["turn_id"], ["turns.id"], name="fk_turn_passages_turn_id_turns",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_turn_passages"),
        sa.UniqueConstraint("turn_id", "rank", name="uq_turn_passages_turn_id_rank"),
    )

    op.create_table(
        "call_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.Column("dedupe_key", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], name="fk_call_events_call_id_calls",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_call_events"),
        sa.UniqueConstraint("call_id", "dedupe_key", name="uq_call_events_call_id_dedupe_key"),
    )
    op.create_index("ix_call_events_call_id_at", "call_events", ["call_id", "at"])

    if op.get_bind().dialect.name == "postgresql":
        _create_trigram_index()


def _create_trigram_index() -> None:
    """GIN trigram index for LIKE '%…%' on transcripts, when pg_trgm can be had. Optional:
    the exception handler (an implicit savepoint) turns a refusal into a notice, online and
    in `--sql` scripts alike."""
    op.execute(
        "DO $$\n"
        "BEGIN\n"
        "    CREATE EXTENSION IF NOT EXISTS pg_trgm;\n"
        f"    CREATE INDEX {TRGM_INDEX} ON turns USING gin (search_text gin_trgm_ops);\n"
        "EXCEPTION WHEN OTHERS THEN\n"
        "    RAISE NOTICE 'pg_trgm unavailable (%): transcript search will scan the turns', SQLERRM;\n"
        "END\n"
        "$$"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {TRGM_INDEX}")  # the extension itself is left installed
    op.drop_index("ix_call_events_call_id_at", table_name="call_events")
    op.drop_table("call_events")
    op.drop_table("turn_passages")
    op.drop_table("turns")
    op.drop_index("ix_calls_outcome_started_at", table_name="calls")
    op.drop_index("ix_calls_started_at", table_name="calls")
    op.drop_index("ix_calls_caller_hash", table_name="calls")
    op.drop_table("calls")
