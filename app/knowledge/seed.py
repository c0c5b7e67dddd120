"""The sample knowledge pack, ingested on first run so OCTI is useful out of the box.

The pack's documents are stored under the sources "sample_pack/<file name>" (not their
absolute path), so they keep the same identity wherever the application is installed, and
ingesting the pack directory by hand refreshes the seeded copies instead of duplicating them
(see ingest/sources.py).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from app.knowledge.ingest import IngestReport, ingest_paths
from app.knowledge.ingest.sources import SAMPLE_PACK_DIR, file_source
from app.knowledge.store import KnowledgeStore

log = logging.getLogger(__name__)


async def ingest_sample_pack(store: KnowledgeStore) -> IngestReport:
    """(Re-)ingest the sample pack; unchanged documents are skipped by checksum."""
    report = await ingest_paths(store, [SAMPLE_PACK_DIR])
    for source, message in report.failed:
        log.warning("sample pack: %s not ingested: %s", source, message)
    return report


def sample_pack_files() -> list[Path]:
    """The pack's documents, in the order ingestion walks them (blocking: lists a directory)."""
    return sorted(SAMPLE_PACK_DIR.glob("*.md"), key=lambda p: p.parts)


def _first_and_last_sources() -> tuple[str, str] | None:
    files = sample_pack_files()
    return (file_source(files[0]), file_source(files[-1])) if files else None


async def ensure_seeded(store: KnowledgeStore, *, refresh: bool = False) -> int:
    """Ingest the sample pack into an empty store; the number of chunks written.

    Cheap when the store already holds content: one `count()` and at most two checksum
    look-ups, nothing written. A first seeding that was interrupted (the pack's first
    document stored, its last one missing: ingestion goes in order) is resumed, unchanged
    documents being skipped. A store holding other content but no pack document is left
    alone. `refresh=True` re-checks every pack document against its checksum even then, so
    an updated pack replaces the stored copies (cheap when nothing changed).
    """
    if not refresh and await store.count() > 0:
        ends = await asyncio.to_thread(_first_and_last_sources)
        if ends is None:
            return 0
        first, last = ends
        if await store.document_checksum(last) is not None or await store.document_checksum(first) is None:
            return 0
        log.info("sample pack only partly ingested: resuming")
    report = await ingest_sample_pack(store)
    if report.chunks_written:
        log.info("sample pack seeded: %s", report.summary())
    return report.chunks_written
