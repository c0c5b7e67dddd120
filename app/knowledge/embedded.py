"""The embedded knowledge store: SQLite (FTS5 BM25) + an in-memory NumPy vector matrix.

Works offline with the stdlib and NumPy only, and ranks like Weaviate's hybrid search
(relativeScoreFusion over a BM25 leg and a cosine leg, see fusion.py), so switching
`knowledge_backend` does not change which passages a caller hears about. The file's layout
is in embedded_schema.py, the vector matrix in vector_index.py, and how the matrix follows the
file (other processes' commits included) in embedded_vectors.py.

Every SQLite call runs on one dedicated thread (connections are thread-bound), and the
vector matrix is only touched there too, so no lock is needed and the event loop never
blocks. User text only ever reaches SQL as bound parameters.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .embedded_schema import last_change, open_database, prune_changes, set_meta
from .embedded_vectors import SyncedVectors
from .embedding import DIM, Embedder, passage_input
from .errors import KnowledgeUnavailable
from .french import fold, fts_match_expression, query_terms
from .fusion import leg_weights, relative_score_fusion
from .store import Chunk, HybridSearch, Passage, StoreHealth

__all__ = ["EmbeddedStore", "KEYWORD_POOL", "VECTOR_POOL"]

T = TypeVar("T")

# Candidates per leg before fusion, as Weaviate's QUERY_HYBRID_MAXIMUM_RESULTS default.
KEYWORD_POOL = 100
VECTOR_POOL = 100
# bm25() column weights (title, text): the title names the topic of every chunk under it.
TITLE_WEIGHT = 2.0
TEXT_WEIGHT = 1.0

_KEYWORD_SQL = (
    f"SELECT rowid, bm25(chunks_fts, {TITLE_WEIGHT}, {TEXT_WEIGHT}) AS rank "
    "FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?"
)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class EmbeddedStore(HybridSearch):
    """KnowledgeStore on a local SQLite file; see the module docstring."""

    backend = "embedded"

    def __init__(self, path: Path, embedder: Embedder | None, alpha: float = 0.5) -> None:
        self.path = Path(path)
        self.alpha = float(alpha)
        self._embedder = embedder
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kb-sqlite")
        self._conn: sqlite3.Connection | None = None  # only used on the executor thread
        self._vectors = SyncedVectors()
        self._vector_issue = ""  # why stored vectors were discarded, for health()
        self._closed = False

    # -- thread plumbing ---------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise KnowledgeUnavailable(f"knowledge store {self.path} is closed", reason="error")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        conn, vector_issue = open_database(self.path, self._embedder.model_id if self._embedder else None)
        if vector_issue:  # kept across a retried open: the vectors it discarded stay discarded
            self._vector_issue = vector_issue
        try:
            self._vectors.load(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    # -- search ------------------------------------------------------------------------

    async def search_vector(
        self, query: str, vector: np.ndarray | None, limit: int = 5, alpha: float | None = None
    ) -> list[Passage]:
        """Search with a precomputed query vector (benchmarks, callers that embed once).

        `vector=None` means keywords only; `alpha` overrides the store's (1 = vector only).
        """
        terms = query_terms(query)
        if not terms or limit <= 0:
            return []
        return await self._search_terms(terms, vector, limit, self.alpha if alpha is None else alpha)

    async def _search_terms(
        self, terms: list[str], vector: np.ndarray | None, limit: int, alpha: float
    ) -> list[Passage]:
        try:
            return await self._run(self._search_sync, terms, vector, limit, alpha)
        except KnowledgeUnavailable:
            raise
        except (sqlite3.Error, OSError, RuntimeError) as exc:  # unreadable, locked, newer schema...
            raise KnowledgeUnavailable(f"embedded knowledge search failed: {exc}", reason="error") from exc

    def _search_sync(
        self, terms: list[str], vector: np.ndarray | None, limit: int, alpha: float
    ) -> list[Passage]:
        conn = self._db()
        self._vectors.sync(conn)  # another process (`octi kb ingest`, another worker) may have written
        if vector is None:
            alpha = 0.0  # no dense leg: keywords carry the whole weight, as Weaviate with alpha 0
        keyword_weight, vector_weight = leg_weights(alpha)

        keyword: list[tuple[int, float]] = []
        if keyword_weight > 0:
            expression = fts_match_expression(terms)
            rows = conn.execute(_KEYWORD_SQL, (expression, max(KEYWORD_POOL, limit))).fetchall()
            keyword = [(pk, -rank) for pk, rank in rows]  # bm25() is "lower is better"

        dense: list[tuple[int, float]] = []
        if vector_weight > 0 and vector is not None:
            query = np.ascontiguousarray(vector, dtype=np.float32).reshape(DIM)
            dense = self._vectors.index.top(query, max(VECTOR_POOL, limit))

        fused = relative_score_fusion(keyword, dense, alpha, limit)
        if not fused:
            return []
        pks = [hit.id for hit in fused]
        placeholders = ",".join("?" * len(pks))
        rows = conn.execute(
            f"SELECT pk, id, source, title, text, position FROM chunks WHERE pk IN ({placeholders})",
            pks,
        ).fetchall()
        by_pk = {row[0]: row for row in rows}
        passages = []
        for hit in fused:
            row = by_pk.get(hit.id)
            if row is None:  # cannot happen while the index and the table are in sync
                continue
            _, chunk_id, source, title, text, position = row
            passages.append(Passage(chunk_id, source, title, text, float(hit.score), int(position)))
        return passages

    # -- writes ------------------------------------------------------------------------

    async def replace_document(self, source: str, checksum: str, chunks: Sequence[Chunk]) -> None:
        """Embed the chunks (if a model is available), then swap the document in one transaction."""
        chunks = list(chunks)
        vectors = None
        if self._embedder is not None and chunks:
            vectors = await self._embedder.embed_passages([passage_input(c.title, c.text) for c in chunks])
        await self.replace_document_vectors(source, checksum, chunks, vectors)

    async def replace_document_vectors(
        self, source: str, checksum: str, chunks: Sequence[Chunk], vectors: np.ndarray | None
    ) -> None:
        """`replace_document` with vectors computed by the caller (None: no vectors)."""
        chunks = list(chunks)
        for chunk in chunks:
            if chunk.source != source:
                raise ValueError(f"chunk {chunk.id!r} belongs to {chunk.source!r}, not {source!r}")
        if vectors is not None:
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.shape != (len(chunks), DIM):
                raise ValueError(f"expected {len(chunks)} vectors of {DIM} dims, got {vectors.shape}")
        await self._run(self._replace_sync, source, checksum, chunks, vectors)

    def _delete_rows(self, conn: sqlite3.Connection, source: str) -> list[tuple[int, str, str]]:
        """Delete a document's chunks; (pk, title, text) of each, for `_finish_write`."""
        old = conn.execute("SELECT pk, title, text FROM chunks WHERE source = ?", (source,)).fetchall()
        conn.execute("DELETE FROM chunks WHERE source = ?", (source,))
        return old

    @staticmethod
    def _finish_write(conn: sqlite3.Connection, removed: list[tuple[int, str, str]],
                      added: list[tuple[int, str, str]]) -> int:
        """End a write transaction: prune the change log, then update the keyword index, last:
        a statement firing the log's triggers opens a savepoint, on which FTS5 writes out its
        pending terms (interleaved with the chunks, ingestion took 1.5 times the CPU). Returns the
        log's newest entry, the transaction's own last change."""
        prune_changes(conn)
        logged = last_change(conn)
        conn.executemany(
            "INSERT INTO chunks_fts(chunks_fts, rowid, title, text) VALUES ('delete', ?, ?, ?)",
            ((pk, fold(title), fold(text)) for pk, title, text in removed),
        )
        conn.executemany(
            "INSERT INTO chunks_fts(rowid, title, text) VALUES (?, ?, ?)",
            ((pk, fold(title), fold(text)) for pk, title, text in added),
        )
        return logged

    def _replace_sync(
        self, source: str, checksum: str, chunks: list[Chunk], vectors: np.ndarray | None
    ) -> None:
        conn = self._db()
        added: list[tuple[int, str, str]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._vectors.catch_up(conn)
            removed = self._delete_rows(conn, source)
            conn.execute(
                "INSERT INTO documents(source, checksum, title, chunks, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(source) DO UPDATE SET checksum = excluded.checksum, title = excluded.title, "
                "chunks = excluded.chunks, updated = excluded.updated",
                (source, checksum, chunks[0].title if chunks else "", len(chunks), _now()),
            )
            for i, chunk in enumerate(chunks):
                blob = None if vectors is None else vectors[i].tobytes()
                cursor = conn.execute(
                    "INSERT INTO chunks(id, source, title, text, position, vector) VALUES (?, ?, ?, ?, ?, ?)",
                    (chunk.id, source, chunk.title, chunk.text, int(chunk.position), blob),
                )
                assert cursor.lastrowid is not None
                added.append((cursor.lastrowid, chunk.title, chunk.text))
            if vectors is not None and len(chunks) and self._embedder is not None:
                set_meta(conn, "embedding_model", self._embedder.model_id)
            logged = self._finish_write(conn, removed, added)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        # Only after the commit: the matrix mirrors what is durably stored.
        self._vectors.committed(logged, [pk for pk, _, _ in removed], [pk for pk, _, _ in added], vectors)

    async def delete_document(self, source: str) -> None:
        await self._run(self._delete_sync, source)

    def _delete_sync(self, source: str) -> None:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._vectors.catch_up(conn)
            removed = self._delete_rows(conn, source)
            conn.execute("DELETE FROM documents WHERE source = ?", (source,))
            logged = self._finish_write(conn, removed, [])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._vectors.committed(logged, [pk for pk, _, _ in removed], [], None)

    # -- reads -------------------------------------------------------------------------

    async def document_checksum(self, source: str) -> str | None:
        return await self._run(self._checksum_sync, source)

    def _checksum_sync(self, source: str) -> str | None:
        row = self._db().execute("SELECT checksum FROM documents WHERE source = ?", (source,)).fetchone()
        return None if row is None else row[0]

    async def count(self) -> int:
        return await self._run(lambda: self._db().execute("SELECT count(*) FROM chunks").fetchone()[0])

    async def chunk_texts(self) -> list[tuple[str, str]]:
        return await self._run(
            lambda: [tuple(row) for row in self._db().execute("SELECT title, text FROM chunks ORDER BY pk")]
        )

    async def sources(self) -> list[str]:
        return await self._run(
            lambda: [source for (source,) in self._db().execute("SELECT source FROM documents ORDER BY source")]
        )

    async def health(self) -> StoreHealth:
        vectors, reason = await self.vector_status()
        try:
            stats = await self._run(self._stats_sync)
        except Exception as exc:  # health must answer, whatever broke
            return StoreHealth(self.backend, False, vectors, 0, f"cannot read {self.path}: {exc}", {"path": str(self.path)})
        details = [d for d in (reason, self._vector_issue) if d]
        if vectors and stats["chunks_without_vectors"]:
            details.append(f"{stats['chunks_without_vectors']} chunks have no vector (stored without a model)")
        stats["path"] = str(self.path)
        chunks = int(stats.pop("chunks"))
        return StoreHealth(self.backend, True, vectors, chunks, "; ".join(details), stats)

    def _stats_sync(self) -> dict[str, Any]:
        conn = self._db()
        chunks, without = conn.execute(
            "SELECT count(*), coalesce(sum(vector IS NULL), 0) FROM chunks"
        ).fetchone()
        documents = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        return {
            "chunks": chunks,
            "documents": documents,
            "chunks_without_vectors": without,
            "vectors_in_memory": len(self._vectors.index),
        }

    # -- lifecycle ---------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close_sync)
        finally:
            self._closed = True
            self._executor.shutdown(wait=False)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._vectors.index.clear()

    # Test and benchmark hooks: what the in-memory matrix holds vs. the table.
    async def _vector_consistency(self) -> tuple[set[int], set[int]]:
        def check() -> tuple[set[int], set[int]]:
            stored = {pk for (pk,) in self._db().execute("SELECT pk FROM chunks WHERE vector IS NOT NULL")}
            return stored, self._vectors.index.pks()

        return await self._run(check)
