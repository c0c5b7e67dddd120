"""Bring a call-log database to the current schema: `alembic upgrade head`, from code.

There is no alembic.ini: the configuration is built here, with `script_location` pointing
at the `migrations` directory of this package (shipped as package data). Alembic's command
API is synchronous, so it runs in a worker thread; `migrations/env.py` then drives the
async engine through `connection.run_sync`. Used at service start-up (the writer also runs
it whenever it (re)connects, so a database that was down at start-up gets its schema), by
`octi calls` and by the tests.

A new revision, after changing models.py (then review it and add it to the tests' schema check):

    python -c "from alembic import command; from app.calllog.migrate import alembic_config as c; \
command.revision(c('sqlite+aiosqlite:///data/calls.sqlite3'), message='…', autogenerate=True)"

By hand, from the repository root:

    python -c "import asyncio; from app.calllog.migrate import upgrade_database as u; asyncio.run(u('sqlite+aiosqlite:///data/calls.sqlite3'))"
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.calllog.models import make_engine, sqlite_path

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")


def alembic_config(url: str) -> Config:
    """An Alembic configuration for `url`, without any ini file."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    # The ini layer interpolates "%": a URL-encoded password would break it. env.py reads
    # the raw URL from `attributes` first; the option is there for Alembic's own tools.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["url"] = url
    return config


def head_revision() -> str:
    """The revision the code expects the database to be at."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


async def ensure_sqlite_directory(url: str) -> None:
    """SQLite creates the file but not its directory (DATA_DIR on a fresh machine)."""
    path = sqlite_path(url)
    if path:
        await asyncio.to_thread(Path(path).parent.mkdir, parents=True, exist_ok=True)


# Alembic's `context` and `op` are process-wide proxies: two migrations running at once in
# one process (start-up and the writer's first connection, say) would use each other's
# connection. One at a time, then; across processes, env.py takes a PostgreSQL advisory lock.
_ALEMBIC_LOCK = threading.Lock()


def _locked(fn: Callable[..., None], *args: object) -> None:
    with _ALEMBIC_LOCK:
        fn(*args)


async def upgrade_database(url: str, revision: str = "head") -> None:
    """Run the migrations up to `revision` (default: the latest) on the database at `url`."""
    await ensure_sqlite_directory(url)
    await asyncio.to_thread(_locked, command.upgrade, alembic_config(url), revision)


async def downgrade_database(url: str, revision: str = "base") -> None:
    """Undo migrations down to `revision` (default: everything). For tests and emergencies."""
    await asyncio.to_thread(_locked, command.downgrade, alembic_config(url), revision)


async def current_revision(url: str) -> str | None:
    """The revision the database is at (None: never migrated). Creates nothing."""
    path = sqlite_path(url)
    if path and not await asyncio.to_thread(Path(path).exists):
        return None
    engine = make_engine(url, pooled=False)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
    finally:
        await engine.dispose()
