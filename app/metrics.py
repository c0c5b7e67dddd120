"""Process-wide counters and latency histograms, exposed in Prometheus text format."""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from time import perf_counter

# Bridge delays are microseconds to milliseconds; the upper buckets catch a stalled loop.
DELAY_BUCKETS_SECONDS = (
    0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005,
    0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
)

# How long an answer waited after the caller stopped: tens of ms, seconds when something stalls.
HOLD_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0)


@dataclass(slots=True)
class Histogram:
    buckets: tuple[float, ...] = DELAY_BUCKETS_SECONDS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (inf beyond the last bucket)."""
        if not self.count:
            return 0.0
        rank, seen = q * self.count, 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts):
            seen += n
            if seen >= rank:
                return bound
        return float("inf")


@dataclass(slots=True)
class Metrics:
    inbound_delay: Histogram = field(default_factory=Histogram)
    outbound_delay: Histogram = field(default_factory=Histogram)
    # How late the event loop runs a timer: time every message waits before the bridge sees it.
    loop_lag: Histogram = field(default_factory=Histogram)
    # From the caller's end of speech (the service's speech_stopped) to our response.create.
    turn_hold: Histogram = field(default_factory=lambda: Histogram(HOLD_BUCKETS_SECONDS))
    counters: Counter[str] = field(default_factory=Counter)
    active_calls: int = 0

    def render(self) -> str:
        lines = ["# TYPE octi_bridge_delay_seconds histogram"]
        for direction, hist in (("inbound", self.inbound_delay), ("outbound", self.outbound_delay)):
            lines += _histogram_lines("octi_bridge_delay_seconds", hist, f'direction="{direction}"')
        lines.append("# TYPE octi_event_loop_lag_seconds histogram")
        lines += _histogram_lines("octi_event_loop_lag_seconds", self.loop_lag)
        lines.append("# TYPE octi_turn_hold_seconds histogram")
        lines += _histogram_lines("octi_turn_hold_seconds", self.turn_hold)
        lines.append("# TYPE octi_active_calls gauge")
        lines.append(f"octi_active_calls {self.active_calls}")
        for name, value in sorted(self.counters.items()):
            lines.append(f"# TYPE octi_{name}_total counter")
            lines.append(f"octi_{name}_total {value}")
        return "\n".join(lines) + "\n"


def _histogram_lines(name: str, hist: Histogram, labels: str = "") -> list[str]:
    lines, cumulative = [], 0
    prefix = f"{labels}," if labels else ""
    for bound, n in zip((*hist.buckets, float("inf")), hist.counts):
        cumulative += n
        le = "+Inf" if bound == float("inf") else repr(bound)
        lines.append(f'{name}_bucket{{{prefix}le="{le}"}} {cumulative}')
    suffix = f"{{{labels}}}" if labels else ""
    lines.append(f"{name}_sum{suffix} {hist.total}")
    lines.append(f"{name}_count{suffix} {hist.count}")
    return lines


async def watch_loop_lag(metrics: Metrics, interval: float = 0.1) -> None:
    """Sample how late the loop wakes a timer, for as long as the service runs."""
    while True:
        expected = perf_counter() + interval
        await asyncio.sleep(interval)
        metrics.loop_lag.observe(max(perf_counter() - expected, 0.0))
