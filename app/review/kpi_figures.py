"""The dashboard's figures: the call log's counts per period and channel group turned into the
KPIs of the seed plan, for each channel and for all of them, and their JSON.

* latency: per answer, the caller's end of speech to the first model audio plus, when known,
  from there to the first frame sent; P95 and P50 by nearest rank (a latency that occurred);
* interruption rate: the share of calls with at least one barge-in;
* turns per call: the caller's turns over the calls (calls.turns counts OCTI's turns too);
* error rate: the share of calls that ended on an error;
* cost: the sum of the known costs, with the number of calls whose cost is unknown (never $0);
* active users: distinct phone numbers (by salted hash) and browser users (by name).

A period without calls has no rate, mean or percentile (None): charts leave a gap there. Its
cost and user count are 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.calllog.kpis import ALL, CHANNEL_GROUPS, NO_ANSWERS, PHONE, WEB, KpiRows, LatencyFigures
from app.calllog.store import CallLogStore
from app.review.kpi_periods import Period, Window, boundaries, spanning

CHANNELS = (*CHANNEL_GROUPS, ALL)
CHANNEL_LABELS = {PHONE: "téléphone", WEB: "navigateur", ALL: "ensemble"}
VIEWS = ("days", "weeks", "months")

TARGET_LATENCY_P95_MS = 500.0
TARGET_ERROR_RATE = 0.01
TARGET_TURNS_PER_CALL = (2.0, 3.0)


def nearest_rank(values: Sequence[float], percent: float) -> float | None:
    """The `percent`th percentile by nearest rank: the smallest value with at least `percent` %
    of the values at or below it. None without values. (The dashboard's come from the
    database, kpis.answer_latencies, by the same rule.)"""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * percent / 100)) - 1]


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True, slots=True)
class ChannelFigures:
    calls: int = 0
    interrupted_calls: int = 0
    error_calls: int = 0
    caller_turns: int = 0
    priced_calls: int = 0
    known_cost_usd: float = 0.0
    users: int = 0
    latency: LatencyFigures = NO_ANSWERS

    @property
    def interruption_rate(self) -> float | None:
        return _share(self.interrupted_calls, self.calls)

    @property
    def error_rate(self) -> float | None:
        return _share(self.error_calls, self.calls)

    @property
    def turns_per_call(self) -> float | None:
        return _share(self.caller_turns, self.calls)

    @property
    def unknown_cost_calls(self) -> int:
        return self.calls - self.priced_calls

    @property
    def cost_usd(self) -> float | None:
        """The known costs' sum: $0 without calls, None when no call's cost is known."""
        return None if self.calls and not self.priced_calls else self.known_cost_usd

    @property
    def answers(self) -> int:
        return self.latency.answers

    @property
    def latency_p50_ms(self) -> float | None:
        return self.latency.p50_ms

    @property
    def latency_p95_ms(self) -> float | None:
        return self.latency.p95_ms

    def plus(self, other: ChannelFigures, latency: LatencyFigures) -> ChannelFigures:
        """Both channels together; their callers are never the same (a number is not a name).
        Percentiles do not add up: `latency` is both channels' own, from the database."""
        return ChannelFigures(
            calls=self.calls + other.calls, interrupted_calls=self.interrupted_calls + other.interrupted_calls,
            error_calls=self.error_calls + other.error_calls, caller_turns=self.caller_turns + other.caller_turns,
            priced_calls=self.priced_calls + other.priced_calls,
            known_cost_usd=self.known_cost_usd + other.known_cost_usd, users=self.users + other.users,
            latency=latency)

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls, "answers": self.answers,
            "latency_p50_ms": self.latency_p50_ms, "latency_p95_ms": self.latency_p95_ms,
            "interrupted_calls": self.interrupted_calls, "interruption_rate": self.interruption_rate,
            "caller_turns": self.caller_turns, "turns_per_call": self.turns_per_call,
            "error_calls": self.error_calls, "error_rate": self.error_rate,
            "cost_usd": self.cost_usd, "unknown_cost_calls": self.unknown_cost_calls,
            "users": self.users,
        }


@dataclass(frozen=True, slots=True)
class PeriodFigures:
    period: Period
    channels: dict[str, ChannelFigures]      # PHONE, WEB and ALL

    def to_json(self) -> dict[str, Any]:
        return {"period": self.period.key, "label": self.period.title, "first_day": self.period.first_day.isoformat(),
                "last_day": self.period.last_day.isoformat(),
                "channels": {name: self.channels[name].to_json() for name in CHANNELS}}


@dataclass(frozen=True, slots=True)
class ViewFigures:
    """One way of cutting the window (days, weeks or months): each period, and all of them as one."""

    periods: list[PeriodFigures]
    whole: PeriodFigures

    def to_json(self) -> dict[str, Any]:
        return {"whole": self.whole.to_json(), "periods": [period.to_json() for period in self.periods]}


@dataclass(frozen=True, slots=True)
class Dashboard:
    window: Window
    views: dict[str, ViewFigures] = field(default_factory=dict)     # "days", "weeks", "months"

    def to_json(self) -> dict[str, Any]:
        window = self.window
        return {
            "time_zone": "Europe/Paris",
            "window": {"end": window.end.isoformat(), "days": window.days, "weeks": window.weeks,
                       "months": window.months},
            "targets": {"latency_p95_ms": TARGET_LATENCY_P95_MS, "error_rate": TARGET_ERROR_RATE,
                        "turns_per_call": list(TARGET_TURNS_PER_CALL)},
            **{name: self.views[name].to_json() for name in VIEWS},
        }


def _period_figures(periods: list[Period], rows: KpiRows) -> list[PeriodFigures]:
    by_key = {(count.period, count.channel): count for count in rows.counts}
    figures = []
    for index, period in enumerate(periods):
        channels: dict[str, ChannelFigures] = {}
        for channel in CHANNEL_GROUPS:
            count = by_key.get((index, channel))
            latency = rows.latencies.get((index, channel), NO_ANSWERS)
            channels[channel] = ChannelFigures(latency=latency) if count is None else ChannelFigures(
                calls=count.calls, interrupted_calls=count.interrupted_calls, error_calls=count.error_calls,
                caller_turns=count.caller_turns, priced_calls=count.priced_calls, known_cost_usd=count.cost_usd,
                users=count.users, latency=latency)
        channels[ALL] = channels[PHONE].plus(channels[WEB], rows.latencies.get((index, ALL), NO_ANSWERS))
        figures.append(PeriodFigures(period, channels))
    return figures


async def read_dashboard(store: CallLogStore, window: Window) -> Dashboard:
    """Every view's figures, per period and over the whole view (distinct users and percentiles
    over a view are not sums of its periods', so the database counts the whole as well)."""
    cuts = {"days": window.day_periods(), "weeks": window.week_periods(), "months": window.month_periods()}
    asked: list[list[Period]] = []
    for periods in cuts.values():
        asked += [periods, [spanning(periods)]]
    rows = await store.kpi_rows([boundaries(periods) for periods in asked])
    views = {}
    for name, periods, whole, period_rows, whole_rows in zip(cuts, asked[0::2], asked[1::2], rows[0::2], rows[1::2]):
        views[name] = ViewFigures(_period_figures(periods, period_rows), _period_figures(whole, whole_rows)[0])
    return Dashboard(window, views)
