"""A call's recording: ``/calls/{id}/recording.wav`` (GET, HEAD, Range requests), for the
call page's player and for bearer-token clients."""

from __future__ import annotations

import logging

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from app.calllog.store_queries import call_number
from app.review.access import ApiReviewer, Context, Reader, ReviewRoute, unavailable
from app.review.rendering import NO_STORE

log = logging.getLogger(__name__)

router = APIRouter(route_class=ReviewRoute)


@router.api_route("/calls/{call_id}/recording.wav", methods=["GET", "HEAD"])
async def recording(request: Request, call_id: str, context: Context, reviewer: ApiReviewer,
                    reader: Reader) -> Response:
    missing = JSONResponse({"detail": "enregistrement introuvable"}, status_code=404, headers=NO_STORE)
    number = call_number(call_id)
    if number is None:
        return missing
    if reader is None:
        return unavailable(request, context, reviewer, api=True)
    try:  # only the path: the player sends many Range requests while seeking
        path = await reader.recording_path(number)
    except Exception:
        log.exception("review: finding the recording of call %s failed", number)
        return unavailable(request, context, reviewer, api=True)
    if path is None or not await anyio.Path(path).is_file():
        return missing
    return FileResponse(path, media_type="audio/wav", content_disposition_type="inline",
                        filename=f"appel-{number}.wav",
                        headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"})
