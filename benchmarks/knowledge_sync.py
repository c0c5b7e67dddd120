"""What a running embedded store pays to see another process's commit (`octi kb ingest`, another
worker): the first search after it, against a search with nothing new.

Run from the repo root:

  .venv/bin/python benchmarks/knowledge_sync.py                  # 40k chunks, 30 commits
  .venv/bin/python benchmarks/knowledge_sync.py --chunks 10000 --commits 10

Two `EmbeddedStore`s on one file, as two processes have: one serving searches, one ingesting.
The store is built with the synthetic corpus and random unit vectors of retrieval.py (no
embedding model: what is measured is the store's own work). Then, --commits times, the
ingesting store replaces one document (10 chunks, new vectors) and the serving store runs one
hybrid search (alpha 0.5); the same number of searches with nothing committed in between give
the baseline. Each search is timed wall clock, through the hop to the store's thread, and in
CPU time on that thread (as in retrieval.py: on a shared machine, the wall clock also counts
the other jobs). At the end the serving store's vector matrix is checked against the table.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.knowledge.embedded import EmbeddedStore  # noqa: E402
from app.knowledge.french import query_terms  # noqa: E402
from app.knowledge.store import Chunk  # noqa: E402
from benchmarks.retrieval import CHUNKS_PER_DOC, Corpus, build, machine, pct, unit_vectors  # noqa: E402


async def timed_search(store: EmbeddedStore, query: str, vector: np.ndarray) -> tuple[float, float]:
    """One hybrid search: wall clock through the store's thread, and the CPU time it took there
    (what it costs whatever else the machine is doing), both in ms."""
    def on_thread() -> float:
        started = time.thread_time()
        store._search_sync(query_terms(query), vector, 5, 0.5)
        return (time.thread_time() - started) * 1000

    started = time.perf_counter()
    cpu = await store._run(on_thread)
    return (time.perf_counter() - started) * 1000, cpu


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chunks", type=int, default=40_000)
    p.add_argument("--commits", type=int, default=30, help="foreign commits, one search after each")
    args = p.parse_args()

    print(f"machine: {machine()}", flush=True)
    rng = np.random.default_rng(5)
    corpus = Corpus()
    with tempfile.TemporaryDirectory(prefix="octi-kb-sync-") as tmp_dir:
        path = Path(tmp_dir) / "kb.sqlite3"
        ingesting = EmbeddedStore(path, None, alpha=0.5)
        rate = await build(ingesting, corpus, args.chunks, rng)
        print(f"  built {args.chunks} chunks: {rate:,.0f} chunks/s", flush=True)
        serving = EmbeddedStore(path, None, alpha=0.5)
        queries = corpus.queries(2 * args.commits + 10)
        vectors = unit_vectors(rng, len(queries))
        for q, v in zip(queries[:10], vectors[:10]):  # opens the file, loads the matrix, warms the caches
            await serving.search_vector(q, v, limit=5, alpha=0.5)

        quiet = [await timed_search(serving, q, v) for q, v in zip(queries[10:10 + args.commits], vectors[10:])]
        after_commit = []
        documents = args.chunks // CHUNKS_PER_DOC
        for i, (q, v) in enumerate(zip(queries[10 + args.commits:], vectors[10 + args.commits:])):
            source = f"n{args.chunks}/doc{(i * 7919) % documents:06d}.md"  # an existing document, spread out
            chunks = [Chunk(f"{source}#{n}", source, "Mise à jour", corpus.chunk_text(), n)
                      for n in range(CHUNKS_PER_DOC)]
            await ingesting.replace_document_vectors(source, f"v{i}", chunks, unit_vectors(rng, len(chunks)))
            after_commit.append(await timed_search(serving, q, v))

        stored, in_memory = await serving._vector_consistency()
        await serving.close()
        await ingesting.close()

    print()
    print(f"hybrid search at {args.chunks} chunks, ms: p50 / p95 / max")
    for label, timings in (("nothing new", quiet), ("first after a commit", after_commit)):
        wall, cpu = zip(*timings)
        print(f"  {label:<22} wall {pct(wall, 50):7.2f} / {pct(wall, 95):7.2f} / {max(wall):7.2f}"
              f"   CPU {pct(cpu, 50):7.2f} / {pct(cpu, 95):7.2f} / {max(cpu):7.2f}   ({len(wall)} searches)")
    print(f"serving matrix in sync with the table: {'yes' if stored == in_memory else 'NO'} "
          f"({len(in_memory)} vectors)")


if __name__ == "__main__":
    asyncio.run(main())
