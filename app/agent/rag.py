"""Retrieval for a call: what the knowledge base says about the caller's question.

The retriever never stalls a call: every search is bounded by a budget, and a store that
is down, slow or broken yields "no context" (logged and counted), never an exception.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Literal

from app.knowledge.store import KnowledgeStore, Passage
from app.metrics import Metrics

log = logging.getLogger(__name__)

PASSAGE_CHARS = 700  # per passage in the instructions: enough for an answer, short enough for the context

SEARCH_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "search_knowledge",
    "description": (
        "Cherche dans la base de connaissances OCTI (fiches techniques d'aviculture) les passages "
        "utiles pour répondre à la question de l'éleveur. À utiliser pour toute question technique."
    ),
    "parameters": {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "La question de l'éleveur, reformulée si besoin."},
        },
        "required": ["query"],
    },
}


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
                passages = await asyncio.wait_for(self._store.search(query, self._limit), self._budget)
                result = Retrieval(query, "ok" if passages else "empty", passages)
            except TimeoutError:
                result = Retrieval(query, "timeout", error=f"over the {self._budget * 1000:.0f} ms budget")
            except asyncio.CancelledError:
                self._metrics.counters["retrievals_cancelled"] += 1
                raise
            except Exception as exc:  # a broken store must never take the call down
                result = Retrieval(query, "error", error=f"{type(exc).__name__}: {exc}")
        result.elapsed_ms = (perf_counter() - started) * 1000
        self._metrics.counters[f"retrievals_{result.outcome}"] += 1
        if result.outcome not in {"ok", "empty"}:
            log.warning("retrieval without context (%s): %s", result.outcome, result.error)
        return result


def retrieval_query(previous_question: str | None, question: str) -> str:
    """The previous caller turn rides along, so follow-ups ("et pour les dindes ?") find their topic."""
    return f"{previous_question} {question}".strip() if previous_question else question


def instructions_with_context(base: str, retrieval: Retrieval) -> str:
    """Per-response instructions: the base prompt, the passages with their sources, how to use them."""
    if not retrieval.passages:
        reason = ("la base de connaissances n'a rien trouvé" if retrieval.outcome == "empty"
                  else "la base de connaissances n'a pas répondu à temps")
        return (
            f"{base}\n\n# Base de connaissances\nPour cette question, {reason}. "
            "Réponds prudemment à partir de principes généraux, dis que tu n'as pas de fiche précise "
            "sur ce point, et propose l'avis du vétérinaire ou du technicien si l'enjeu est sanitaire."
        )
    extracts = "\n\n".join(
        f"[{index}] {passage.title} (source : {passage.source})\n{_shorten(passage.text)}"
        for index, passage in enumerate(retrieval.passages, start=1)
    )
    return (
        f"{base}\n\n# Extraits de la base de connaissances OCTI pour cette question\n{extracts}\n\n"
        "# Comment utiliser ces extraits\n"
        "Réponds à partir de ces extraits, avec leurs chiffres. S'ils ne couvrent pas la question, "
        "dis-le simplement plutôt que d'inventer. Ne lis pas les numéros ni les sources à voix haute, "
        "sauf si l'éleveur demande d'où vient l'information."
    )


def tool_output(retrieval: Retrieval) -> str:
    """The `function_call_output` for search_knowledge: passages, or an error the model can act on."""
    if retrieval.outcome in {"ok", "empty"}:
        return json.dumps({"passages": [{"title": p.title, "source": p.source, "text": _shorten(p.text)}
                                        for p in retrieval.passages]}, ensure_ascii=False)
    return json.dumps({"error": f"base de connaissances indisponible ({retrieval.outcome})"}, ensure_ascii=False)


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= PASSAGE_CHARS:
        return text
    cut = text.rfind(" ", 0, PASSAGE_CHARS)
    return text[: cut if cut > 0 else PASSAGE_CHARS] + " …"
