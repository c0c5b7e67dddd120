"""The embedded knowledge store's SQLite file: its layout, and bringing it up to date on open.

Layout of the database (one file, `data/knowledge.sqlite3` by default):

- `meta(key, value)`: schema version, fold version of the FTS index, embedding model id;
- `documents(source, checksum, title, chunks, updated)`: one row per ingested document;
- `chunks(pk, id, source, title, text, position, vector)`: `vector` is a float32 blob
  (NULL when the chunk was stored without an embedding model);
- `chunks_fts(title, text)`: contentless FTS5 index, `unicode61 remove_diacritics 2`, over the
  *folded* title and text (french.fold), rowid = chunks.pk. Contentless because the text
  already lives in `chunks`; deleting from it needs the indexed values, which are recomputed
  with `fold` (hence the fold version check on open);
- `chunk_changes(seq, pk)`: the chunks inserted, deleted or given another vector, in commit
  order, written by triggers (so by every writer of the file). A running store applies what
  other processes changed to its vector matrix from it, chunk by chunk, instead of reading
  every vector again; the oldest entries are pruned past KEPT_CHANGES.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from .french import FOLD_VERSION, fold

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    source   TEXT PRIMARY KEY,
    checksum TEXT NOT NULL,
    title    TEXT NOT NULL DEFAULT '',
    chunks   INTEGER NOT NULL DEFAULT 0,
    updated  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    pk       INTEGER PRIMARY KEY,
    id       TEXT NOT NULL UNIQUE,
    source   TEXT NOT NULL REFERENCES documents(source) ON DELETE CASCADE,
    title    TEXT NOT NULL,
    text     TEXT NOT NULL,
    position INTEGER NOT NULL,
    vector   BLOB
);
CREATE INDEX IF NOT EXISTS chunks_by_source ON chunks(source, position);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    title, text, content='', tokenize="unicode61 remove_diacritics 2"
);
CREATE TABLE IF NOT EXISTS chunk_changes (
    seq INTEGER PRIMARY KEY,
    pk  INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS chunk_added AFTER INSERT ON chunks BEGIN
    INSERT INTO chunk_changes(pk) VALUES (new.pk);
END;
CREATE TRIGGER IF NOT EXISTS chunk_removed AFTER DELETE ON chunks BEGIN
    INSERT INTO chunk_changes(pk) VALUES (old.pk);
END;
CREATE TRIGGER IF NOT EXISTS chunk_vector_changed AFTER UPDATE OF vector ON chunks BEGIN
    INSERT INTO chunk_changes(pk) VALUES (new.pk);
END;
"""

# A store more changes behind than this (idle through a whole large ingestion) reads every
# vector again; 100k entries are about 2 MB.
KEPT_CHANGES = 100_000


def open_database(path: Path, embedding_model: str | None) -> tuple[sqlite3.Connection, str]:
    """The knowledge file at `path`, created if missing and brought up to date, and why its
    stored vectors were discarded ("" when they were not). `embedding_model` is the id of the
    model the store embeds with (None: no model, stored vectors are kept as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit mode: transactions are explicit BEGIN/COMMIT, so nothing stays open.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        stored_schema = int(meta.get("schema_version", SCHEMA_VERSION))
        if stored_schema != SCHEMA_VERSION:
            raise RuntimeError(
                f"{path} has knowledge schema {stored_schema}, this version reads {SCHEMA_VERSION}"
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            set_meta(conn, "schema_version", str(SCHEMA_VERSION))
            if meta.get("fold_version") not in (None, str(FOLD_VERSION)):
                _rebuild_fts(conn, path)
            set_meta(conn, "fold_version", str(FOLD_VERSION))
            vector_issue = _check_vector_model(conn, path, meta.get("embedding_model"), embedding_model)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except BaseException:
        conn.close()
        raise
    return conn, vector_issue


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def last_change(conn: sqlite3.Connection) -> int:
    """The newest entry of the change log (0 when it is empty)."""
    return int(conn.execute("SELECT coalesce(max(seq), 0) FROM chunk_changes").fetchone()[0])


def changed_since(conn: sqlite3.Connection, seen: int) -> tuple[list[int], int] | None:
    """The chunks changed after entry `seen` of the log and its newest entry, or None when
    entries after `seen` were pruned (the caller must read everything again)."""
    # Two subqueries: SQLite reads one end of the index for a lone min() or max(), not for both.
    oldest, newest = conn.execute(
        "SELECT (SELECT min(seq) FROM chunk_changes), (SELECT max(seq) FROM chunk_changes)").fetchone()
    if newest is None or newest <= seen:
        return [], seen
    if oldest > seen + 1:
        return None
    rows = conn.execute("SELECT DISTINCT pk FROM chunk_changes WHERE seq > ? AND seq <= ?", (seen, newest))
    return [pk for (pk,) in rows], newest


def prune_changes(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM chunk_changes WHERE seq <= (SELECT max(seq) FROM chunk_changes) - ?",
                 (KEPT_CHANGES,))


def _rebuild_fts(conn: sqlite3.Connection, path: Path) -> None:
    log.info("rebuilding the keyword index of %s (normalisation changed)", path)
    conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('delete-all')")
    rows = conn.execute("SELECT pk, title, text FROM chunks")
    conn.executemany(
        "INSERT INTO chunks_fts(rowid, title, text) VALUES (?, ?, ?)",
        ((pk, fold(title), fold(text)) for pk, title, text in rows),
    )


def _check_vector_model(conn: sqlite3.Connection, path: Path, stored: str | None, current: str | None) -> str:
    """Discard the stored vectors when they came from another model; says why ("" if kept)."""
    if current is None or stored is None or stored == current:
        return ""
    # Vectors of two models live in different spaces: cosine between them is noise.
    cleared = conn.execute("UPDATE chunks SET vector = NULL WHERE vector IS NOT NULL").rowcount
    conn.execute("DELETE FROM meta WHERE key = 'embedding_model'")
    issue = (f"{cleared} stored vectors came from {stored}, not {current}: "
             "discarded, re-ingest to restore the vector leg")
    log.warning("%s: %s", path, issue)
    return issue
