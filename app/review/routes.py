"""The review routes, one router per concern, assembled for the app:

* ``sign_in``: ``/review/login`` (GET, POST), ``/review/logout`` (POST), ``/review``
* ``call_pages``: ``/calls`` list · ``/calls/{id}`` one call · ``/review/static/{name}``
* ``call_api``: ``/api/calls`` · ``/api/calls/{id}`` · ``/calls.csv``
* ``recordings``: ``/calls/{id}/recording.wav`` (Range requests)
* ``dashboard``: ``/tableau-de-bord`` KPI page · ``/api/tableau-de-bord`` the same figures as JSON
* ``outbound``: ``POST /api/calls/outbound``, a call-back (JSON, or the « Rappeler » form of a call's page)

They share, through FastAPI dependencies (``access.py``), the review context: access rules
(``auth.py``), pages (``rendering.py``) and the call log.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.channels.twilio.callback import CallBacks
from app.config import Settings
from app.review import call_api, call_pages, dashboard, outbound, recordings, sign_in
from app.review.access import ReaderProvider, ReviewContext
from app.review.auth import ReviewAuth
from app.review.rendering import Pages


def build_review_router(reader_provider: ReaderProvider, settings: Settings, *,
                        auth: ReviewAuth | None = None, call_backs: CallBacks | None = None) -> APIRouter:
    """The reviewer routes over the call log that `reader_provider` gives (see ReaderProvider);
    call-backs are placed through `call_backs` (the phone line's)."""
    auth = auth or ReviewAuth(settings)
    context = ReviewContext(auth, Pages(auth), reader_provider, call_backs)
    router = APIRouter(include_in_schema=False, dependencies=[Depends(context.attach)], lifespan=context.lifespan)
    for concern in (sign_in, call_pages, call_api, outbound, recordings, dashboard):
        router.include_router(concern.router)
    return router
