"""The call log as the review pages read it: opened (and migrated) on first use, so the
service starts even while the database is away; until it returns, the pages say so."""

from __future__ import annotations

import asyncio
import logging

from app.calllog.migrate import upgrade_database
from app.calllog.store import CallLogStore
from app.config import Settings

log = logging.getLogger(__name__)


class CallLogReader:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._store: CallLogStore | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> CallLogStore | None:
        async with self._lock:
            if self._store is None:
                url = self._settings.effective_database_url
                try:
                    await upgrade_database(url)
                    self._store = await CallLogStore.open(url, prices=self._settings.model_prices)
                except Exception as exc:  # the review pages say the log is unavailable
                    log.error("call log unavailable for review: %s", exc)
            return self._store

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
