"""The call log as data: ``/api/calls`` and ``/api/calls/{id}`` (JSON), ``/calls.csv`` (the
current filter's every call, streamed). Bearer token or session cookie."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import AsyncIterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app.calllog.views import CallLogReader, CallQuery, CallSummary
from app.review.access import (
    ApiReviewer,
    Context,
    Reader,
    ReviewRoute,
    get_call,
    list_calls,
    not_found,
    unavailable,
)
from app.review.formatting import PARIS, as_utc
from app.review.queries import parse_query
from app.review.rendering import NO_STORE

CSV_BATCH = 200         # calls asked of the reader at a time while exporting
CSV_COLUMNS = ["id", "call_sid", "started_at", "caller", "duration_s", "turns", "barge_ins", "outcome",
               "cost_usd", "flags"]

router = APIRouter(route_class=ReviewRoute)


# ---------------------------------------------------------------- JSON

def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "kind"}
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _summary_json(summary: CallSummary) -> dict[str, Any]:
    return {**jsonable(summary), "url": f"/calls/{summary.id}"}


@router.get("/api/calls")
async def api_calls(request: Request, context: Context, reviewer: ApiReviewer, reader: Reader) -> Response:
    query, problems, _ = parse_query(request.query_params)
    if problems:
        return JSONResponse({"detail": problems}, status_code=400, headers=NO_STORE)
    found = await list_calls(reader, query)
    if found is None:
        return unavailable(request, context, reviewer, api=True)
    items, total = found
    return JSONResponse({"items": [_summary_json(s) for s in items], "total": total, "page": query.page,
                         "per_page": query.per_page}, headers=NO_STORE)


@router.get("/api/calls/{call_id}")
async def api_call(request: Request, call_id: str, context: Context, reviewer: ApiReviewer,
                   reader: Reader) -> Response:
    found = await get_call(reader, call_id)
    if found is None:
        return unavailable(request, context, reviewer, api=True)
    detail, recording = found
    if detail is None:
        return not_found(request, context, reviewer, api=True)
    body = jsonable(detail)
    body["summary"] = _summary_json(detail.summary)
    body["recording_url"] = f"/calls/{detail.summary.id}/recording.wav" if recording else None
    return JSONResponse(body, headers=NO_STORE)


# ---------------------------------------------------------------- CSV

def _csv_cell(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula is prefixed with a quote (OWASP)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_row(summary: CallSummary) -> list[Any]:
    return [_csv_cell(value) for value in (
        summary.id, summary.call_sid, as_utc(summary.started_at).isoformat(), summary.caller_masked,
        "" if summary.duration_s is None else round(summary.duration_s, 3), summary.turns, summary.barge_ins,
        summary.outcome or "", "" if summary.cost_usd is None else round(summary.cost_usd, 6), "|".join(summary.flags),
    )]


def _csv_text(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


async def _csv_chunks(reader: CallLogReader | None, query: CallQuery,
                      first: tuple[list[CallSummary], int]) -> AsyncIterator[bytes]:
    """The header and the first page, then the next pages while the reader has more."""
    items, total = first
    yield ("\ufeff" + _csv_text([CSV_COLUMNS] + [_csv_row(s) for s in items])).encode("utf-8")
    sent, page = len(items), 1
    while items and sent < total:
        page += 1
        found = await list_calls(reader, dataclasses.replace(query, page=page))
        if found is None:  # the log went away mid-export: the file ends here
            break
        items = found[0]
        sent += len(items)
        yield _csv_text([_csv_row(s) for s in items]).encode("utf-8")


@router.get("/calls.csv")
async def calls_csv(request: Request, context: Context, reviewer: ApiReviewer, reader: Reader) -> Response:
    query, problems, _ = parse_query(request.query_params, per_page=CSV_BATCH)
    if problems:
        return JSONResponse({"detail": problems}, status_code=400, headers=NO_STORE)
    query = dataclasses.replace(query, page=1)
    first = await list_calls(reader, query)
    if first is None:
        return unavailable(request, context, reviewer, api=True)
    stamp = datetime.now(PARIS).strftime("%Y%m%d-%H%M")
    return StreamingResponse(_csv_chunks(reader, query, first), media_type="text/csv; charset=utf-8", headers={
        **NO_STORE, "Content-Disposition": f'attachment; filename="appels-octi-{stamp}.csv"',
        "X-Content-Type-Options": "nosniff"})
