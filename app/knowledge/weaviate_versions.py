"""Versions of a document in the Weaviate store: what tells a replace's objects from the live
ones, and which version stays.

Weaviate has no transactions, so a replace writes the document as a new version, then deletes
the older ones. Every object carries its version's ingest id, `<µs since the epoch>-<chunk
count>-<random>`, and a UUID derived from its chunk id and that ingest id: a new version never
overwrites the live one, even where a chunk did not change, and rolling it back removes nothing
else. The time orders the versions of a document, the newest whole one staying (so hosts that
ingest one document within moments of each other are ordered by their clocks); the chunk count
tells a whole version from one being written or cut short.

Objects written before versions (UUIDs from chunk ids alone, a bare random ingest id) make one
whole version older than any: read, replaced and deleted like the others, with no change to the
collection's schema.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from weaviate.classes.query import Filter

# Weaviate ids must be UUIDs: ours are derived from the chunk id and the ingest id.
_UUID_NAMESPACE = uuid.UUID("6f1b0c1e-2a57-4c39-9d1e-0c7a1d0b5e42")
_last_stamp = 0


def chunk_uuid(chunk_id: str, ingest_id: str) -> uuid.UUID:
    return uuid.uuid5(_UUID_NAMESPACE, f"{ingest_id}\x00{chunk_id}")


def new_ingest_id(chunks: int) -> str:
    global _last_stamp
    # Strictly increasing in a process, so that its replaces of a document, one after the
    # other, are ordered even within a microsecond or across a step back of the clock.
    _last_stamp = max(time.time_ns() // 1000, _last_stamp + 1)
    return f"{_last_stamp}-{chunks}-{uuid.uuid4().hex[:12]}"


def of_versions(source: str, ingest_ids: list[str]) -> Any:
    """A filter for these versions of the document (Equal and Or: every server has them)."""
    return Filter.by_property("source").equal(source) & Filter.any_of(
        [Filter.by_property("ingest_id").equal(ingest_id) for ingest_id in ingest_ids])


@dataclass(frozen=True, slots=True)
class Version:
    """One ingest of a document, as the store holds it."""

    ingest_id: str
    stamp: int          # µs since the epoch; -1 for an ingest id written before versions
    chunks: int | None  # the chunks it was written with; None for those older ids
    stored: int         # its objects in the store

    @classmethod
    def parse(cls, ingest_id: str, stored: int = 0) -> Version:
        stamp, _, rest = ingest_id.partition("-")
        chunks, _, nonce = rest.partition("-")
        if not (stamp.isdigit() and chunks.isdigit() and nonce):
            return cls(ingest_id, -1, None, stored)
        return cls(ingest_id, int(stamp), int(chunks), stored)

    @property
    def order(self) -> tuple[int, str]:
        return self.stamp, self.ingest_id

    @property
    def whole(self) -> bool:
        # Older ids do not tell: the scheme that wrote them kept one version a document.
        return self.chunks is None or self.stored >= self.chunks
