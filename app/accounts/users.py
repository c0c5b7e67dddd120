"""Browser users, kept in the call log's database (table `web_users`, migration 0003).

Opened and migrated on first use, like the review's reader, so the service starts while the
database is away. Passwords are argon2 hashes, made and checked in a worker thread.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from functools import cache
from datetime import UTC, datetime

import anyio
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.accounts.passwords import PasswordChecks, hash_password
from app.calllog.migrate import upgrade_database
from app.calllog.models import WebUserRow, make_engine

USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{1,31}")
MIN_PASSWORD_LENGTH = 8


@cache
def _dummy_hash() -> str:
    """Checked when the username is unknown, so that a wrong name costs as long as a wrong
    password; made on first need (an argon2 hash is real work), not at import."""
    return hash_password("not-a-real-password")


class UserError(ValueError):
    """A username or password that cannot be used, or a user that exists already."""


@dataclass(frozen=True, slots=True)
class WebUser:
    username: str
    created_at: datetime
    disabled: bool


def normal_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME.fullmatch(name):
        raise UserError("a username is 2 to 32 letters, digits or . _ @ -, starting with a letter or digit")
    return name


class WebUsers:
    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._engine: AsyncEngine | None = None
        self._lock = asyncio.Lock()
        self._checks = PasswordChecks()

    async def _db(self) -> AsyncEngine:
        async with self._lock:
            if self._engine is None:
                await upgrade_database(self._url)
                self._engine = make_engine(self._url)
            return self._engine

    async def add(self, username: str, password: str) -> WebUser:
        name = normal_username(username)
        if len(password) < MIN_PASSWORD_LENGTH:
            raise UserError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
        hashed = await anyio.to_thread.run_sync(hash_password, password)
        created = datetime.now(UTC)
        try:
            async with (await self._db()).begin() as connection:
                await connection.execute(insert(WebUserRow).values(username=name, password_hash=hashed,
                                                                   created_at=created, disabled=False))
        except IntegrityError:
            raise UserError(f"the user {name!r} exists already") from None
        return WebUser(name, created, False)

    async def set_disabled(self, username: str, disabled: bool) -> bool:
        """False when there is no such user."""
        async with (await self._db()).begin() as connection:
            result = await connection.execute(update(WebUserRow).where(
                WebUserRow.username == normal_username(username)).values(disabled=disabled))
        return result.rowcount == 1

    async def list(self) -> list[WebUser]:
        async with (await self._db()).connect() as connection:
            rows = await connection.execute(select(WebUserRow.username, WebUserRow.created_at, WebUserRow.disabled)
                                            .order_by(WebUserRow.username))
        return [WebUser(*row) for row in rows]

    async def _find(self, username: str) -> tuple[str, bool] | None:
        """(password hash, disabled) of a user."""
        try:
            name = normal_username(username)
        except UserError:
            return None
        async with (await self._db()).connect() as connection:
            row = (await connection.execute(select(WebUserRow.password_hash, WebUserRow.disabled)
                                            .where(WebUserRow.username == name))).first()
        return (row[0], row[1]) if row else None

    async def authenticate(self, username: str, password: str) -> str | None:
        """The user's name when the password is theirs and they are not disabled
        (TooManyPasswordChecks when too many sign-ins wait already)."""
        found = await self._find(username)
        hashed = found[0] if found else await anyio.to_thread.run_sync(_dummy_hash)
        good = await self._checks.verify(password, hashed)
        if not good or found is None or found[1]:
            return None
        return normal_username(username)

    async def active(self, username: str) -> bool:
        """The user exists and is not disabled (a token outlives neither)."""
        found = await self._find(username)
        return found is not None and not found[1]

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
