"""The knowledge store contract, shared by the embedded store and Weaviate."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from app.knowledge.french import query_terms

if TYPE_CHECKING:
    import numpy as np

    from app.knowledge.embedding import Embedder


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document, as ingestion cut it."""

    id: str          # stable: derived from source and position
    source: str      # the document's file, as ingest/sources.py names it
    title: str       # the document's title (plus the section heading when there is one)
    text: str
    position: int    # order of the chunk in its document


@dataclass(frozen=True, slots=True)
class Passage:
    """A chunk found by a search, with its fused relevance score (higher is better)."""

    id: str
    source: str
    title: str
    text: str
    score: float
    position: int = 0


@dataclass(frozen=True, slots=True)
class StoreHealth:
    backend: str                  # "embedded" or "weaviate"
    ok: bool                      # the store answers searches
    vectors: bool                 # the dense leg is active (False: keywords only)
    chunks: int = 0
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class KnowledgeStore(Protocol):
    async def search(self, query: str, limit: int = 5) -> list[Passage]:
        """Ranked passages for a question (hybrid keyword + vector, relativeScoreFusion)."""
        ...

    async def replace_document(self, source: str, checksum: str, chunks: Sequence[Chunk]) -> None:
        """Store a document's chunks, replacing whatever the store held for that source."""
        ...

    async def document_checksum(self, source: str) -> str | None:
        """The checksum stored with a document, to skip re-ingesting unchanged files."""
        ...

    async def delete_document(self, source: str) -> None: ...

    async def sources(self) -> list[str]:
        """The source of every stored document, sorted."""
        ...

    async def count(self) -> int:
        """Number of chunks stored."""
        ...

    async def chunk_texts(self) -> list[tuple[str, str]]:
        """(title, text) of every chunk: the corpus as a whole, for its vocabulary."""
        ...

    async def health(self) -> StoreHealth: ...

    async def close(self) -> None: ...


class HybridSearch(ABC):
    """`search` for stores that rank with a query vector: embed once, then `search_vector`."""

    _embedder: Embedder | None
    alpha: float

    async def search(self, query: str, limit: int = 5) -> list[Passage]:
        """Hybrid search; [] when the question has no content word (fillers, stopwords only)."""
        if not query_terms(query) or limit <= 0:
            return []
        vector = None
        if self._embedder is not None and self.alpha > 0:  # a zero-weight vector leg is not run
            vector = await self._embedder.embed_query(query)
        return await self.search_vector(query, vector, limit)

    async def vector_status(self) -> tuple[bool, str]:
        """Whether the vector leg runs, and why not when it does not."""
        if self._embedder is None:
            return False, "no embedding model configured: keyword search only"
        if not await self._embedder.ensure_loaded():
            return False, f"embedding model unavailable ({self._embedder.load_error}): keyword search only"
        return True, ""

    @abstractmethod
    async def search_vector(self, query: str, vector: np.ndarray | None, limit: int = 5,
                            alpha: float | None = None) -> list[Passage]:
        """Search with a precomputed query vector (None: keywords only)."""
