"""EmbeddedStore specifics: degrading to keywords, persistence, vector sync, atomicity; open_store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.config import Settings
from app.knowledge import embedded_schema
from app.knowledge.embedded import EmbeddedStore
from app.knowledge.embedding import Embedder
from tests.knowledge_fakes import BagOfWords, no_cpu_support
from app.knowledge.errors import KnowledgeUnavailable
from app.knowledge.store import Chunk
from app.knowledge.stores import open_store
from app.knowledge.vector_index import VectorIndex
from app.knowledge.weaviate_store import WeaviateStore

DOCS = {
    "incubation.md": ("Incubation", [
        "La température d'incubation est de 37,7 °C.",
        "L'éclosion a lieu au bout de 21 jours.",
        "Le mirage à J7 retire les œufs clairs.",
    ]),
    "eau.md": ("Abreuvement", ["Vérifiez les pipettes chaque matin.", "Une poule boit deux fois ce qu'elle mange."]),
    "vaccins.md": ("Vaccination", ["Le vaccin Newcastle se donne dans l'eau de boisson."]),
}


def chunks(source: str) -> list[Chunk]:
    title, texts = DOCS[source]
    return [Chunk(f"{source}#{i}", source, title, text, i) for i, text in enumerate(texts)]


async def fill(store: EmbeddedStore) -> None:
    for source in DOCS:
        await store.replace_document(source, f"sha-{source}", chunks(source))


@pytest.fixture
async def store(tmp_path, embedder):
    store = EmbeddedStore(tmp_path / "kb.sqlite3", embedder, alpha=0.5)
    yield store
    await store.close()


async def assert_vectors_in_sync(store: EmbeddedStore) -> None:
    stored, in_memory = await store._vector_consistency()
    assert stored == in_memory


# -- degraded mode --------------------------------------------------------------------


async def test_unloadable_model_degrades_to_keywords(tmp_path):
    embedder = Embedder(no_cpu_support)
    store = EmbeddedStore(tmp_path / "kb.sqlite3", embedder, alpha=0.5)
    await fill(store)
    assert not embedder.available
    assert "avx2" in embedder.load_error
    passages = await store.search("eclosion")
    assert [p.id for p in passages] == ["incubation.md#1"]  # keyword hits only, nothing vector-ish
    assert passages[0].score == pytest.approx(1.0)
    health = await store.health()
    assert health.ok and not health.vectors
    assert "avx2" in health.detail and "keyword" in health.detail
    assert health.extra["chunks_without_vectors"] == 6
    await store.close()
    embedder.close()


async def test_no_embedder_at_all(tmp_path):
    store = EmbeddedStore(tmp_path / "kb.sqlite3", None, alpha=0.5)
    await fill(store)
    assert (await store.search("pipettes"))[0].id == "eau.md#0"
    health = await store.health()
    assert not health.vectors and "no embedding model" in health.detail
    await store.close()


async def test_vector_leg_finds_what_keywords_cannot(store):
    await fill(store)
    # Only the vector leg: proves the matrix answers on its own.
    query = await store._embedder.embed_query("les œufs clairs au mirage")
    passages = await store.search_vector("œufs clairs mirage", query, limit=2, alpha=1.0)
    assert passages[0].id == "incubation.md#2"


# -- persistence and sync ------------------------------------------------------------


async def test_persists_across_reopen(tmp_path, embedder):
    path = tmp_path / "kb.sqlite3"
    first = EmbeddedStore(path, embedder, alpha=0.5)
    await fill(first)
    before = await first.search("température incubation", limit=4)
    await first.close()

    second = EmbeddedStore(path, embedder, alpha=0.5)
    assert await second.count() == 6
    assert await second.document_checksum("eau.md") == "sha-eau.md"
    after = await second.search("température incubation", limit=4)
    assert [(p.id, round(p.score, 6)) for p in after] == [(p.id, round(p.score, 6)) for p in before]
    health = await second.health()
    assert health.extra["vectors_in_memory"] == 6
    await assert_vectors_in_sync(second)
    await second.close()


async def test_a_running_store_sees_what_another_process_ingested_by_meaning_too(tmp_path, embedder):
    """`octi kb ingest` (another process: another connection to the file) while the service
    runs: the service's next search finds the new document through its vector leg as well, and
    no longer the document deleted."""
    path = tmp_path / "kb.sqlite3"
    serving = EmbeddedStore(path, embedder, alpha=0.5)
    await serving.replace_document("eau.md", "sha-eau.md", chunks("eau.md"))
    assert [p.source for p in await serving.search("pipettes", limit=1)] == ["eau.md"]
    ingesting = EmbeddedStore(path, embedder, alpha=0.5)
    await ingesting.replace_document("incubation.md", "sha-incubation.md", chunks("incubation.md"))
    await ingesting.delete_document("eau.md")
    await ingesting.close()
    query = await embedder.embed_query("les œufs clairs au mirage")
    passages = await serving.search_vector("œufs clairs mirage", query, limit=2, alpha=1.0)  # vectors only
    assert passages and passages[0].id == "incubation.md#2"
    assert all(p.source == "incubation.md" for p in passages)
    await assert_vectors_in_sync(serving)
    await serving.close()


async def test_another_process_s_commit_costs_the_next_search_only_the_chunks_it_changed(
        tmp_path, embedder, monkeypatch):
    """Not every vector read again: at 40k chunks that took a turn's whole budget (the
    figures are in benchmarks/knowledge_sync.py)."""
    path = tmp_path / "kb.sqlite3"
    serving = EmbeddedStore(path, embedder, alpha=0.5)
    await fill(serving)
    assert await serving.search("pipettes")
    read: list[int] = []
    add = VectorIndex.add
    monkeypatch.setattr(VectorIndex, "add", lambda index, pks, vectors: (read.append(len(pks)), add(index, pks, vectors)))
    ingesting = EmbeddedStore(path, embedder, alpha=0.5)
    # The newest document goes and another comes: SQLite gives its chunks the freed row ids.
    await ingesting.delete_document("vaccins.md")
    await ingesting.replace_document("poussins.md", "sha-poussins", [
        Chunk("poussins.md#0", "poussins.md", "Démarrage", "Les poussins se serrent sous la lampe : ils ont froid.", 0)])
    await ingesting.close()
    read.clear()
    query = await embedder.embed_query("les poussins ont froid sous la lampe")
    passages = await serving.search_vector("poussins froid lampe", query, limit=3, alpha=1.0)
    assert passages[0].id == "poussins.md#0"
    assert "vaccins.md" not in {p.source for p in passages}
    assert sum(read) == 1  # the new chunk's vector, not all six
    await assert_vectors_in_sync(serving)
    await serving.close()


async def test_a_store_behind_what_the_change_log_keeps_reads_every_vector(tmp_path, embedder, monkeypatch):
    monkeypatch.setattr(embedded_schema, "KEPT_CHANGES", 2)
    path = tmp_path / "kb.sqlite3"
    serving = EmbeddedStore(path, embedder, alpha=0.5)
    await serving.replace_document("eau.md", "sha-eau.md", chunks("eau.md"))
    assert await serving.search("pipettes")
    ingesting = EmbeddedStore(path, embedder, alpha=0.5)
    await ingesting.replace_document("incubation.md", "sha-incubation.md", chunks("incubation.md"))
    await ingesting.delete_document("eau.md")
    await ingesting.close()
    query = await embedder.embed_query("les œufs clairs au mirage")
    passages = await serving.search_vector("œufs clairs mirage", query, limit=2, alpha=1.0)
    assert [p.source for p in passages] == ["incubation.md", "incubation.md"]
    await assert_vectors_in_sync(serving)
    await serving.close()


async def test_writing_after_another_process_wrote_keeps_its_changes_too(tmp_path, embedder):
    path = tmp_path / "kb.sqlite3"
    first = EmbeddedStore(path, embedder, alpha=0.5)
    await first.replace_document("eau.md", "sha-eau.md", chunks("eau.md"))
    second = EmbeddedStore(path, embedder, alpha=0.5)
    await second.replace_document("incubation.md", "sha-incubation.md", chunks("incubation.md"))
    await first.replace_document("vaccins.md", "sha-vaccins.md", chunks("vaccins.md"))  # no search between
    await assert_vectors_in_sync(first)  # its own document, and the one written before it
    await second.delete_document("eau.md")
    await assert_vectors_in_sync(second)
    for store in (first, second):
        await store.search("éclosion")
        await assert_vectors_in_sync(store)
        await store.close()


async def test_a_file_of_an_earlier_version_gets_its_change_log(tmp_path, embedder):
    path = tmp_path / "kb.sqlite3"
    first = EmbeddedStore(path, embedder, alpha=0.5)
    await fill(first)
    await first.close()
    with sqlite3.connect(path) as db:  # as written before the change log existed
        for trigger in ("chunk_added", "chunk_removed", "chunk_vector_changed"):
            db.execute(f"DROP TRIGGER {trigger}")
        db.execute("DROP TABLE chunk_changes")
    serving = EmbeddedStore(path, embedder, alpha=0.5)
    assert (await serving.search("éclosion"))[0].id == "incubation.md#1"
    ingesting = EmbeddedStore(path, embedder, alpha=0.5)
    await ingesting.delete_document("incubation.md")
    await ingesting.close()
    await serving.search("éclosion")
    await assert_vectors_in_sync(serving)
    await serving.close()


async def test_vectors_follow_replace_and_delete(store):
    await fill(store)
    await assert_vectors_in_sync(store)
    await store.replace_document("incubation.md", "v2", chunks("incubation.md")[:1])
    await assert_vectors_in_sync(store)
    await store.delete_document("eau.md")
    await assert_vectors_in_sync(store)
    assert (await store.health()).extra["vectors_in_memory"] == 2
    vector = await store._embedder.embed_query("pipettes poule boit")
    for p in await store.search_vector("pipettes poule boit", vector, limit=10, alpha=1.0):
        assert p.source != "eau.md"
        assert p.id != "incubation.md#1"


async def test_many_replacements_keep_the_matrix_consistent(store):
    # Exercises the swap-with-last removal and capacity growth of the in-memory matrix.
    for round_ in range(5):
        for source in DOCS:
            keep = chunks(source)[: 1 + (round_ % len(DOCS[source][1]))]
            await store.replace_document(source, f"r{round_}", keep)
            await assert_vectors_in_sync(store)
    assert await store.count() == sum(1 + (4 % len(texts)) for _, texts in DOCS.values())


async def test_failed_replace_leaves_the_old_version(store):
    await fill(store)
    bad = chunks("incubation.md") + [Chunk("incubation.md#0", "incubation.md", "Incubation", "doublon", 9)]
    with pytest.raises(sqlite3.IntegrityError):
        await store.replace_document("incubation.md", "broken", bad)
    assert await store.count() == 6
    assert await store.document_checksum("incubation.md") == "sha-incubation.md"
    assert (await store.search("éclosion"))[0].id == "incubation.md#1"
    await assert_vectors_in_sync(store)


async def test_chunks_must_belong_to_the_document(store):
    with pytest.raises(ValueError):
        await store.replace_document("a.md", "x", [Chunk("b.md#0", "b.md", "B", "texte", 0)])


async def test_empty_document_keeps_its_checksum(store):
    await store.replace_document("vide.md", "sha-empty", [])
    assert await store.document_checksum("vide.md") == "sha-empty"
    assert await store.count() == 0


async def test_other_model_vectors_are_discarded_on_open(tmp_path, embedder):
    path = tmp_path / "kb.sqlite3"
    first = EmbeddedStore(path, embedder, alpha=0.5)
    await fill(first)
    await first.close()
    other = Embedder(BagOfWords, model_id="another-model")
    second = EmbeddedStore(path, other, alpha=0.5)
    health = await second.health()
    assert health.extra["vectors_in_memory"] == 0
    assert "another-model" in health.detail and "re-ingest" in health.detail
    assert (await second.search("éclosion"))[0].id == "incubation.md#1"  # keywords still answer
    await second.close()
    other.close()


async def test_keyword_index_is_rebuilt_when_normalisation_changes(tmp_path, embedder):
    path = tmp_path / "kb.sqlite3"
    first = EmbeddedStore(path, embedder, alpha=0.0)
    await fill(first)
    await first.close()
    with sqlite3.connect(path) as db:  # as if written by an older fold version
        db.execute("UPDATE meta SET value = '0' WHERE key = 'fold_version'")
        db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('delete-all')")
    second = EmbeddedStore(path, embedder, alpha=0.0)
    assert (await second.search("eclosion"))[0].id == "incubation.md#1"
    await second.delete_document("incubation.md")  # deletes need the rebuilt index to match
    assert await second.search("eclosion") == []
    await second.close()


async def test_unreadable_database_raises_knowledge_unavailable(tmp_path, embedder):
    path = tmp_path / "kb.sqlite3"
    path.mkdir()  # a directory where the file should be
    store = EmbeddedStore(path, embedder, alpha=0.5)
    with pytest.raises(KnowledgeUnavailable):
        await store.search("éclosion")
    health = await store.health()
    assert not health.ok
    await store.close()


async def test_closed_store_refuses(store):
    await store.close()
    with pytest.raises(KnowledgeUnavailable):
        await store.search("éclosion")
    await store.close()  # idempotent


async def test_sqlite_runs_on_the_store_thread(store):
    import threading

    await fill(store)
    seen = await store._run(lambda: threading.current_thread().name)
    assert seen.startswith("kb-sqlite")
    assert threading.current_thread().name != seen


# -- open_store -----------------------------------------------------------------------


async def test_open_store_embedded(tmp_path, embedder):
    data_dir = tmp_path / "nested" / "data"
    store = open_store(Settings(_env_file=None, knowledge_backend="embedded", data_dir=data_dir, rag_alpha=0.3), embedder)
    assert isinstance(store, EmbeddedStore)
    assert store.path == data_dir / "knowledge.sqlite3"
    assert store.alpha == 0.3
    assert data_dir.is_dir()
    await store.replace_document("eau.md", "x", chunks("eau.md"))
    assert Path(store.path).is_file()
    await store.close()


def test_open_store_weaviate_needs_a_url(tmp_path, embedder):
    with pytest.raises(ValueError, match="WEAVIATE_URL"):
        open_store(Settings(_env_file=None, knowledge_backend="weaviate", weaviate_url=None, data_dir=tmp_path), embedder)


async def test_open_store_weaviate(tmp_path, embedder):
    settings = Settings(_env_file=None, knowledge_backend="weaviate", weaviate_url="http://kb:8080",
                        weaviate_api_key="k", weaviate_collection="Kb", rag_alpha=0.6, data_dir=tmp_path)
    store = open_store(settings, embedder)
    assert isinstance(store, WeaviateStore)
    assert (store.collection_name, store.alpha, store.url) == ("Kb", 0.6, "http://kb:8080")
    await store.close()
