"""The HTTP surface: thin FastAPI routes over the phone line."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response, WebSocket

from app.config import Settings, get_settings
from app.metrics import Metrics
from app.telephony.line import INCOMING_PATH, STATUS_PATH, STREAM_ENDED_PATH, STREAM_PATH, PhoneLine

TWIML = "application/xml"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    line = PhoneLine(settings, Metrics())

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await line.close()

    app = FastAPI(title="OCTI phone line", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.line = line

    async def signed_form(request: Request, path: str) -> dict[str, str] | None:
        form = {key: str(value) for key, value in (await request.form()).items()}
        signature = request.headers.get("x-twilio-signature")
        return form if line.signed(path, form, signature, request.url.query) else None

    @app.post(INCOMING_PATH)
    async def incoming_call(request: Request) -> Response:
        form = await signed_form(request, INCOMING_PATH)
        if form is None:
            return Response("Invalid Twilio signature", status_code=403)
        return Response(line.answer_call(form), media_type=TWIML)

    @app.post(STREAM_ENDED_PATH)
    async def stream_ended(request: Request) -> Response:
        form = await signed_form(request, STREAM_ENDED_PATH)
        if form is None:
            return Response("Invalid Twilio signature", status_code=403)
        return Response(line.after_stream(form), media_type=TWIML)

    @app.post(STATUS_PATH)
    async def stream_status(request: Request) -> Response:
        form = await signed_form(request, STATUS_PATH)
        if form is None:
            return Response("Invalid Twilio signature", status_code=403)
        line.stream_status(form)
        return Response(status_code=204)

    @app.websocket(STREAM_PATH)
    async def media_stream(websocket: WebSocket) -> None:
        await line.serve_stream(websocket)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        problems = []
        if not settings.realtime_configured:
            problems.append("OPENAI_API_KEY is not set: calls are answered with an apology")
        if line.signatures.refuses_everything:
            problems.append("TWILIO_AUTH_TOKEN is not set and the server is not bound to loopback: "
                            "every Twilio request is refused")
        return {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "realtime": {"configured": settings.realtime_configured, "url": settings.openai_realtime_url,
                         "model": settings.openai_realtime_model},
            "twilio": {"signatures_enforced": line.signatures.enforced},
            "audio_codec": settings.audio_codec,
            "active_calls": line.active_calls,
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(line.metrics.render(), media_type="text/plain; version=0.0.4")

    return app
