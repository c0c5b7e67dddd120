"""WeaviateStore against the fake server: request shape, parsing, schema, budgets, errors."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import time
import warnings
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from app.knowledge.embedding import DIM, Embedder
from tests.knowledge_fakes import no_cpu_support
from app.knowledge.errors import KnowledgeUnavailable
from app.knowledge.retrieval import Retriever
from app.knowledge import weaviate_store
from app.knowledge.store import Chunk
from app.knowledge.weaviate_store import VECTOR_NAME, WeaviateStore, parse_weaviate_url
from app.knowledge.weaviate_versions import chunk_uuid
from app.simulators.hung_server import hung_server
from weaviate.proto.v1 import base_search_pb2
from tests.weaviate_fake import FakeWeaviate, StoredObject, fake_weaviate, fake_weaviate_server  # noqa: F401 - fixtures
from tests.harness import free_loopback_port

COLLECTION = "OctiTest"
SOURCE = "guides/incubation.md"
CHUNKS = [
    Chunk(f"{SOURCE}#0", SOURCE, "Incubation", "La température d'incubation est de 37,7 °C.", 0),
    Chunk(f"{SOURCE}#1", SOURCE, "Incubation", "L'éclosion a lieu au bout de 21 jours.", 1),
    Chunk("guides/eau.md#0", "guides/eau.md", "Abreuvement", "Vérifiez les pipettes chaque matin.", 0),
]
# A budget cut must return well before the client's own ~60 s retry loop would.
GENEROUS_BOUND_S = 5.0


@pytest.fixture
async def store(fake_weaviate, embedder):
    store = WeaviateStore(fake_weaviate.url, "secret-key", COLLECTION, embedder, alpha=0.5, query_budget_s=0.5)
    yield store
    await store.close()


async def fill(store: WeaviateStore) -> None:
    await store.replace_document(SOURCE, "sha-1", CHUNKS[:2])
    await store.replace_document("guides/eau.md", "sha-2", CHUNKS[2:])


def stored_chunk(fake: FakeWeaviate, chunk_id: str) -> tuple[str, StoredObject]:
    """The UUID and the object of the one stored copy of a chunk."""
    [(key, stored)] = [(k, o) for k, o in fake.objects[COLLECTION].items() if o.properties["chunk_id"] == chunk_id]
    return key, stored


# -- connection parameters --------------------------------------------------------------


def test_url_parsing():
    assert parse_weaviate_url("http://kb:8080") == {
        "http_host": "kb", "http_port": 8080, "http_secure": False,
        "grpc_host": "kb", "grpc_port": 50051, "grpc_secure": False,
    }
    cloud = parse_weaviate_url("https://x.weaviate.cloud?grpc_host=grpc-x.weaviate.cloud&grpc_port=443")
    assert (cloud["http_port"], cloud["http_secure"], cloud["grpc_host"], cloud["grpc_port"], cloud["grpc_secure"]) == (
        443, True, "grpc-x.weaviate.cloud", 443, True)
    assert parse_weaviate_url("http://kb:8080", grpc_port=50052)["grpc_port"] == 50052
    assert parse_weaviate_url("http://kb")["http_port"] == 80
    for bad in ["kb:8080", "ftp://kb", "http://kb:8080/weaviate", "http://"]:
        with pytest.raises(ValueError):
            parse_weaviate_url(bad)


# -- schema ---------------------------------------------------------------------------


async def test_creates_the_collection_once_with_our_schema(fake_weaviate, store, embedder):
    await fill(store)
    schema = fake_weaviate.schemas[COLLECTION]
    stopwords = schema["invertedIndexConfig"]["stopwords"]
    assert stopwords["preset"] == "none"
    assert {"euh", "bonjour", "voila", "le", "des"} <= set(stopwords["additions"])
    assert schema["vectorConfig"][VECTOR_NAME]["vectorizer"] == {"none": {}}
    props = {p["name"]: p for p in schema["properties"]}
    assert props["text_folded"]["tokenization"] == "word"
    assert props["title_folded"]["tokenization"] == "word"
    assert props["source"]["tokenization"] == "field"
    assert props["text"]["indexSearchable"] is False
    assert props["position"]["dataType"] == ["int"]

    other = WeaviateStore(fake_weaviate.url, None, COLLECTION, embedder)
    assert await other.count() == 3
    await other.close()
    assert [r for r in fake_weaviate.rest_requests if r == ("POST", "/v1/schema")] == [("POST", "/v1/schema")]


async def test_objects_carry_folded_text_vectors_and_their_version(fake_weaviate, store):
    await fill(store)
    key, stored = stored_chunk(fake_weaviate, f"{SOURCE}#1")
    ingest_id = stored.properties["ingest_id"]
    stamp, chunks, _ = ingest_id.split("-")
    assert abs(int(stamp) / 1e6 - time.time()) < 60 and chunks == "2"  # two chunks in this version
    assert key == str(chunk_uuid(f"{SOURCE}#1", ingest_id))
    assert stored.properties["text"] == "L'éclosion a lieu au bout de 21 jours."
    assert stored.properties["text_folded"] == "l'eclosion a lieu au bout de 21 jours."
    assert stored.properties["checksum"] == "sha-1"
    assert stored.properties["position"] == 1
    vector = stored.vectors[VECTOR_NAME]
    assert vector.shape == (DIM,) and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


async def test_replace_writes_then_deletes_older_versions(fake_weaviate, store):
    await fill(store)
    await store.replace_document(SOURCE, "sha-3", [CHUNKS[1]])
    assert await store.count() == 2
    assert await store.document_checksum(SOURCE) == "sha-3"
    delete = fake_weaviate.calls("BatchDelete")[-1].request
    assert delete.collection == COLLECTION
    assert {f.target.property for f in delete.filters.filters} == {"source", "ingest_id"}


# -- search request and reply ----------------------------------------------------------


async def test_hybrid_request_shape(fake_weaviate, store, embedder):
    await fill(store)
    passages = await store.search("Euh, combien de jours pour l'éclosion ?", limit=2)
    request = fake_weaviate.calls("Search")[-1].request
    hybrid = request.hybrid_search
    assert request.collection == COLLECTION
    assert request.limit == 4  # twice: a passage stored twice while a replace swaps versions counts once
    assert hybrid.alpha == pytest.approx(0.5)  # not the client default (0.7): sent explicitly
    assert hybrid.fusion_type == base_search_pb2.Hybrid.FusionType.FUSION_TYPE_RELATIVE_SCORE
    assert hybrid.query == "jours eclosion"
    assert list(hybrid.properties) == ["title_folded^2", "text_folded"]
    assert list(hybrid.targets.target_vectors) == [VECTOR_NAME]
    sent = np.frombuffer(hybrid.vector_bytes, dtype="<f4")
    expected = await embedder.embed_query("Euh, combien de jours pour l'éclosion ?")
    np.testing.assert_allclose(sent, expected, atol=1e-6)
    assert request.metadata.score
    assert passages[0].id == f"{SOURCE}#1"


async def test_alpha_is_always_explicit(fake_weaviate, embedder):
    store = WeaviateStore(fake_weaviate.url, None, COLLECTION, embedder, alpha=0.3)
    await fill(store)
    await store.search("éclosion")
    assert fake_weaviate.calls("Search")[-1].request.hybrid_search.alpha == pytest.approx(0.3)
    await store.close()


async def test_alpha_param_for_newer_servers(embedder):
    # From 1.36.6 the client sends alpha in `alpha_param` with `use_alpha_param`.
    with FakeWeaviate(version="1.37.0") as fake:
        store = WeaviateStore(fake.url, None, COLLECTION, embedder, alpha=0.8)
        await fill(store)
        passages = await store.search("éclosion")
        hybrid = fake.calls("Search")[-1].request.hybrid_search
        assert hybrid.use_alpha_param and hybrid.alpha_param == pytest.approx(0.8)
        assert passages[0].id == f"{SOURCE}#1"
        await store.close()


async def test_scores_and_properties_are_parsed(fake_weaviate, store):
    await fill(store)
    passages = await store.search("température incubation éclosion", limit=3)
    reply = fake_weaviate.replies[-1]
    assert [p.score for p in passages] == pytest.approx([r.metadata.score for r in reply.results])
    first = passages[0]
    assert (first.id, first.source, first.title, first.position) == (f"{SOURCE}#0", SOURCE, "Incubation", 0)
    assert first.text == CHUNKS[0].text


async def test_embedder_down_means_keyword_only_hybrid(fake_weaviate):
    embedder = Embedder(no_cpu_support)
    store = WeaviateStore(fake_weaviate.url, None, COLLECTION, embedder, alpha=0.5)
    await fill(store)
    assert not stored_chunk(fake_weaviate, f"{SOURCE}#0")[1].vectors
    passages = await store.search("eclosion")
    hybrid = fake_weaviate.calls("Search")[-1].request.hybrid_search
    assert hybrid.alpha == 0.0
    assert not hybrid.vector_bytes and not hybrid.HasField("targets")
    assert [p.id for p in passages] == [f"{SOURCE}#1"]
    health = await store.health()
    assert health.ok and not health.vectors
    assert "avx2" in health.detail
    await store.close()
    embedder.close()


async def test_api_key_reaches_the_server(fake_weaviate, store):
    await fill(store)
    await store.search("éclosion")
    assert fake_weaviate.calls("Search")[-1].metadata["authorization"] == "Bearer secret-key"


async def test_stopword_only_query_sends_nothing(fake_weaviate, store):
    await fill(store)
    assert await store.search("euh bonjour alors voilà") == []
    assert fake_weaviate.calls("Search") == []


# -- errors and budgets ---------------------------------------------------------------


async def test_internal_error_fails_fast_without_retry(fake_weaviate, store):
    await fill(store)
    fake_weaviate.fail["Search"] = grpc.StatusCode.INTERNAL
    with pytest.raises(KnowledgeUnavailable) as caught:
        await store.search("éclosion")
    assert caught.value.reason == "error"
    assert len(fake_weaviate.calls("Search")) == 1


async def test_unavailable_retry_loop_is_cut_by_the_budget(fake_weaviate, store):
    await fill(store)
    fake_weaviate.fail["Search"] = grpc.StatusCode.UNAVAILABLE
    started = time.monotonic()
    with pytest.raises(KnowledgeUnavailable) as caught:
        await store.search("éclosion")
    assert time.monotonic() - started < GENEROUS_BOUND_S  # the client alone would retry ~60 s
    assert caught.value.reason == "timeout"
    assert len(fake_weaviate.calls("Search")) >= 1


async def test_permission_denied(fake_weaviate, store):
    await fill(store)
    fake_weaviate.fail["Search"] = grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(KnowledgeUnavailable) as caught:
        await store.search("éclosion")
    assert caught.value.reason == "permission"


async def test_slow_server_is_cut_by_the_budget(fake_weaviate, store):
    await fill(store)
    fake_weaviate.delay["Search"] = 30.0
    started = time.monotonic()
    with pytest.raises(KnowledgeUnavailable) as caught:
        await store.search("éclosion")
    assert time.monotonic() - started < GENEROUS_BOUND_S
    assert caught.value.reason == "timeout"
    fake_weaviate.delay.clear()
    fake_weaviate.wake.set()
    assert (await store.search("éclosion"))[0].id == f"{SOURCE}#1"  # the store recovers


async def test_server_down_at_connect(embedder):
    store = WeaviateStore(f"http://127.0.0.1:{free_loopback_port()}", None, COLLECTION, embedder)
    for _ in range(2):  # the second attempt fails fast from the remembered failure
        with pytest.raises(KnowledgeUnavailable) as caught:
            await store.search("éclosion")
        assert caught.value.reason == "unreachable"
    health = await store.health()
    assert not health.ok
    assert health.extra["reason"] == "unreachable"
    await store.close()


async def test_hanging_rest_is_cut_by_the_connect_budget(fake_weaviate, embedder):
    fake_weaviate.rest_delay = 30.0
    store = WeaviateStore(fake_weaviate.url, None, COLLECTION, embedder, connect_budget_s=0.3)
    started = time.monotonic()
    with pytest.raises(KnowledgeUnavailable) as caught:
        await store.count()
    assert time.monotonic() - started < GENEROUS_BOUND_S
    assert caught.value.reason == "timeout"
    fake_weaviate.wake.set()
    await store.close()


@contextlib.asynccontextmanager
async def silent_server(kind: str) -> AsyncIterator[int]:
    """A port where a server hangs: it listens but never accepts ("listening"), or accepts
    and never answers ("accepting")."""
    if kind == "accepting":
        async with hung_server() as port:
            yield port
        return
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listening:
        yield listening.getsockname()[1]


def unclosed_weaviate_clients(caught: list[warnings.WarningMessage]) -> list[str]:
    gc.collect()  # the client warns (Con004) when it is collected unclosed
    return [str(w.message) for w in caught if "Con004" in str(w.message)]


@pytest.mark.parametrize("kind", ["listening", "accepting"])
async def test_a_hung_server_costs_one_connect_budget_not_every_retrieval(kind, embedder):
    """A retrieval's budget (300 ms) is shorter than the connect budget: the connect goes on
    past the retrieval that started it, is recorded as failed at its own budget, and its client
    is closed; the next retrievals fail fast."""
    async with silent_server(kind) as port:
        store = WeaviateStore(f"http://127.0.0.1:{port}?grpc_port={free_loopback_port()}", None, COLLECTION,
                              embedder, connect_budget_s=0.6, reconnect_backoff_s=60)
        retriever = Retriever(store, budget_ms=300, limit=3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = await retriever.retrieve("température de la couveuse")
            assert first.outcome == "timeout"
            await asyncio.sleep(1.0)  # the connect budget (0.6 s) is spent meanwhile
            for _ in range(3):
                later = await retriever.retrieve("température de la couveuse")
                assert later.outcome == "error" and "connect" in later.error
                assert later.elapsed_ms < 100
            await store.close()
            assert unclosed_weaviate_clients(caught) == []


async def test_closing_while_connecting_ends_the_connect(embedder):
    async with silent_server("accepting") as port:
        store = WeaviateStore(f"http://127.0.0.1:{port}?grpc_port={free_loopback_port()}", None, COLLECTION,
                              embedder, query_budget_s=5, connect_budget_s=5)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            retrieving = asyncio.create_task(Retriever(store, budget_ms=10_000, limit=3).retrieve("couveuse"))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            await store.close()
            retrieved = await retrieving
            assert time.monotonic() - started < 1.0  # not the 5 s connect budget
            # The retrieval waiting on that connect is told the store is gone, not cancelled.
            assert retrieved.outcome == "error" and "closed" in retrieved.error
            assert unclosed_weaviate_clients(caught) == []


async def test_a_server_slower_to_connect_than_a_retrieval_serves_the_next_one(fake_weaviate, store, embedder):
    await fill(store)
    fake_weaviate.rest_delay = 0.3  # connect and the schema check: 0.6 s, twice a retrieval's budget
    slow = WeaviateStore(fake_weaviate.url, None, COLLECTION, embedder)
    retriever = Retriever(slow, budget_ms=300, limit=3)
    assert (await retriever.retrieve("éclosion")).outcome == "timeout"
    await asyncio.sleep(1.0)
    found = await retriever.retrieve("éclosion")
    assert found.outcome == "ok" and found.passages[0].id == f"{SOURCE}#1"
    await slow.close()


async def test_rest_refusal_is_a_permission_error(fake_weaviate, embedder):
    fake_weaviate.rest_status = 403
    store = WeaviateStore(fake_weaviate.url, "wrong-key", COLLECTION, embedder)
    with pytest.raises(KnowledgeUnavailable) as caught:
        await store.count()
    assert caught.value.reason == "permission"
    await store.close()


async def test_partial_insert_is_rolled_back(fake_weaviate, store):
    await fill(store)
    fake_weaviate.batch_error = lambda props: "disk full" if props["position"] == 1 else None
    new = [Chunk(c.id, c.source, c.title, c.text + " (v2)", c.position) for c in CHUNKS[:2]]
    with pytest.raises(KnowledgeUnavailable) as caught:
        await store.replace_document(SOURCE, "sha-v2", new)
    assert caught.value.reason == "partial_write"
    assert "disk full" in str(caught.value)
    # The half-written version is gone, so its checksum does not hide the failure.
    assert await store.document_checksum(SOURCE) != "sha-v2"
    fake_weaviate.batch_error = None
    await store.replace_document(SOURCE, "sha-v2", new)
    assert await store.document_checksum(SOURCE) == "sha-v2"
    assert await store.count() == 3


async def test_write_errors_are_mapped(fake_weaviate, store):
    await fill(store)
    fake_weaviate.fail["BatchDelete"] = grpc.StatusCode.INTERNAL
    with pytest.raises(KnowledgeUnavailable):
        await store.delete_document(SOURCE)
    fake_weaviate.fail.clear()
    fake_weaviate.fail["Aggregate"] = grpc.StatusCode.INTERNAL
    with pytest.raises(KnowledgeUnavailable):
        await store.count()


async def test_sources_page_with_the_cursor_past_the_offset_limit(fake_weaviate, store, monkeypatch):
    """Offsets stop at the server's QUERY_MAXIMUM_RESULTS (10,000 by default); the cursor does not."""
    await fill(store)
    monkeypatch.setattr(weaviate_store, "CHUNK_PAGE", 2)
    assert await store.sources() == ["guides/eau.md", SOURCE]
    pages = [r.request for r in fake_weaviate.calls("Search")]
    assert len(pages) == 2 and all(page.offset == 0 for page in pages)
    assert pages[0].after == "" and pages[1].after != ""


async def test_health_never_raises(fake_weaviate, store):
    await fill(store)
    health = await store.health()
    assert (health.backend, health.ok, health.vectors, health.chunks) == ("weaviate", True, True, 3)
    assert health.extra["server_version"] == "1.36.0"
    fake_weaviate.fail["Aggregate"] = grpc.StatusCode.UNAVAILABLE
    store.health_budget_s = 0.3
    health = await store.health()
    assert not health.ok and health.extra["reason"] == "timeout"


async def test_closed_store_refuses(store):
    await store.close()
    with pytest.raises(KnowledgeUnavailable):
        await store.search("éclosion")


async def test_concurrent_searches_share_one_connection(fake_weaviate, store):
    await fill(store)
    results = await asyncio.gather(*(store.search("éclosion") for _ in range(8)))
    assert all(r[0].id == f"{SOURCE}#1" for r in results)
    assert [r for r in fake_weaviate.rest_requests if r[1] == "/v1/meta"] == [("GET", "/v1/meta")]
