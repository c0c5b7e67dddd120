from collections.abc import AsyncIterator

import pytest

from app.simulators.realtime_double import RealtimeDouble


@pytest.fixture
async def double() -> AsyncIterator[RealtimeDouble]:
    async with RealtimeDouble(api_key="sk-test", speed=4.0, answer_seconds=4.0, greeting_seconds=1.5) as running:
        yield running
