"""WeaviateStore's document versions against the fake: replaces that fail midway or run at the
same time, stores written before versions, searches while a replace swaps versions."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import grpc
import pytest
from weaviate.classes.data import DataObject

from app.knowledge import weaviate_store
from app.knowledge.embedding import passage_input
from app.knowledge.errors import KnowledgeUnavailable
from app.knowledge.french import fold
from app.knowledge.ingest.chunking import chunk_id
from app.knowledge.store import Chunk
from app.knowledge.weaviate_store import VECTOR_NAME, WeaviateStore
from tests.weaviate_fake import FakeWeaviate, StoredObject, fake_weaviate, fake_weaviate_server  # noqa: F401

COLLECTION = "OctiVersions"
GUIDE = "guides/elevage.md"
TOPICS = ["incubation", "ventilation", "abreuvement", "vaccination", "litiere", "eclairage"]
OTHER = Chunk("guides/eau.md#0", "guides/eau.md", "Eau", "Vérifiez les pipettes chaque matin.", 0)


def guide(edits: dict[int, str] | None = None) -> list[Chunk]:
    """The guide, one topic a chunk, with ids as ingestion makes them (an unchanged chunk keeps
    its id from one version to the next); `edits` rewrite some chunks (keeping their topic)."""
    texts = [f"Fiche {topic} : conseils pour {topic}." for topic in TOPICS]
    for position, text in (edits or {}).items():
        texts[position] = text
    return [Chunk(chunk_id(GUIDE, i, text), GUIDE, "Guide", text, i) for i, text in enumerate(texts)]


EDITED = guide({4: "Fiche litiere, nouvelle version : changez la litiere chaque semaine."})


@pytest.fixture
async def store(fake_weaviate, embedder, monkeypatch):
    monkeypatch.setattr(weaviate_store, "INSERT_BATCH", 2)  # the guide goes in three batches
    store = WeaviateStore(fake_weaviate.url, None, COLLECTION, embedder, alpha=0.5)
    yield store
    await store.close()


def stored(fake: FakeWeaviate, **where: object) -> list[StoredObject]:
    with fake.lock:
        return [o for o in fake.objects.get(COLLECTION, {}).values()
                if all(o.properties.get(k) == v for k, v in where.items())]


def fails(checksum: str, position: int) -> Callable[[dict], str | None]:
    """A `batch_error` switch: that version's object at that position is refused."""
    return lambda props: "disk full" if (props["checksum"], props["position"]) == (checksum, position) else None


def batch_holds(request, checksum: str, position: int | None = None) -> bool:
    """Whether a BatchObjects request holds an object of that version (at that position)."""
    for obj in request.objects:
        fields = obj.properties.non_ref_properties.fields
        if fields["checksum"].string_value == checksum and (
                position is None or fields["position"].number_value == position):
            return True
    return False


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def assert_only_version(fake: FakeWeaviate, store: WeaviateStore, chunks: list[Chunk], checksum: str) -> None:
    """The store holds exactly this version of the guide, and finds each of its chunks."""
    objects = stored(fake, source=GUIDE)
    assert sorted(o.properties["text"] for o in objects) == sorted(c.text for c in chunks)
    assert {o.properties["checksum"] for o in objects} == {checksum}
    assert await store.document_checksum(GUIDE) == checksum
    await assert_searchable(store, chunks)


async def assert_searchable(store: WeaviateStore, chunks: list[Chunk]) -> None:
    for chunk, topic in zip(chunks, TOPICS):
        found = await store.search(topic, limit=1)
        assert [(p.id, p.text) for p in found] == [(chunk.id, chunk.text)], topic


# -- a replace that fails midway ---------------------------------------------------------


