"""What the model reads of a passage: the whole chunk the search found, and a bounded title,
whatever the document gave (ingested for real into the embedded store)."""

from __future__ import annotations

import json

from app.agent.rag import TITLE_CHARS, knowledge_context, tool_output
from app.knowledge.embedded import EmbeddedStore
from app.knowledge.ingest import ingest_file
from app.knowledge.retrieval import Retriever

SHORT = ("La couveuse se règle à 37,7 °C pour les œufs de poule, avec une humidité de 50 à 55 % "
         "pendant les dix-huit premiers jours. Les œufs sont retournés plusieurs fois par jour, "
         "jamais moins de trois, et la ventilation reste ouverte au minimum dès le premier jour.")
LONG = ("Pour le vide sanitaire entre deux bandes, le bâtiment est d'abord vidé de sa litière, puis "
        "lavé à l'eau chaude sous pression, du plafond vers le sol, sans oublier les lignes d'abreuvoirs "
        "et les chaînes d'alimentation. Vient ensuite la désinfection, avec un produit homologué pour "
        "l'usage vétérinaire, appliqué sur des surfaces sèches. Le bâtiment reste fermé et sec ; les "
        "appareils de chauffage sont révisés et les pédiluves remplis à neuf. La durée minimale du vide "
        "sanitaire, une fois tout désinfecté et séché, est de quatorze jours.")


async def test_the_words_a_long_chunk_was_found_for_reach_the_model_and_its_title_stays_short(tmp_path, embedder):
    heading = "Conduite d'élevage " * 100  # a paragraph the author underlined: a setext heading
    document = tmp_path / "vide.md"
    document.write_text(f"# Vide sanitaire\n\n{heading}\n---\n\n{SHORT}\n\n{LONG}\n", encoding="utf-8")
    store = EmbeddedStore(tmp_path / "kb.sqlite3", embedder, alpha=0.5)
    try:
        await ingest_file(store, document)
        retrieval = await Retriever(store, budget_ms=5000, limit=4).retrieve("durée minimale du vide sanitaire")
    finally:
        await store.close()
    found = next(p for p in retrieval.passages if "quatorze jours" in p.text)
    assert len(found.text) > 700 and len(found.title) > 1000  # what ingestion made of it
    context = knowledge_context(retrieval)
    assert "quatorze jours" in context
    titles = [line.split("] ", 1)[1].rsplit(" (source : ", 1)[0] for line in context.splitlines() if line.startswith("[")]
    assert titles and all(len(title) <= TITLE_CHARS + 2 for title in titles)
    passages = json.loads(tool_output(retrieval))["passages"]
    assert any("quatorze jours" in p["text"] for p in passages)
    assert all(len(p["title"]) <= TITLE_CHARS + 2 for p in passages)
