"""Call-backs from the review: ``POST /api/calls/outbound``.

JSON in, JSON out for programs: ``{"to": "+33…", "question": "…"}``, or ``{"call_id": N}`` to
call back the caller of a logged call about their question. The « Rappeler » form of a call's
page posts ``call_id`` and is sent back to that page, which says how it went
(``?rappel=placed`` or the refusal's code): a reload then shows the result again rather than
dialling the farmer twice.

Access is the review's: a bearer token, or a reviewer's session (or local access) whose
request carries the session's form token (the form's ``csrf`` field, or ``X-CSRF-Token``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from app.calllog.store_queries import call_number
from app.calllog.views import CallDetail, CallLogReader
from app.channels.twilio.callback import CallBackRefused, e164
from app.logs import mask_phone
from app.review.access import ApiReviewer, Context, Reader, ReviewContext, ReviewRoute, get_call
from app.review.auth import SESSION_COOKIE, Reviewer
from app.review.formatting import PLACED
from app.review.rendering import NO_STORE

log = logging.getLogger(__name__)

OUTBOUND_API_PATH = "/api/calls/outbound"
FORM = "application/x-www-form-urlencoded"
# The events after which a caller expects to be called back: the review offers « Rappeler ».
CALL_BACK_REASONS = ("voicemail", "transfer_unanswered", "transfer_refused")

router = APIRouter(route_class=ReviewRoute)


def wants_call_back(detail: CallDetail) -> bool:
    return any(event.type in CALL_BACK_REASONS for event in detail.events)


def call_back_question(detail: CallDetail) -> str:
    """What the caller wanted: the question handed to the advisor, else their last words."""
    for event in reversed(detail.events):
        if event.type == "transfer" and event.detail.strip():
            return event.detail
    for turn in sorted(detail.turns, key=lambda t: t.index, reverse=True):
        if turn.role == "caller" and turn.text.strip():
            return turn.text
    return ""


def _needs_form_token(request: Request, context: ReviewContext, reviewer: Reviewer) -> bool:
    """A browser's request (session cookie, or local access) must come from our pages; a
    bearer token is never sent by a browser on its own."""
    return reviewer.via == "local" or context.auth.read_session(request.cookies.get(SESSION_COOKIE)) is not None


async def _fields(request: Request, from_page: bool) -> dict[str, Any]:
    if from_page:
        return {key: str(value) for key, value in (await request.form()).items()}
    try:
        body = await request.json()
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {}


async def _place(context: ReviewContext, reader: CallLogReader | None, fields: dict[str, Any]) -> tuple[str, str]:
    """(the new call's SID, the number called back), or CallBackRefused."""
    if context.call_backs is None:
        raise CallBackRefused("not_configured")
    if "call_id" not in fields:
        to, question = fields.get("to"), fields.get("question") or ""
        if not isinstance(to, str) or not isinstance(question, str):
            raise CallBackRefused("invalid_request")
        return await context.call_backs.place(to, question), e164(to)
    found = await get_call(reader, str(fields["call_id"]))
    if found is None:
        raise CallBackRefused("log_unavailable")
    detail = found[0]
    if detail is None:
        raise CallBackRefused("not_found")
    if not detail.caller_number:
        raise CallBackRefused("number_not_kept")
    call_sid = await context.call_backs.place(detail.caller_number, call_back_question(detail),
                                              about_call_sid=detail.summary.call_sid)
    return call_sid, e164(detail.caller_number)


def _back_to_the_page(fields: dict[str, Any], outcome: str) -> Response:
    number = call_number(str(fields.get("call_id", "")))
    page = f"/calls/{number}" if number is not None else "/calls"
    return RedirectResponse(f"{page}?rappel={outcome}", status_code=303, headers=NO_STORE)


@router.post(OUTBOUND_API_PATH)
async def call_back(request: Request, context: Context, reviewer: ApiReviewer, reader: Reader) -> Response:
    from_page = request.headers.get("content-type", "").split(";")[0].strip() == FORM
    fields = await _fields(request, from_page)
    token = fields.get("csrf") if from_page else request.headers.get("x-csrf-token")
    if _needs_form_token(request, context, reviewer) and not context.auth.check_form_token(
            reviewer, token if isinstance(token, str) else None):
        if from_page:
            return context.pages.render("error.html", request, status=403, reviewer=reviewer,
                                        title="Requête refusée",
                                        message="Le rappel n'a pas été demandé depuis cette page.")
        return JSONResponse({"detail": "Requête refusée : jeton CSRF manquant ou invalide (en-tête X-CSRF-Token).",
                             "code": "csrf"}, status_code=403, headers=NO_STORE)
    try:
        call_sid, number = await _place(context, reader, fields)
    except CallBackRefused as refused:
        log.warning("review: a call-back asked by %s was refused: %s", reviewer.name, refused.code)
        if from_page:
            return _back_to_the_page(fields, refused.code)
        return JSONResponse({"detail": refused.message, "code": refused.code}, status_code=refused.status,
                            headers=NO_STORE)
    log.info("review: %s called back %s (%s)", reviewer.name, mask_phone(number), call_sid)
    if from_page:
        return _back_to_the_page(fields, PLACED)
    return JSONResponse({"call_sid": call_sid, "to": mask_phone(number)}, status_code=201, headers=NO_STORE)
