"""Values one request leaves for the next, shared through Redis by every instance."""

from __future__ import annotations

import secrets

from app.expiring import ExpiringValues
from tests.test_doctor import closed_port


async def test_a_value_put_by_one_instance_is_popped_once_by_another_through_redis(redis_url):
    prefix = f"octi-test-{secrets.token_hex(4)}"
    writer, reader = (ExpiringValues(redis_url, prefix=prefix, ttl_seconds=60) for _ in range(2))
    try:
        await writer.put("CA1", "error")
        assert await reader.pop("CA1") == "error"
        assert await reader.pop("CA1") is None and await writer.pop("CA1") is None
    finally:
        writer.close()
        reader.close()


async def test_without_redis_or_with_redis_down_values_are_kept_in_memory():
    for redis_url in (None, f"redis://127.0.0.1:{closed_port()}/0"):
        values = ExpiringValues(redis_url, prefix="octi-test", ttl_seconds=60)
        await values.put("CA1", "agent_ended")
        assert await values.pop("CA1") == "agent_ended"
        assert await values.pop("CA1") is None
        values.close()


async def test_values_expire():
    values = ExpiringValues(None, prefix="octi-test", ttl_seconds=0)
    await values.put("CA1", "error")
    assert await values.pop("CA1") is None
