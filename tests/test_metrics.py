import asyncio
import time

from app.metrics import Metrics, watch_loop_lag


async def test_loop_lag_sees_a_blocked_event_loop():
    metrics = Metrics()
    watcher = asyncio.create_task(watch_loop_lag(metrics, interval=0.01))
    await asyncio.sleep(0.05)
    time.sleep(0.12)  # something blocks the loop: every message would wait this long
    await asyncio.sleep(0.03)
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    assert metrics.loop_lag.count >= 3
    assert metrics.loop_lag.quantile(1.0) >= 0.1
    text = metrics.render()
    assert 'octi_event_loop_lag_seconds_bucket{le="+Inf"}' in text
    assert 'octi_bridge_delay_seconds_count{direction="inbound"} 0' in text