async def test_a_replace_failing_midway_keeps_the_previous_version_whole(fake_weaviate, store):
    """The third batch fails once the first two, unchanged chunks, are written: they must not
    have overwritten the live ones, or rolling them back takes them from the document."""
    await store.replace_document(GUIDE, "sha-1", guide())
    await store.replace_document(OTHER.source, "sha-eau", [OTHER])
    fake_weaviate.batch_error = fails("sha-2", 4)
    with pytest.raises(KnowledgeUnavailable) as caught:
        await store.replace_document(GUIDE, "sha-2", EDITED)
    assert caught.value.reason == "partial_write"
    assert await store.count() == len(TOPICS) + 1
    await assert_only_version(fake_weaviate, store, guide(), "sha-1")  # the old checksum: the next ingestion retries
    fake_weaviate.batch_error = None
    await store.replace_document(GUIDE, "sha-2", EDITED)
    await assert_only_version(fake_weaviate, store, EDITED, "sha-2")
    assert await store.count() == len(TOPICS) + 1


async def test_a_replace_timing_out_midway_keeps_the_previous_version_whole(fake_weaviate, store):
    """The third batch outlasts the write budget and lands after the roll-back, as it may on a
    server that goes on with a request its client gave up."""
    await store.replace_document(GUIDE, "sha-1", guide())
    store.write_budget_s = 0.5
    fake_weaviate.delay["BatchObjects"] = lambda request: 1.5 if batch_holds(request, "sha-2", 4) else 0.0
    with pytest.raises(KnowledgeUnavailable) as caught:
        await store.replace_document(GUIDE, "sha-2", EDITED)
    assert caught.value.reason == "timeout"
    await until(lambda: len(stored(fake_weaviate, checksum="sha-2")) == 2)  # the late batch
    await assert_searchable(store, guide())
    # The old version and a part of the new one: not the new checksum, so the next ingestion
    # replaces the document rather than skip its file.
    assert await store.document_checksum(GUIDE) not in {None, "sha-2"}
    fake_weaviate.delay.clear()
    store.write_budget_s = 60.0
    await store.replace_document(GUIDE, "sha-2", EDITED)
    await assert_only_version(fake_weaviate, store, EDITED, "sha-2")


async def test_a_replace_whose_roll_back_fails_does_not_pass_for_done(fake_weaviate, store):
    """The insert fails, then its roll-back (the server went away): what was written of the new
    version stays, and must not hide the failure from the next ingestion."""
    await store.replace_document(GUIDE, "sha-1", guide())
    fake_weaviate.batch_error = fails("sha-2", 4)
    fake_weaviate.fail["BatchDelete"] = grpc.StatusCode.INTERNAL
    with pytest.raises(KnowledgeUnavailable):
        await store.replace_document(GUIDE, "sha-2", EDITED)
    await assert_searchable(store, guide())
    assert await store.document_checksum(GUIDE) not in {None, "sha-1", "sha-2"}  # UNSETTLED: it is retried
    fake_weaviate.fail.clear()
    fake_weaviate.batch_error = None
    await store.replace_document(GUIDE, "sha-2", EDITED)
    await assert_only_version(fake_weaviate, store, EDITED, "sha-2")


# -- replaces of one document at once ----------------------------------------------------


@pytest.mark.parametrize("race", ["both-written-then-both-delete", "the-older-lands-after-the-newer-is-done",
                                  "the-newer-fails", "the-newer-is-slow"])
