"""The call-log writer's link to its database: batches in, transactions out, outages noticed.

`StoreLink.apply` turns a batch of records into one `CallLogStore.apply` transaction. It
connects on first use, and again after an outage or when `url` changes, running the
migrations first, so a database that was down at start-up gets its schema.

When the database refuses a batch while it is otherwise up (a constraint or data error), the
records are applied one by one and those it refuses are handed to `set_aside`: kept in the
spool they would block it forever. An error is blamed on the records only when the database
still answers a ping: drivers do not always say "connection" (asyncpg's refusals come as a
bare DBAPIError), and setting records aside during an outage would lose them.

When the database cannot be used, `apply` stops where it is (the batch says how far it got),
notes the outage and schedules the next attempt with backoff (1 s, 2 s, … 30 s). The link
regards the database as up again only when told (`answering`): the writer says so once
records go straight to it again, not while it is still replaying the spool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import exc as sa_exc

from app.calllog.migrate import upgrade_database
from app.calllog.records import CallRecord
from app.calllog.store import CallLogStore

log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """Could not connect to (or migrate) the database."""


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` surely means "the database cannot be used now". Other errors may
    still be an outage (asyncpg's connection refusals arrive as a bare DBAPIError), so the
    link also pings the database before blaming the data."""
    if isinstance(exc, (DatabaseUnavailable, OSError)):  # includes TimeoutError and ConnectionError
        return True
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError,
                        sa_exc.TimeoutError, sa_exc.ProgrammingError, sa_exc.InternalError)):
        return True  # down, locked, read-only, schema missing: nothing the records can fix
    if isinstance(exc, sa_exc.DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc.orig, (OSError, ConnectionError))
    return False


@dataclass(slots=True)
class Batch:
    """Records on their way to the database, and how far `StoreLink.apply` got with them."""
    records: list[CallRecord]
    done: int = 0       # leading records dealt with: stored, or refused and set aside
    stored: int = 0

    @property
    def complete(self) -> bool:
        return self.done == len(self.records)

    @property
    def rest(self) -> list[CallRecord]:
        """The records not dealt with: all of them until `apply` has finished with them."""
        return self.records[self.done:]


class StoreLink:
    """Applies batches to the call-log database and keeps track of whether it answers."""

    def __init__(
        self,
        url: str,
        *,
        set_aside: Callable[[Sequence[CallRecord], BaseException], None],
        prices: Mapping[str, Mapping[str, float]] | None = None,
        migrate: bool,
        retry_initial: float,
        retry_max: float,
    ) -> None:
        self.url = url                    # may be changed: the next (re)connection uses it
        self.prices = prices
        self.migrate = migrate
        self.retry_initial = retry_initial
        self.retry_max = max(retry_max, retry_initial)
        self.state = "unknown"            # unknown, up, down
        self.last_error: str | None = None
        self._set_aside = set_aside
        self._store: CallLogStore | None = None
        self._store_url: str | None = None
        self._retry_delay = retry_initial
        self._next_retry = 0.0            # event-loop time of the next attempt while down

    # ------------------------------------------------------------------ applying

    async def apply(self, batch: Batch) -> None:
        """Store `batch.records` in one transaction, or one by one when the database refuses
        the batch. Stops early, with the outage noted, when the database cannot be used."""
        try:
            store = await self._connect()
            await store.apply(batch.records)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, DatabaseUnavailable) or await self._is_down(exc, store):
                await self._went_down(exc)
                return
            await self._apply_one_by_one(store, batch, exc)
            return
        batch.done = batch.stored = len(batch.records)

    async def reachable(self) -> bool:
        """Connect (and migrate) unless connected; False, with the outage noted, when that fails."""
        try:
            await self._connect()
        except DatabaseUnavailable as exc:
            await self._went_down(exc)
            return False
        return True

    async def _apply_one_by_one(self, store: CallLogStore, batch: Batch, cause: BaseException) -> None:
        log.warning("call log: a batch was refused (%s); applying its records one by one", cause)
        for position, record in enumerate(batch.records):
            batch.done = position
            try:
                await store.apply([record])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if await self._is_down(exc, store):
                    await self._went_down(exc)
                    return
                self._set_aside([record], exc)
                continue
            batch.stored += 1
        batch.done = len(batch.records)

    async def _is_down(self, exc: BaseException, store: CallLogStore) -> bool:
        """Did `exc` come from the database being unusable (rather than from the records)?
        Only when the database still answers is the data to blame."""
        if is_unavailable(exc):
            return True
        try:
            async with asyncio.timeout(10.0):
                await store.ping()
        except asyncio.CancelledError:
            raise
        except Exception:
            return True
        return False

    # ------------------------------------------------------------------ the connection

    async def _connect(self) -> CallLogStore:
        if self._store is not None and self._store_url == self.url:
            return self._store
        await self.close()
        url = self.url
        try:
            if self.migrate:
                await upgrade_database(url)
            self._store = await CallLogStore.open(url, prices=self.prices)
            self._store_url = url
        except Exception as exc:
            raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return self._store

    async def close(self) -> None:
        """Let the connection go (the next `apply` connects again)."""
        store, self._store, self._store_url = self._store, None, None
        if store is not None:
            try:
                async with asyncio.timeout(5.0):
                    await store.close()
            except Exception as exc:  # a dead connection may not close cleanly
                log.debug("call log: closing the store: %s", exc)

    # ------------------------------------------------------------------ up, down, retries

    async def _went_down(self, exc: BaseException) -> None:
        reason = str(exc) if isinstance(exc, DatabaseUnavailable) else f"{type(exc).__name__}: {exc}"
        self.last_error = reason[:500]
        if self.state != "down":
            log.warning("call log database unavailable (%s): records are spooled until it answers",
                        self.last_error.splitlines()[0])
            self._retry_delay = self.retry_initial
        self.state = "down"
        self._next_retry = asyncio.get_running_loop().time() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, self.retry_max)
        await self.close()

    def answering(self) -> None:
        """The database is in service again: records go straight to it."""
        if self.state == "down":
            log.info("call log database answers again")
        self.state = "up"
        self._retry_delay = self.retry_initial
        self._next_retry = 0.0

    def retry_now(self) -> None:
        self._next_retry = 0.0

    def retry_later(self) -> None:
        """No attempt before the initial retry delay has passed."""
        self._next_retry = asyncio.get_running_loop().time() + self.retry_initial

    def seconds_to_retry(self) -> float:
        """Until the next attempt is due (0: now)."""
        return max(self._next_retry - asyncio.get_running_loop().time(), 0.0)
