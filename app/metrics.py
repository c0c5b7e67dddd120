"""The service's metrics, on prometheus-client, with labels rather than names per outcome.

Each `Metrics` has its own registry (a process may hold several services, the tests do). With
PROMETHEUS_MULTIPROC_DIR set (several worker processes, prometheus-client's multiprocess
mode), `/metrics` reports the sum over the workers from the files they all write there.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from time import perf_counter

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

# Bridge delays are microseconds to milliseconds; the upper buckets catch a stalled loop.
DELAY_BUCKETS_SECONDS = (
    0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005,
    0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
)
# How long an answer waited after the caller stopped: tens of ms, seconds when something stalls.
HOLD_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0)
# A knowledge search: tens of ms embedded, more over the network; RAG_TIMEOUT_MS (300) cuts it.
RETRIEVAL_BUCKETS_SECONDS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
# The caller's wait for OCTI's voice: the seed plan's target is 500 ms; reasoning models take seconds.
FIRST_AUDIO_BUCKETS_SECONDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry()
        self.calls = Counter("octi_calls", "Calls that reached a conversation.", registry=registry)
        self.calls_ended = Counter("octi_calls_ended", "Calls ended, by outcome.", ["outcome"], registry=registry)
        self._active = Gauge("octi_active_calls", "Conversations under way.", registry=registry,
                             multiprocess_mode="livesum")
        self.active_calls = 0  # the same, readable here: shutdown and tests wait for 0
        delay = Histogram("octi_bridge_delay_seconds", "From a message's arrival to its relay, by direction.",
                          ["direction"], buckets=DELAY_BUCKETS_SECONDS, registry=registry)
        self.inbound_delay = delay.labels("inbound")
        self.outbound_delay = delay.labels("outbound")
        # How late the event loop runs a timer: time every message waits before the bridge sees it.
        self.loop_lag = Histogram("octi_event_loop_lag_seconds", "How late the event loop runs a timer.",
                                  buckets=DELAY_BUCKETS_SECONDS, registry=registry)
        self.turn_hold = Histogram("octi_turn_hold_seconds",
                                   "From the caller's end of speech to the answer being asked for.",
                                   buckets=HOLD_BUCKETS_SECONDS, registry=registry)
        self.first_audio = Histogram("octi_first_audio_seconds", "From the caller's end of speech to the first "
                                     "answer audio sent to them, by channel.", ["channel"],
                                     buckets=FIRST_AUDIO_BUCKETS_SECONDS, registry=registry)
        self.turns = Counter("octi_turns", "Turns of the conversations, by role: the caller's that ended, "
                             "OCTI's whose audio reached the caller.", ["role"], registry=registry)
        barge_ins = Counter("octi_barge_ins", "Sounds over OCTI, by kind: the caller taking the floor (real), "
                            "or a noise OCTI resumed after (false).", ["kind"], registry=registry)
        self.real_barge_ins = barge_ins.labels("real")
        self.false_barge_ins = barge_ins.labels("false")
        self.retrievals = Counter("octi_retrievals", "Knowledge searches, by outcome.", ["outcome"], registry=registry)
        self.retrieval_time = Histogram("octi_retrieval_seconds", "How long a knowledge search took, by outcome.",
                                        ["outcome"], buckets=RETRIEVAL_BUCKETS_SECONDS, registry=registry)
        self.turns_searched_by_the_model = Counter(
            "octi_turns_searched_by_the_model", "Answers released with the search tool (no words yet).",
            registry=registry)
        self.engine_errors = Counter("octi_engine_errors", "Errors the engine reported, by code.", ["code"],
                                     registry=registry)
        self.engine_reconnects = Counter("octi_engine_reconnects",
                                         "Reconnections after the engine's connection dropped mid-call, by outcome.",
                                         ["outcome"], registry=registry)
        self.engine_recycles = Counter("octi_engine_recycles", "Engine sessions renewed before the service's cap.",
                                       registry=registry)
        self.engine_unavailable = Counter("octi_engine_unavailable", "Calls whose engine could not be reached.",
                                          registry=registry)
        self.refusals = Counter("octi_refusals", "Requests refused, by reason.", ["reason"], registry=registry)
        self.stream_messages_dropped = Counter("octi_stream_messages_dropped",
                                               "Malformed or oversized channel messages dropped, by reason.",
                                               ["reason"], registry=registry)
        self.stream_errors = Counter("octi_stream_errors", "Stream errors Twilio reported.", registry=registry)

    def call_started(self) -> None:
        self.calls.inc()
        self.active_calls += 1
        self._active.inc()

    def call_ended(self, outcome: str) -> None:
        self.calls_ended.labels(outcome).inc()
        self.active_calls -= 1
        self._active.dec()

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when never touched), e.g. value("octi_retrievals_total", outcome="ok")."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def total(self, name: str) -> float:
        """A sample's sum over all its labels, e.g. total("octi_engine_errors_total")."""
        return sum(sample.value for metric in self.registry.collect() for sample in metric.samples
                   if sample.name == name)

    def render(self) -> bytes:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        MultiProcessCollector(combined, path=directory)
        return generate_latest(combined)


def forget_dead_processes(directory: str | os.PathLike[str]) -> None:
    """prometheus-client's bookkeeping for the processes that are gone (it names their files by
    pid): their live gauges go, or a killed process's calls would be counted as under way
    forever; their counters stay, so that totals never drop (a drop would read as a reset).
    Live processes sharing the directory (other instances a supervisor runs) keep theirs."""
    for pid in {path.stem.rpartition("_")[2] for path in Path(directory).glob("*.db")}:
        if pid.isdigit() and not _running(int(pid)):
            mark_process_dead(int(pid), str(directory))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


async def watch_loop_lag(metrics: Metrics, interval: float = 0.1) -> None:
    """Sample how late the loop wakes a timer, for as long as the service runs."""
    while True:
        expected = perf_counter() + interval
        await asyncio.sleep(interval)
        metrics.loop_lag.observe(max(perf_counter() - expected, 0.0))