async def test_concurrent_replaces_of_one_document_leave_one_whole_version(race, fake_weaviate, store, embedder):
    """Two processes replace the guide at once (both seeding, say), A having started first: the
    guide ends as one whole version, B's unless B failed, never missing or a mix of both."""
    await store.replace_document(GUIDE, "sha-0", guide())
    a = guide({1: "Fiche ventilation, version A : ouvrez les trappes le matin."})
    b = guide({4: "Fiche litiere, version B : ajoutez de la paille."})
    other = WeaviateStore(fake_weaviate.url, None, COLLECTION, embedder, alpha=0.5)
    winner, checksum = b, "sha-B"
    if race == "both-written-then-both-delete":
        fake_weaviate.delay["BatchDelete"] = 0.5
    elif race == "the-older-lands-after-the-newer-is-done":
        fake_weaviate.delay["BatchObjects"] = lambda request: 0.4 if batch_holds(request, "sha-A") else 0.0
    elif race == "the-newer-fails":
        fake_weaviate.batch_error = fails("sha-B", 4)
        winner, checksum = a, "sha-A"
    else:
        fake_weaviate.delay["BatchObjects"] = lambda request: 0.4 if batch_holds(request, "sha-B") else 0.0
    replacing_a = asyncio.create_task(store.replace_document(GUIDE, "sha-A", a))
    await asyncio.sleep(0)  # A takes its ingest id before B
    outcomes = await asyncio.gather(replacing_a, other.replace_document(GUIDE, "sha-B", b), return_exceptions=True)
    await other.close()
    if race == "the-newer-fails":
        assert outcomes[0] is None and isinstance(outcomes[1], KnowledgeUnavailable)
    else:
        assert outcomes == [None, None]
    await assert_only_version(fake_weaviate, store, winner, checksum)


# -- a store written before versions -----------------------------------------------------


async def write_as_before(store: WeaviateStore, source: str, checksum: str, chunks: list[Chunk]) -> list[str]:
    """Store a document as versions before ingest versions did: UUIDs from the chunk ids alone
    (so a replace overwrote unchanged chunks in place), a bare random ingest id. Its UUIDs."""
    namespace = uuid.UUID("6f1b0c1e-2a57-4c39-9d1e-0c7a1d0b5e42")
    ingest_id = uuid.uuid4().hex
    vectors = await store._embedder.embed_passages([passage_input(c.title, c.text) for c in chunks])
    objects = [
        DataObject(
            properties={"chunk_id": c.id, "source": source, "checksum": checksum, "ingest_id": ingest_id,
                        "title": c.title, "text": c.text, "title_folded": fold(c.title),
                        "text_folded": fold(c.text), "position": c.position},
            uuid=uuid.uuid5(namespace, c.id),
            vector={VECTOR_NAME: [float(x) for x in vector]},
        )
        for c, vector in zip(chunks, vectors)
    ]
    collection = await store._connection.collection()
    assert not (await collection.data.insert_many(objects)).has_errors
    return [str(o.uuid) for o in objects]


async def test_a_store_written_before_versions_is_read_replaced_and_deleted(fake_weaviate, store):
    old = await write_as_before(store, GUIDE, "sha-1", guide())
    await write_as_before(store, OTHER.source, "sha-eau", [OTHER])
    assert await store.document_checksum(GUIDE) == "sha-1"  # an unchanged file is skipped
    assert await store.sources() == [OTHER.source, GUIDE]
    await assert_searchable(store, guide())

    await store.replace_document(GUIDE, "sha-2", EDITED)
    await assert_only_version(fake_weaviate, store, EDITED, "sha-2")
    assert not set(old) & set(fake_weaviate.objects[COLLECTION])
    await store.delete_document(OTHER.source)
    assert await store.count() == len(TOPICS)
    assert await store.sources() == [GUIDE]


# -- searches during a swap ---------------------------------------------------------------


async def test_a_passage_is_found_once_while_a_replace_swaps_versions(fake_weaviate, store):
    await store.replace_document(GUIDE, "sha-1", guide())
    fake_weaviate.delay["BatchDelete"] = 30.0  # the old version stays until woken
    replacing = asyncio.create_task(store.replace_document(GUIDE, "sha-2", EDITED))
    await until(lambda: len(stored(fake_weaviate, checksum="sha-2")) == len(TOPICS))
    passages = await store.search("incubation", limit=2)  # the incubation chunk, twice stored
    assert len(passages) == 2 and len({p.id for p in passages}) == 2
    assert passages[0].text == guide()[0].text
    fake_weaviate.wake.set()
    await replacing
    await assert_only_version(fake_weaviate, store, EDITED, "sha-2")
