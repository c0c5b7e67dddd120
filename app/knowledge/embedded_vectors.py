"""The embedded store's vector matrix, kept in step with its SQLite file.

The matrix is read whole when the file is opened. What another connection (`octi kb ingest`,
another worker) commits afterwards reaches it through the file's change log (`chunk_changes`,
written by triggers, see embedded_schema.py): the next search, or the next write, reads again
the vectors of the chunks the log names since the matrix was last in step, and only those.
Reading them all instead took 150-450 ms at 40k chunks, on the search path, past a turn's
300 ms budget (benchmarks/knowledge_sync.py). The store's own writes update the matrix with
what they wrote, without reading it back.

Used on the store's SQLite thread only, with its connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from .embedded_schema import changed_since, last_change
from .embedding import DIM
from .vector_index import VectorIndex

# Under SQLite's bound-parameter limit (999 before 3.32).
PKS_PER_QUERY = 900


def _data_version(conn: sqlite3.Connection) -> int:
    """Changes when another connection commits to the file (never for this one's own commits)."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """A read transaction: its statements see one state of the file, the log and the table alike."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


class SyncedVectors:
    """The chunks' vectors in a `VectorIndex` (`index`), following the file."""

    def __init__(self) -> None:
        self.index = VectorIndex(DIM)
        self._data_version = 0  # SQLite's count of other connections' commits, at the last sync
        self._seen_change = 0  # the newest entry of the change log the matrix reflects

    def load(self, conn: sqlite3.Connection) -> None:
        """Read every vector (opening the file)."""
        self._data_version = _data_version(conn)
        with _snapshot(conn):
            self._read_all(conn)

    def sync(self, conn: sqlite3.Connection) -> None:
        """Take in what other connections committed; when none did (the usual case), one pragma."""
        version = _data_version(conn)
        if version != self._data_version:
            with _snapshot(conn):
                self.catch_up(conn)
            self._data_version = version

    def catch_up(self, conn: sqlite3.Connection) -> None:
        """Read again the vectors of the chunks changed since the matrix was last in step; in
        a transaction, so the log and the table agree. A write transaction calls it first: the
        changes it logs after that are then all its own (see `committed`)."""
        changes = changed_since(conn, self._seen_change)
        if changes is None:  # further behind than the log keeps
            self._read_all(conn)
            return
        pks, self._seen_change = changes
        self.index.remove(pks)
        for start in range(0, len(pks), PKS_PER_QUERY):
            batch = pks[start:start + PKS_PER_QUERY]
            self._add(conn.execute(
                "SELECT pk, vector FROM chunks WHERE vector IS NOT NULL "
                f"AND pk IN ({','.join('?' * len(batch))})",
                batch,
            ))

    def committed(self, last_change: int, removed: Sequence[int], added: Sequence[int],
                  vectors: np.ndarray | None) -> None:
        """After this store's write transaction committed (`catch_up` first in it): the chunks
        it removed and added, and the newest entry of the log then, its own last change."""
        self.index.remove(removed)
        if vectors is not None and len(added):
            self.index.add(added, vectors)
        self._seen_change = last_change

    def _read_all(self, conn: sqlite3.Connection) -> None:
        self._seen_change = last_change(conn)
        self.index.clear()
        self._add(conn.execute("SELECT pk, vector FROM chunks WHERE vector IS NOT NULL"))

    def _add(self, rows: Iterable[tuple[int, bytes]]) -> None:
        pks: list[int] = []
        blobs: list[bytes] = []
        for pk, blob in rows:
            if len(blob) == DIM * 4:
                pks.append(pk)
                blobs.append(blob)
        if pks:
            matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(pks), DIM)
            self.index.add(pks, matrix)
