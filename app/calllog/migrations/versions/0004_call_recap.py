"""The call's recap: OCTI's advice summarised after the call, with the fiches it came from.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

A nullable column: calls logged before it have none.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("recap", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("recap")
