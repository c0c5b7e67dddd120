import asyncio

from app.audio.formats import TELEPHONE_ULAW
from app.config import Settings
from app.engines.openai_realtime.engine import RealtimeEngine
from app.engines.prewarm import PrewarmPool
from app.service import engine_options


def opener(url: str):
    settings = Settings(_env_file=None, openai_api_key="sk-test", openai_realtime_url=url,
                        realtime_connect_timeout_seconds=2)
    return lambda channel_format: RealtimeEngine.open(settings, engine_options(settings, channel_format=channel_format))


async def test_the_stream_claims_the_connection_opened_by_the_webhook(double):
    pool = PrewarmPool(opener(double.url), ttl_seconds=10)
    pool.start("CA1", TELEPHONE_ULAW)
    connection = await double.wait_for_connection()
    await connection.wait_for(lambda e: e["type"] == "session.update", timeout=5)  # configured before the claim
    claimed = await pool.claim("CA1")
    assert claimed is not None and claimed.is_open and len(pool) == 0
    assert await pool.claim("CA1") is None
    await claimed.close()


async def test_an_unclaimed_connection_is_closed_after_its_ttl(double):
    pool = PrewarmPool(opener(double.url), ttl_seconds=0.3)
    pool.start("CA1", TELEPHONE_ULAW)
    connection = await double.wait_for_connection()
    closed = await connection.wait_closed(timeout=5)
    assert closed.initiated_by == "client" and len(pool) == 0
    assert await pool.claim("CA1") is None


async def test_a_dead_or_failed_prewarm_yields_nothing_so_the_stream_opens_its_own(double):
    pool = PrewarmPool(opener(double.url), ttl_seconds=10)
    pool.start("CA1", TELEPHONE_ULAW)
    await double.wait_for_connection()
    await double.drop_all(code=1011)
    await asyncio.sleep(0.1)
    assert await pool.claim("CA1") is None

    unreachable = PrewarmPool(opener("ws://127.0.0.1:9/v1/realtime"), ttl_seconds=10)
    unreachable.start("CA2", TELEPHONE_ULAW)
    assert await unreachable.claim("CA2") is None
    assert await unreachable.claim("CA-unknown") is None


async def test_closing_the_pool_closes_pending_connections(double):
    pool = PrewarmPool(opener(double.url), ttl_seconds=10)
    pool.start("CA1", TELEPHONE_ULAW)
    connection = await double.wait_for_connection()
    await connection.wait_for(lambda e: e["type"] == "session.update", timeout=5)
    await asyncio.sleep(0.05)  # the opener has returned: the connection is established, not in flight
    await pool.close()
    assert (await connection.wait_closed(timeout=5)).initiated_by == "client"
