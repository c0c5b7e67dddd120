"""Searching the knowledge base for a call: bounded, and never an exception.

Every search is bounded by a budget, and a store that is down, slow or broken yields "no
context" (logged and counted), never an exception: the call goes on without it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Literal

from app.knowledge.store import KnowledgeStore, Passage
from app.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Retrieval:
    """What one retrieval found, for the answer and for the call logs."""

    query: str
    outcome: Literal["ok", "empty", "timeout", "error", "cancelled", "unavailable"]
    passages: list[Passage] = field(default_factory=list)
    elapsed_ms: float = 0.0
    error: str = ""

    def summary(self) -> list[dict[str, Any]]:
        return [{"id": p.id, "source": p.source, "score": round(p.score, 4)} for p in self.passages]


class Retriever:
    def __init__(self, store: KnowledgeStore | None, *, budget_ms: int, limit: int,
                 metrics: Metrics | None = None) -> None:
        self._store = store
        self._budget = budget_ms / 1000
        self._limit = limit
        self._metrics = metrics or Metrics()

    async def retrieve(self, query: str) -> Retrieval:
        started = perf_counter()
        if self._store is None:
            result = Retrieval(query, "unavailable", error="no knowledge store")
        else:
            try:
                async with asyncio.timeout(self._budget):
                    passages = await self._store.search(query, self._limit)
                result = Retrieval(query, "ok" if passages else "empty", passages)
            except TimeoutError:
                result = Retrieval(query, "timeout", error=f"over the {self._budget * 1000:.0f} ms budget")
            except asyncio.CancelledError:
                self._metrics.retrievals.labels("cancelled").inc()
                raise
            except Exception as exc:  # a broken store must never take the call down
                result = Retrieval(query, "error", error=f"{type(exc).__name__}: {exc}")
        elapsed = perf_counter() - started
        result.elapsed_ms = elapsed * 1000
        self._metrics.retrievals.labels(result.outcome).inc()
        self._metrics.retrieval_time.labels(result.outcome).observe(elapsed)
        if result.outcome not in {"ok", "empty"}:
            log.warning("retrieval without context (%s): %s", result.outcome, result.error)
        return result
