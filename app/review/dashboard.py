"""The reviewers' dashboard: ``/tableau-de-bord`` (French page, a chart and a table per KPI)
and ``/api/tableau-de-bord`` (every view's figures as JSON).

Query parameters: ``view`` (``days``, ``weeks`` or ``months``: how the page cuts the window),
``end`` (the last day, YYYY-MM-DD, Paris calendar; today by default), ``days``, ``weeks``,
``months`` (how many of each, ending with ``end``'s; see kpi_periods.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from app.calllog.store import CallLogStore
from app.calllog.views import CallLogReader
from app.review.access import ApiReviewer, Context, PageReviewer, Reader, ReviewRoute, unavailable
from app.review.kpi_charts import Chart, line_chart
from app.review.kpi_figures import ALL, CHANNEL_LABELS, CHANNELS, VIEWS, Dashboard, PeriodFigures, read_dashboard
from app.review.kpi_metrics import METRICS, Metric
from app.review.kpi_periods import Window, parse_window
from app.review.queries import filters_url
from app.review.rendering import NO_STORE

log = logging.getLogger(__name__)

PAGE_PATH = "/tableau-de-bord"
API_PATH = "/api/tableau-de-bord"
VIEW_LABELS = {"days": "Par jour", "weeks": "Par semaine", "months": "Par mois"}

router = APIRouter(route_class=ReviewRoute)


@dataclass(frozen=True, slots=True)
class Cell:
    figure: str
    detail: str


@dataclass(frozen=True, slots=True)
class Row:
    title: str
    cells: tuple[Cell, ...]      # in CHANNELS' order


@dataclass(frozen=True, slots=True)
class Section:
    """One KPI on the page: its headline over the whole view, its chart and its table."""

    metric: Metric
    headline: Cell                       # all channels together, over the whole view
    by_channel: tuple[tuple[str, str], ...]   # (channel label, figure) for each channel alone
    status: str | None                   # "ok" or "off" against the target; None without one
    chart: Chart
    rows: tuple[Row, ...]
    total: Row


def _row(metric: Metric, figures: PeriodFigures, title: str) -> Row:
    return Row(title, tuple(Cell(*metric.cell(figures.channels[channel])) for channel in CHANNELS))


def _section(metric: Metric, periods: list[PeriodFigures], whole: PeriodFigures, view: str) -> Section:
    overall = whole.channels[ALL]
    value = metric.value(overall)
    status = None if metric.meets is None or value is None else ("ok" if metric.meets(value) else "off")
    return Section(
        metric=metric, headline=Cell(*metric.cell(overall)),
        by_channel=tuple((CHANNEL_LABELS[channel], metric.cell(whole.channels[channel])[0])
                         for channel in CHANNELS if channel != ALL),
        status=status, chart=line_chart(f"chart-{metric.key}", metric, periods, view),
        rows=tuple(_row(metric, period, period.period.title) for period in periods),
        total=_row(metric, whole, f"Ensemble de la période ({whole.period.title})"),
    )


async def _read(reader: CallLogReader | None, window: Window) -> Dashboard | None:
    """The dashboard's figures, or None when the call log is unavailable."""
    if not isinstance(reader, CallLogStore):
        if reader is not None:   # a reader over something else than the SQL store has no figures
            log.error("review: the call log %s cannot give the dashboard's figures", type(reader).__name__)
        return None
    try:
        return await read_dashboard(reader, window)
    except Exception:
        log.exception("review: reading the dashboard's figures failed")
        return None


@router.get(PAGE_PATH)
async def dashboard_page(request: Request, context: Context, reviewer: PageReviewer, reader: Reader) -> Response:
    window, problems, form = parse_window(request.query_params)
    view = request.query_params.get("view") or "days"
    if view not in VIEWS:
        problems.append(f"vue inconnue : {view}")
        view = "days"
    dashboard = await _read(reader, window)
    if dashboard is None:
        return unavailable(request, context, reviewer, api=False)
    figures = dashboard.views[view]
    sections = [_section(metric, figures.periods, figures.whole, view) for metric in METRICS]
    tabs = [(name, label, filters_url(PAGE_PATH, form, view=name if name != "days" else None))
            for name, label in VIEW_LABELS.items()]
    return context.pages.render(
        "dashboard.html", request, reviewer=reviewer, window=window, form=form, view=view, tabs=tabs,
        problems=problems, span=figures.whole.period, sections=sections,
        channels=[(channel, CHANNEL_LABELS[channel]) for channel in CHANNELS],
        api_url=filters_url(API_PATH, form),
    )


@router.get(API_PATH)
async def dashboard_api(request: Request, context: Context, reviewer: ApiReviewer, reader: Reader) -> Response:
    window, problems, _ = parse_window(request.query_params)
    if problems:
        return JSONResponse({"detail": problems}, status_code=400, headers=NO_STORE)
    dashboard = await _read(reader, window)
    if dashboard is None:
        return unavailable(request, context, reviewer, api=True)
    return JSONResponse(dashboard.to_json(), headers=NO_STORE)
