import asyncio
import re
import time
from pathlib import Path

import httpx
import pytest

from app.metrics import Metrics, watch_loop_lag
from tests.harness import running_line
from tests.test_barge_in_noise import stored
from tests.test_rag import ASKED, ask_once, call


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
        "m.call_started(); m.call_ended('agent_ended'); m.real_barge_ins.inc(3)\n"
    )
    # This checkout's `app`, not the one the virtualenv may have installed from elsewhere.
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for _ in range(2):  # two worker processes, one after the other
        subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=str(tmp_path.parent))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = Metrics().render().decode()
    assert 'octi_barge_ins_total{kind="real"} 6.0' in text
    assert 'octi_calls_ended_total{outcome="agent_ended"} 2.0' in text


# ------------------------------------------------------------------ fed by real calls, over sockets

async def metrics_page(line) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.get(line.url + "/metrics")
    assert response.status_code == 200
    return response.text


async def ended(line) -> None:
    async with asyncio.timeout(10):  # the session ends once the recap is written
        while line.metrics.active_calls:
            await asyncio.sleep(0.05)


async def test_a_call_moves_the_active_calls_turns_retrievals_hold_and_first_audio(double):
    double.script_next_connection([ASKED], answer_seconds=1.5)
    async with running_line(openai_realtime_url=double.url) as line:
        calling = asyncio.create_task(call(line, ask_once()))
        async with asyncio.timeout(10):
            while "octi_active_calls 1.0" not in await metrics_page(line):
                await asyncio.sleep(0.05)
        result = await calling
        await ended(line)
        page = await metrics_page(line)
        detail = await stored(line, result.call_sid)
        metrics = line.metrics
    assert result.status == "completed", result.summary()

    assert "octi_active_calls 0.0" in page
    assert metrics.value("octi_calls_total") == 1
    assert metrics.value("octi_calls_ended_total", outcome="caller_hung_up") == 1
    greeting, question, answer = detail.turns
    # The caller's question, and OCTI's greeting and answer, both heard.
    assert metrics.value("octi_turns_total", role="caller") == 1
    assert metrics.value("octi_turns_total", role="assistant") == 2
    # First audio: one observation, the answer's (nobody had spoken before the greeting), and
    # the very figure the call log keeps for that turn.
    assert metrics.value("octi_first_audio_seconds_count", channel="twilio") == 1
    logged = (answer.speech_end_to_model_audio_ms + answer.model_audio_to_caller_ms) / 1000
    assert metrics.value("octi_first_audio_seconds_sum", channel="twilio") == pytest.approx(logged, abs=1e-6)
    assert 'octi_first_audio_seconds_bucket{channel="twilio",le="+Inf"} 1.0' in page
    # Every search found passages and was timed; the question's is among them.
    searches = metrics.value("octi_retrievals_total", outcome="ok")
    assert searches >= 1 and metrics.value("octi_retrieval_seconds_count", outcome="ok") == searches
    assert question.retrieval_outcome == "ok"
    assert metrics.value("octi_retrieval_seconds_sum", outcome="ok") >= question.retrieval_ms / 1000
    assert metrics.value("octi_turn_hold_seconds_count") == 1
    assert metrics.total("octi_engine_errors_total") == 0
    assert metrics.total("octi_barge_ins_total") == 0


async def test_an_upstream_error_is_counted_by_its_code_and_the_call_goes_on(double):
    double.script_next_connection([ASKED], answer_seconds=1.5)
    async with running_line(openai_realtime_url=double.url) as line:
        calling = asyncio.create_task(call(line, ask_once()))
        connection = await double.wait_for_connection()
        await connection.wait_for_server(lambda e: e["type"] == "response.done", timeout=10)  # the greeting
        await connection.send_error("rate_limit_exceeded", "Too many requests.", error_type="rate_limit_error")
        result = await calling
        await ended(line)
        detail = await stored(line, result.call_sid)
        metrics = line.metrics
    assert result.status == "completed", result.summary()
    assert metrics.value("octi_engine_errors_total", code="rate_limit_exceeded") == 1
    assert metrics.total("octi_engine_errors_total") == 1
    assert [event.type for event in detail.events] == ["model_error"]
    assert [turn.role for turn in detail.turns] == ["assistant", "caller", "assistant"], "the question was answered"


def test_every_metric_is_documented_in_the_readme():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    documented = set(re.findall(r"^\| `(octi_[a-z_]+)", readme, flags=re.MULTILINE))
    names = {metric.name + ("_total" if metric.type == "counter" else "") for metric in Metrics().registry.collect()}
    assert documented == names
