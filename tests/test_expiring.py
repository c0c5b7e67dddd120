"""Values one request leaves for the next, shared through Redis by every instance."""

from __future__ import annotations

import secrets

from app.expiring import ExpiringValues
from tests.harness import free_loopback_port


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
    for redis_url in (None, f"redis://127.0.0.1:{free_loopback_port()}/0"):
        values = ExpiringValues(redis_url, prefix="octi-test", ttl_seconds=60)
        await values.put("CA1", "agent_ended")
        assert await values.pop("CA1") == "agent_ended"
        assert await values.pop("CA1") is None
        values.close()


async def test_values_expire():
    values = ExpiringValues(None, prefix="octi-test", ttl_seconds=0)
    await values.put("CA1", "error")
    assert await values.pop("CA1") is None


async def test_only_the_first_of_two_instances_stores_a_new_value_and_both_read_it(redis_url):
    prefix = f"octi-test-{secrets.token_hex(4)}"
    first, second = (ExpiringValues(redis_url, prefix=prefix, ttl_seconds=60) for _ in range(2))
    try:
        assert await first.put_new("CA1", "instance-1")
        assert not await second.put_new("CA1", "instance-2")
        assert await second.get_many(["CA1", "CA2"]) == {"CA1": "instance-1"}
        assert await first.get_many(["CA1"]) == {"CA1": "instance-1"}  # reading leaves it
        assert await first.redis_problem() is None
    finally:
        first.close()
        second.close()


async def test_with_redis_down_new_values_are_kept_per_instance_and_health_hears_of_it():
    redis_url = f"redis://127.0.0.1:{free_loopback_port()}/0"
    values = ExpiringValues(redis_url, prefix="octi-test", ttl_seconds=60)
    assert await values.put_new("CA1", "instance-1")
    assert not await values.put_new("CA1", "instance-2")
    assert await values.get_many(["CA1", "CA2"]) == {"CA1": "instance-1"}
    problem = await values.redis_problem()
    assert problem is not None and "127.0.0.1" in problem and "per instance" in problem
    assert await ExpiringValues(None, prefix="octi-test", ttl_seconds=60).redis_problem() is None
    values.close()
