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
    assert metrics.value("octi_event_loop_lag_seconds_count") >= 3
    # At least one sample landed above 0.1 s: fewer in the <= 0.1 bucket than in all.
    assert metrics.value("octi_event_loop_lag_seconds_bucket", le="0.1") < metrics.value(
        "octi_event_loop_lag_seconds_count")
    text = metrics.render().decode()
    assert "# HELP octi_event_loop_lag_seconds" in text
    assert 'octi_event_loop_lag_seconds_bucket{le="+Inf"}' in text
    assert 'octi_bridge_delay_seconds_count{direction="inbound"} 0.0' in text


def test_outcomes_and_reasons_are_labels():
    metrics = Metrics()
    metrics.call_started()
    metrics.call_started()
    metrics.call_ended("caller_hung_up")
    metrics.refusals.labels("signature").inc()
    assert metrics.active_calls == 1 and metrics.value("octi_active_calls") == 1
    assert metrics.value("octi_calls_total") == 2
    assert metrics.value("octi_calls_ended_total", outcome="caller_hung_up") == 1
    text = metrics.render().decode()
    assert 'octi_refusals_total{reason="signature"} 1.0' in text
    assert "octi_calls_ended_caller_hung_up" not in text  # no outcome baked into a name


def test_several_workers_report_one_sum(tmp_path, monkeypatch):
    """prometheus-client's multiprocess mode: each worker writes its values to the shared
    directory, and any worker's /metrics reports them summed."""
    import subprocess
    import sys

    script = (
        "from app.metrics import Metrics\n"
        "m = Metrics()\n"
        "m.call_started(); m.call_ended('agent_ended'); m.barge_ins.inc(3)\n"
    )
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": ""}
    for _ in range(2):  # two worker processes, one after the other
        subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=str(tmp_path.parent))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = Metrics().render().decode()
    assert "octi_barge_ins_total 6.0" in text
    assert 'octi_calls_ended_total{outcome="agent_ended"} 2.0' in text
