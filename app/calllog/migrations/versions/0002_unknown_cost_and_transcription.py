"""Unknown costs and the caller's transcription: calls.cost_usd may be NULL, and calls keep
their transcription model, what it was billed on and its part of the cost.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-14

Existing rows keep their cost; their transcription part is NULL (it was never priced).
SQLite cannot change a column's nullability, so there the calls table is rebuilt (Alembic's
batch "move and copy"): env.py turns foreign keys off for the migration, or dropping the old
table would cascade to the turns and events; the AUTOINCREMENT counter is carried over (ids
of purged calls are never handed out again) and the DESC indexes, which reflection reads
back without their order, are recreated as 0001 made them. PostgreSQL alters in place.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _new_columns() -> list[sa.Column]:
    return [
        sa.Column("transcription_model", sa.String(length=128), server_default="", nullable=False),
        sa.Column("transcription_seconds", sa.Float(), server_default="0", nullable=False),
        sa.Column("transcription_input_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("transcription_input_audio_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("transcription_output_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("transcription_cost_usd", sa.Float(), nullable=True),
    ]


def _sqlite() -> bool:
    return op.get_context().dialect.name == "sqlite"


def _sqlite_rebuild_guard() -> int | None:
    """Before the calls table is rebuilt on SQLite: refuse if foreign keys are on (dropping
    the old table would delete every turn and event), and return the AUTOINCREMENT counter."""
    if context.is_offline_mode():
        return None
    bind = op.get_bind()
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError("SQLite foreign keys must be off to rebuild the calls table "
                           "(run the migrations through app.calllog.migrate)")
    return bind.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = 'calls'").scalar()


def _sqlite_after_rebuild(sequence: int | None) -> None:
    op.drop_index("ix_calls_started_at", table_name="calls")
    op.drop_index("ix_calls_outcome_started_at", table_name="calls")
    op.create_index("ix_calls_started_at", "calls", [sa.text("started_at DESC"), sa.text("id DESC")])
    op.create_index("ix_calls_outcome_started_at", "calls", ["outcome", sa.text("started_at DESC")])
    if sequence is not None:
        op.execute(sa.text("UPDATE sqlite_sequence SET seq = max(seq, :seq) WHERE name = 'calls'")
                   .bindparams(seq=sequence))
    if not context.is_offline_mode():
        broken = op.get_bind().exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"rows left without their call after rebuilding calls: {broken[:5]}")


def upgrade() -> None:
    sqlite = _sqlite()
    sequence = _sqlite_rebuild_guard() if sqlite else None
    with op.batch_alter_table("calls", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.alter_column("cost_usd", existing_type=sa.Float(), existing_server_default="0", nullable=True)
        for column in _new_columns():
            batch.add_column(column)
    if sqlite:
        _sqlite_after_rebuild(sequence)


def downgrade() -> None:
    # An unknown cost cannot be kept in 0001's NOT NULL column: it goes back to 0, as 0001's
    # code logged it.
    op.execute("UPDATE calls SET cost_usd = 0 WHERE cost_usd IS NULL")
    sqlite = _sqlite()
    sequence = _sqlite_rebuild_guard() if sqlite else None
    with op.batch_alter_table("calls", table_kwargs={"sqlite_autoincrement": True}) as batch:
        for column in reversed(_new_columns()):
            batch.drop_column(column.name)
        batch.alter_column("cost_usd", existing_type=sa.Float(), existing_server_default="0", nullable=False)
    if sqlite:
        _sqlite_after_rebuild(sequence)
