"""The dashboard's line charts, laid out here and drawn as SVG by the page's template (no
script): one line per channel and one for all of them, a point per period, the targets as
dashed rules. A period whose figure is None (a rate without calls) breaks its line."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from app.review.kpi_figures import ALL, CHANNEL_LABELS, CHANNELS, PeriodFigures
from app.review.kpi_metrics import Metric

# In SVG units, which the page scales to its width: the text stays legible on a phone.
WIDTH, HEIGHT = 400, 240
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 14, 50      # room for the ticks and the axis titles
MAX_X_LABELS = 6
Y_STEPS = 4

X_AXES = {"days": "Jour (heure de Paris)", "weeks": "Semaine ISO", "months": "Mois"}
PERIOD_WORDS = {"days": "jour", "weeks": "semaine", "months": "mois"}
ONE_PERIOD = {"days": "Un jour", "weeks": "Une semaine", "months": "Un mois"}
# Drawn first, so that the channels' lines lie over the sum's.
DRAWING_ORDER = (ALL, *(channel for channel in CHANNELS if channel != ALL))


@dataclass(frozen=True, slots=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True, slots=True)
class Point:
    x: float
    y: float
    text: str               # the point's tooltip: "téléphone, 24/11 : 500 ms"
    incomplete: bool


@dataclass(frozen=True, slots=True)
class Mark:
    """A "?" where a figure is incomplete (costs unknown)."""

    x: float
    y: float
    text: str


@dataclass(frozen=True, slots=True)
class Series:
    channel: str
    label: str
    path: str               # SVG path data; a gap starts a new sub-path
    points: tuple[Point, ...]
    marks: tuple[Mark, ...]


@dataclass(frozen=True, slots=True)
class Chart:
    id: str
    title: str
    desc: str
    x_axis: str
    y_axis: str
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    targets: tuple[Tick, ...]
    series: tuple[Series, ...]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM

    @property
    def legend(self) -> list[Series]:
        """The series in the channels' order (they are drawn in another)."""
        return sorted(self.series, key=lambda series: CHANNELS.index(series.channel))


def nice_scale(highest: float, whole_numbers: bool = False) -> tuple[float, float]:
    """A step of 1, 2, 2.5 or 5 × 10ⁿ giving about Y_STEPS ticks from 0, and the top it reaches."""
    highest = highest if highest > 0 else 1.0
    raw = highest / Y_STEPS
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(factor * magnitude for factor in (1, 2, 2.5, 5, 10) if factor * magnitude >= raw * (1 - 1e-9))
    if whole_numbers:
        step = float(max(1, math.ceil(step)))
    return step, round(step * math.ceil(highest / step - 1e-9), 12)   # 3 × 0.2 is 0.6, not 0.6000000000000001


def _round(value: float) -> float:
    return round(value, 1)


def line_chart(chart_id: str, metric: Metric, periods: list[PeriodFigures], view: str) -> Chart:
    count = len(periods)
    band = (WIDTH - RIGHT - LEFT) / count
    xs = [_round(LEFT + band * (index + 0.5)) for index in range(count)]
    known = [value for period in periods for channel in CHANNELS
             if (value := metric.value(period.channels[channel])) is not None]
    step, scale_top = nice_scale(max(known + [target.value for target in metric.targets], default=0.0),
                                 metric.whole_numbers)

    def y_of(value: float) -> float:
        return _round(HEIGHT - BOTTOM - (HEIGHT - BOTTOM - TOP) * value / scale_top)

    y_ticks = tuple(Tick(y_of(step * index), metric.tick(round(step * index, 12)))
                    for index in range(int(round(scale_top / step)) + 1))
    every = math.ceil(count / MAX_X_LABELS)    # the last period is always labelled
    x_ticks = tuple(Tick(xs[index], period.period.label) for index, period in enumerate(periods)
                    if (count - 1 - index) % every == 0)
    series = tuple(_series(channel, metric, periods, xs, y_of) for channel in DRAWING_ORDER)
    targets = tuple(Tick(y_of(target.value), target.label) for target in metric.targets)
    return Chart(chart_id, f"{metric.title}, par {PERIOD_WORDS[view]}", _describe(metric, periods, view),
                 X_AXES[view], metric.axis, x_ticks, y_ticks, targets, series)


def _series(channel: str, metric: Metric, periods: list[PeriodFigures], xs: list[float],
            y_of: Callable[[float], float]) -> Series:
    label = CHANNEL_LABELS[channel]
    commands, points, marks = [], [], []
    after_gap = True
    for x, period in zip(xs, periods):
        figures = period.channels[channel]
        value, incomplete = metric.value(figures), metric.incomplete(figures)
        figure, detail = metric.cell(figures)
        text = f"{label}, {period.period.title} : {figure}" + (f" ({detail})" if detail else "")
        if value is None:
            after_gap = True
            if incomplete:    # nothing known to plot: the mark sits on the axis
                marks.append(Mark(x, HEIGHT - BOTTOM - 6, text))
            continue
        y = y_of(value)
        commands.append(f"{'M' if after_gap else 'L'}{x} {y}")
        after_gap = False
        points.append(Point(x, y, text, incomplete))
        if incomplete:
            marks.append(Mark(x, _round(max(TOP + 8, y - 8)), text))
    return Series(channel, label, " ".join(commands), tuple(points), tuple(marks))


def _describe(metric: Metric, periods: list[PeriodFigures], view: str) -> str:
    """What the chart shows, for screen readers: how it is drawn and the last period's figures."""
    parts = [metric.explanation, "Une courbe par canal : téléphone, navigateur, et l'ensemble en pointillés."]
    if metric.target_text:
        parts.append(f"Objectif : {metric.target_text}.")
    if metric.zero_without_calls:
        parts.append(f"{ONE_PERIOD[view]} sans conversation compte 0.")
    else:
        parts.append(f"{ONE_PERIOD[view]} sans conversation laisse un trou dans les courbes.")
    last = periods[-1]
    figures = ", ".join(f"{CHANNEL_LABELS[channel]} {metric.cell(last.channels[channel])[0]}" for channel in CHANNELS)
    parts.append(f"Dernière période ({last.period.title}) : {figures}.")
    return " ".join(parts)
