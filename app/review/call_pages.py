"""The French pages: ``/calls`` (list, search, filters) and ``/calls/{id}`` (one call), and their
static files under ``/review/static``."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.review.access import (
    Context,
    PageReviewer,
    Reader,
    ReviewRoute,
    get_call,
    list_calls,
    not_found,
    unavailable,
)
from app.channels.twilio.callback import REFUSALS
from app.review.formatting import call_back_result, event_views, turn_views
from app.review.outbound import call_back_question, wants_call_back
from app.review.queries import PAGE_SIZE, filters_url, parse_query
from app.review.rendering import STATIC_PATH

router = APIRouter(route_class=ReviewRoute)


@router.get("/calls")
async def calls_page(request: Request, context: Context, reviewer: PageReviewer, reader: Reader) -> Response:
    query, problems, form = parse_query(request.query_params, per_page=PAGE_SIZE)
    found = await list_calls(reader, query)
    if found is None:
        return unavailable(request, context, reviewer, api=False)
    items, total = found
    pages_count = max(1, math.ceil(total / query.per_page))
    return context.pages.render(
        "calls.html", request, reviewer=reviewer, items=items, total=total, page=query.page, pages=pages_count,
        problems=problems, form=form, filtered=any(form.values()),
        prev_url=filters_url("/calls", form, page=query.page - 1) if query.page > 1 else None,
        next_url=filters_url("/calls", form, page=query.page + 1) if query.page < pages_count else None,
        first_url=filters_url("/calls", form) if query.page > pages_count else None,
        csv_url=filters_url("/calls.csv", form),
    )


@router.get("/calls/{call_id}")
async def call_page(request: Request, call_id: str, context: Context, reviewer: PageReviewer,
                    reader: Reader) -> Response:
    found = await get_call(reader, call_id)
    if found is None:
        return unavailable(request, context, reviewer, api=False)
    detail, recording = found
    if detail is None:
        return not_found(request, context, reviewer, api=False)
    return context.pages.render(
        "call.html", request, reviewer=reviewer, call=detail, summary=detail.summary,
        turns=turn_views(detail.turns), events=event_views(detail),
        recording_url=f"/calls/{detail.summary.id}/recording.wav" if recording else None,
        back_url=request.headers.get("referer") if _from_the_list(request) else "/calls",
        offer_call_back=wants_call_back(detail), call_back_question=call_back_question(detail),
        number_not_kept=REFUSALS["number_not_kept"][1],
        call_back_result=call_back_result(request.query_params.get("rappel")),
    )


def _from_the_list(request: Request) -> bool:
    """Whether the reviewer came from a filtered list on this site, to go back to it."""
    referer = request.headers.get("referer", "")
    return referer.startswith(f"{request.url.scheme}://{request.url.netloc}/calls?")


@router.get(STATIC_PATH + "/{name}")
async def static_file(name: str, context: Context) -> Response:
    asset = context.pages.static.get(name)
    if asset is None:
        return Response("introuvable", status_code=404, media_type="text/plain; charset=utf-8")
    return Response(asset.body, media_type=asset.media_type,
                    headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})
