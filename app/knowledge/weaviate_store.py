"""The Weaviate knowledge store (weaviate-client v4, async API).

The collection's layout, the connection and the budgets every call is held to are in
weaviate_connection.py; this module searches and writes.

Searches are hybrid with an explicit alpha and relativeScoreFusion, over `title_folded^2` and
`text_folded`, with the query embedding as `vector=` (alpha 0, keywords only, when the embedder
is down). A replace writes the document as a new version, then deletes the older ones
(weaviate_versions.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from weaviate.classes.aggregate import GroupByAggregate
from weaviate.classes.data import DataObject
from weaviate.classes.init import Timeout
from weaviate.classes.query import Filter, HybridFusion, MetadataQuery

from .embedding import Embedder, passage_input
from .errors import KnowledgeUnavailable
from .french import fold, query_terms
from .store import Chunk, HybridSearch, Passage, StoreHealth
from .weaviate_connection import DEFAULT_GRPC_PORT, VECTOR_NAME, WeaviateConnection, parse_weaviate_url
from .weaviate_versions import Version, chunk_uuid, new_ingest_id, of_versions

__all__ = ["DEFAULT_GRPC_PORT", "UNSETTLED", "VECTOR_NAME", "WeaviateStore", "parse_weaviate_url"]

log = logging.getLogger(__name__)

QUERY_PROPERTIES = ["title_folded^2", "text_folded"]  # same title boost as the embedded store
RETURN_PROPERTIES = ["chunk_id", "source", "title", "text", "position"]
INSERT_BATCH = 200
CHUNK_PAGE = 500
VERSION_GROUPS = 1000  # versions of a document listed at once; any beyond go at a later replace
# document_checksum of a document stored as several versions, or part of one: no file has it.
UNSETTLED = "unsettled"


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
        self.admin_budget_s = admin_budget_s
        self.write_budget_s = write_budget_s
        self.health_budget_s = health_budget_s
        self._embedder = embedder
        self._connection = WeaviateConnection(
            url,
            api_key,
            collection,
            grpc_port=grpc_port,
            headers=headers,
            # Per-attempt client timeouts; the budgets bound whole calls, retries included.
            client_timeout=Timeout(query=query_budget_s, insert=write_budget_s, init=connect_budget_s),
            connect_budget_s=connect_budget_s,
            admin_budget_s=admin_budget_s,
            reconnect_backoff_s=reconnect_backoff_s,
        )

    # -- search ------------------------------------------------------------------------

    async def search_vector(
        self, query: str, vector: np.ndarray | None, limit: int = 5, alpha: float | None = None
    ) -> list[Passage]:
        """Hybrid search with a precomputed query vector (None: keywords only).

        Asks for twice `limit`: while a replace swaps versions, an unchanged passage is stored
        twice for a moment, and the second copy is dropped."""
        terms = query_terms(query)
        if not terms or limit <= 0:
            return []
        alpha = self.alpha if alpha is None else float(alpha)
        collection = await self._connection.collection()
        kwargs: dict[str, Any] = {}
        if vector is not None and alpha > 0:
            # Plain floats: the client's fast path packs a list of Python floats as bytes.
            kwargs["vector"] = [float(x) for x in np.asarray(vector, dtype=np.float32).reshape(-1)]
            kwargs["target_vector"] = VECTOR_NAME
        else:
            alpha = 0.0
        response = await self._connection.bounded(
            collection.query.hybrid(
                query=" ".join(terms),
                alpha=alpha,
                fusion_type=HybridFusion.RELATIVE_SCORE,
                query_properties=QUERY_PROPERTIES,
                limit=2 * limit,
                return_metadata=MetadataQuery(score=True),
                return_properties=RETURN_PROPERTIES,
                **kwargs,
            ),
            self.query_budget_s,
            "search",
        )
        found = []
        for obj in response.objects:
            props = obj.properties
            found.append(
                Passage(
                    id=str(props.get("chunk_id") or obj.uuid),
                    source=str(props.get("source") or ""),
                    title=str(props.get("title") or ""),
                    text=str(props.get("text") or ""),
                    score=float(obj.metadata.score or 0.0),
                    position=int(props.get("position") or 0),
                )
            )
        found.sort(key=lambda p: p.score, reverse=True)  # the server already does; cheap insurance
        passages: dict[str, Passage] = {}
        for passage in found:
            passages.setdefault(passage.id, passage)
        return list(passages.values())[:limit]

    # -- writes ------------------------------------------------------------------------

    async def replace_document(self, source: str, checksum: str, chunks: Sequence[Chunk]) -> None:
        """Write the chunks as a new version of the document, then delete the older versions.

        Not atomic (Weaviate has no transactions), but a search always finds one version whole,
        if for a moment passages of another too (`search_vector` drops the copies of a passage):
        - a failed insert is rolled back by deleting the new version alone: the previous one
          stays whole, with its checksum, so the next ingestion retries;
        - the older versions are deleted once the new one is whole;
        - of replaces of one document at once (two processes seeding), the newest one written
          whole stays: each deletes only the versions older than its own, and one that finds a
          newer version already whole deletes its own instead (its writes may have landed after
          that newer one deleted what it saw).
        """
        chunks = list(chunks)
        for chunk in chunks:
            if chunk.source != source:
                raise ValueError(f"chunk {chunk.id!r} belongs to {chunk.source!r}, not {source!r}")
        ingest_id = new_ingest_id(len(chunks))  # before embedding: the order the files were read in
        vectors = None
        if self._embedder is not None and chunks:
            vectors = await self._embedder.embed_passages([passage_input(c.title, c.text) for c in chunks])
        collection = await self._connection.collection()
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
            objects.append(DataObject(properties=properties, uuid=chunk_uuid(chunk.id, ingest_id), vector=vector))

        try:
            for start in range(0, len(objects), INSERT_BATCH):
                result = await self._connection.bounded(
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
        await self._settle(collection, source, ingest_id)

    async def _settle(self, collection: Any, source: str, ingest_id: str) -> None:
        """Keep the newest whole version: delete the older ones, or ours when a newer is whole."""
        mine = Version.parse(ingest_id).order
        versions = await self._versions(collection, source)
        if any(v.order > mine and v.whole for v in versions):
            log.info("a newer version of %s was stored meanwhile: deleting ours", source)
            await self._delete_where(collection, of_versions(source, [ingest_id]), f"delete superseded {source}")
            return
        older = [v.ingest_id for v in versions if v.order < mine]
        if older:
            await self._delete_where(collection, of_versions(source, older), f"delete old versions of {source}")

    async def _versions(self, collection: Any, source: str) -> list[Version]:
        result = await self._connection.bounded(
            collection.aggregate.over_all(
                filters=Filter.by_property("source").equal(source),
                group_by=GroupByAggregate(prop="ingest_id", limit=VERSION_GROUPS),
                total_count=True,
            ),
            self.admin_budget_s,
            "versions",
        )
        return [Version.parse(str(group.grouped_by.value), int(group.total_count or 0)) for group in result.groups]

    async def _rollback(self, collection: Any, source: str, ingest_id: str) -> None:
        try:
            await self._delete_where(collection, of_versions(source, [ingest_id]), "rollback")
        except KnowledgeUnavailable as exc:
            # What was written stays, a version that is not whole: document_checksum says so.
            log.warning("could not roll back the partial write of %s: %s", source, exc)

    async def _delete_where(self, collection: Any, where: Any, what: str) -> None:
        result = await self._connection.bounded(
            collection.data.delete_many(where=where), self.write_budget_s, what
        )
        if result.failed:
            raise KnowledgeUnavailable(
                f"weaviate {what}: {result.failed} of {result.matches} objects not deleted",
                reason="partial_write",
            )

    async def delete_document(self, source: str) -> None:
        collection = await self._connection.collection()
        await self._delete_where(collection, Filter.by_property("source").equal(source), f"delete {source}")

    # -- reads -------------------------------------------------------------------------

    async def document_checksum(self, source: str) -> str | None:
        """The checksum of the document's version when the store holds one, whole; `UNSETTLED`
        when it holds several or part of one (a replace under way, or cut short: a write that
        timed out may even land after its roll-back), so that the next ingestion replaces the
        document and leaves one version; None when it holds none."""
        collection = await self._connection.collection()
        versions = await self._versions(collection, source)
        if not versions:
            return None
        if len(versions) > 1 or not versions[0].whole:
            return UNSETTLED
        response = await self._connection.bounded(
            collection.query.fetch_objects(
                filters=of_versions(source, [versions[0].ingest_id]),
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
        collection = await self._connection.collection()
        texts: list[tuple[str, str]] = []
        while True:
            response = await self._connection.bounded(
                collection.query.fetch_objects(limit=CHUNK_PAGE, offset=len(texts),
                                               return_properties=["title", "text"]),
                self.admin_budget_s, "chunk texts",
            )
            texts += [(str(o.properties.get("title") or ""), str(o.properties.get("text") or ""))
                      for o in response.objects]
            if len(response.objects) < CHUNK_PAGE:
                return texts

    async def sources(self) -> list[str]:
        """Paged with the cursor (`after`), which, unlike offsets, reaches past the server's
        QUERY_MAXIMUM_RESULTS."""
        collection = await self._connection.collection()
        found: set[str] = set()
        after = None
        while True:
            response = await self._connection.bounded(
                collection.query.fetch_objects(limit=CHUNK_PAGE, after=after, return_properties=["source"]),
                self.admin_budget_s, "sources",
            )
            found.update(str(o.properties.get("source") or "") for o in response.objects)
            if len(response.objects) < CHUNK_PAGE:
                return sorted(found - {""})
            after = response.objects[-1].uuid

    async def count(self) -> int:
        collection = await self._connection.collection()
        result = await self._connection.bounded(
            collection.aggregate.over_all(total_count=True), self.admin_budget_s, "count"
        )
        return int(result.total_count or 0)

    async def health(self) -> StoreHealth:
        extra: dict[str, Any] = {"url": self.url, "collection": self.collection_name}
        vectors, reason = await self.vector_status()

        async def probe() -> int:
            client = await self._connection.client()
            if not await client.is_ready():
                raise KnowledgeUnavailable("weaviate is not ready", reason="unreachable")
            meta = await client.get_meta()
            extra["server_version"] = str(meta.get("version", ""))
            return await self.count()

        try:
            chunks = await self._connection.bounded(probe(), self.health_budget_s, "health")
        except KnowledgeUnavailable as exc:
            extra["reason"] = exc.reason
            return StoreHealth(self.backend, False, vectors, 0, "; ".join(filter(None, [str(exc), reason])), extra)
        return StoreHealth(self.backend, True, vectors, chunks, reason, extra)

    # -- lifecycle ---------------------------------------------------------------------

    async def drop_collection(self) -> None:
        """Delete the whole collection (tests and `kb reset`-style admin only)."""
        await self._connection.drop_collection()

    async def close(self) -> None:
        await self._connection.close()
