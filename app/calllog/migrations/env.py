"""Alembic environment of the call log, for async engines (configured in code: see migrate.py).

The URL comes from `config.attributes["url"]` (or the `sqlalchemy.url` option). Migrations
run on an async engine through `connection.run_sync`; `asyncio.run` is fine here because
`upgrade_database` calls Alembic from a worker thread, which has no running event loop.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from app.calllog.models import Base, async_url, make_engine

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return str(config.attributes.get("url") or config.get_main_option("sqlalchemy.url"))


def _include_object(obj, name, type_, reflected, compare_to) -> bool:  # noqa: ANN001
    # The optional PostgreSQL trigram index is created by hand when pg_trgm exists: not a model.
    return not (type_ == "index" and name == "ix_turns_search_text_trgm")


def _configure(**options) -> None:  # noqa: ANN003
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,          # SQLite can only ALTER through "move and copy"
        compare_type=True,
        include_object=_include_object,
        **options,
    )


def run_migrations_offline() -> None:
    """`alembic upgrade --sql`: print the SQL instead of running it."""
    _configure(url=async_url(_url()).render_as_string(hide_password=False), literal_binds=True,
               dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


# Several processes may start at once against one PostgreSQL: the first migrates, the
# others wait for it, then find the schema at head. (SQLite serialises writers itself.)
MIGRATION_LOCK_ID = 0x0C71_CA11


def _run_sync(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        # A migration that rebuilds a table (batch "move and copy") drops the old one; with
        # foreign keys on, that drop would cascade to every referencing row. The pragma only
        # takes effect outside a transaction: here, before anything has begun one.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    _configure(connection=connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        context.run_migrations()


async def _run_async() -> None:
    engine = make_engine(_url(), pooled=False)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(_run_async())
