"""The knowledge base as the running service uses it: the store, opened at start and seeded
with the sample pack in the background, its retriever, its health, its farm vocabulary.

Calls never wait for it: until the store is open (or when it cannot be), the retriever
answers "no context" and the call goes on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.config import Settings
from app.knowledge.retrieval import Retriever
from app.knowledge.seed import ensure_seeded
from app.knowledge.store import KnowledgeStore
from app.knowledge.stores import open_store
from app.knowledge.vocabulary import farm_vocabulary
from app.metrics import Metrics

log = logging.getLogger(__name__)

HEALTH_CHECK_SECONDS = 1.0
WARM_UP_QUERY = "température de la couveuse"


class KnowledgeBase:
    def __init__(self, settings: Settings, metrics: Metrics, *, vocabulary_size: int = 0,
                 store: KnowledgeStore | None = None) -> None:
        self._settings = settings
        self._metrics = metrics
        self._vocabulary_size = vocabulary_size
        self.store = store
        self.error = ""
        self.retriever = self._retriever(None)
        self.vocabulary: list[str] = []  # the farm words, read once seeded (when asked for)
        self._seeding: asyncio.Task[None] | None = None

    def _retriever(self, store: KnowledgeStore | None) -> Retriever:
        return Retriever(store, budget_ms=self._settings.rag_timeout_ms, limit=self._settings.rag_top_k,
                         metrics=self._metrics)

    async def start(self) -> None:
        if self._settings.rag_mode == "off":
            return
        if self.store is None:
            try:
                self.store = open_store(self._settings)
            except (ValueError, OSError) as exc:
                self.error = str(exc)
                log.error("no knowledge base, calls go on without context: %s", exc)
                return
        self.retriever = self._retriever(self.store)
        self._seeding = asyncio.create_task(self._seed(self.store), name="seed-knowledge")

    async def _seed(self, store: KnowledgeStore) -> None:
        try:
            await ensure_seeded(store)
        except Exception as exc:  # the line works without the sample pack
            self.error = f"seeding the sample pack failed: {exc}"
            log.error("%s", self.error)
            return
        await self._warm_up(store)

    async def _warm_up(self, store: KnowledgeStore) -> None:
        """Before the first call: load the query embedding model (a first search pays for it,
        far past a turn's hold), and read the vocabulary when transcription takes keywords."""
        try:
            await store.search(WARM_UP_QUERY, 1)
            if self._vocabulary_size:
                texts = await store.chunk_texts()
                self.vocabulary = await asyncio.to_thread(farm_vocabulary, texts, self._vocabulary_size)
                log.info("transcription keywords: %d farm words from the knowledge base", len(self.vocabulary))
        except Exception as exc:  # calls work without either; retrieval reports its own failures
            log.warning("knowledge warm-up failed: %s", exc)

    async def health(self) -> dict[str, Any]:
        mode = self._settings.rag_mode
        if mode == "off":
            return {"mode": "off"}
        if self.store is None:
            return {"mode": mode, "ok": False, "detail": self.error}
        try:
            async with asyncio.timeout(HEALTH_CHECK_SECONDS):
                health = await self.store.health()
        except Exception as exc:
            return {"mode": mode, "ok": False, "detail": f"{type(exc).__name__}: {exc}"}
        return {"mode": mode, "backend": health.backend, "ok": health.ok, "vectors": health.vectors,
                "chunks": health.chunks, "detail": health.detail or self.error,
                "seeding": self._seeding is not None and not self._seeding.done()}

    async def close(self) -> None:
        if self._seeding is not None:
            self._seeding.cancel()
            await asyncio.gather(self._seeding, return_exceptions=True)
        if self.store is not None:
            await self.store.close()
