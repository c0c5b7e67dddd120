"""The HTTP surface: thin FastAPI routes over the service (`app.service`)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request, Response, WebSocket
from fastapi.responses import JSONResponse

from app.channels.browser.routes import SOFTPHONE_PATH, build_browser_router, softphone_files
from app.channels.twilio.callback import OUTBOUND_PATH
from app.channels.twilio.line import INCOMING_PATH, STREAM_ENDED_PATH, STREAM_PATH
from app.channels.twilio.security import STATUS_PATH
from app.channels.twilio.transfer import DIAL_ENDED_PATH, WHISPER_PATH
from app.channels.twilio.voicemail import VOICEMAIL_PATH
from app.channels.websocket_io import POLICY_VIOLATION, WEBSOCKET_FRAME_LIMIT, StarletteSocket
from app.config import Settings, get_settings
from app.metrics import CONTENT_TYPE
from app.review import build_review_router
from app.service import Service

TWIML = "application/xml"

# uvicorn's websocket implementations by name. The default, "websockets-sansio", cost the least
# CPU per media frame of uvicorn's own (benchmarks/README.md, "Websocket stacks").
WEBSOCKET_IMPLEMENTATIONS = ("websockets-sansio", "websockets", "wsproto", "auto")


def server_config(app: FastAPI, host: str, port: int, ws: str = "websockets-sansio") -> uvicorn.Config:
    """How the phone line is served, for `octi serve` and the tests alike."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ws=ws,
        ws_max_size=WEBSOCKET_FRAME_LIMIT,
        ws_per_message_deflate=False,  # μ-law in base64 does not compress; deflate only costs CPU
        log_config=None,
        access_log=False,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    service = Service(settings)
    line = service.twilio

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await service.start()
        yield
        await service.close()

    app = FastAPI(title="OCTI phone line", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service

    def signed_form(path: str):
        """A dependency: the form Twilio posted to `path`, or 403 when its signature is wrong."""
        async def read(request: Request) -> dict[str, str]:
            form = {key: str(value) for key, value in (await request.form()).items()}
            if not line.signed(path, form, request.headers.get("x-twilio-signature"), request.url.query):
                raise HTTPException(status_code=403, detail="Invalid Twilio signature")
            return form
        return Depends(read)

    @app.post(INCOMING_PATH)
    async def incoming_call(form: dict[str, str] = signed_form(INCOMING_PATH)) -> Response:
        return Response(await line.answer_call(form), media_type=TWIML)

    @app.post(OUTBOUND_PATH)
    async def call_back_answered(request: Request, form: dict[str, str] = signed_form(OUTBOUND_PATH)) -> Response:
        return Response(await line.answer_call_back(form, request.query_params), media_type=TWIML)

    @app.post(STREAM_ENDED_PATH)
    async def stream_ended(form: dict[str, str] = signed_form(STREAM_ENDED_PATH)) -> Response:
        return Response(await line.after_stream(form), media_type=TWIML)

    @app.post(WHISPER_PATH)
    async def whisper(request: Request, form: dict[str, str] = signed_form(WHISPER_PATH)) -> Response:
        return Response(line.transfers.whisper(request.query_params), media_type=TWIML)

    @app.post(DIAL_ENDED_PATH)
    async def transfer_ended(form: dict[str, str] = signed_form(DIAL_ENDED_PATH)) -> Response:
        return Response(line.transfers.dial_ended(form), media_type=TWIML)

    @app.post(VOICEMAIL_PATH)
    async def voicemail(form: dict[str, str] = signed_form(VOICEMAIL_PATH)) -> Response:
        return Response(line.voicemail.saved(form), media_type=TWIML)

    @app.post(STATUS_PATH)
    async def status_callback(request: Request, form: dict[str, str] = signed_form(STATUS_PATH)) -> Response:
        line.status_callback(form, request.query_params)
        return Response(status_code=204)

    @app.websocket(STREAM_PATH)
    async def media_stream(websocket: WebSocket) -> None:
        if not line.stream_upgrade_signed(websocket.headers):
            await websocket.close(code=POLICY_VIOLATION)  # before accepting: HTTP 403
            return
        await line.serve_stream(StarletteSocket(websocket))

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """For load balancers: 503 while draining, so no new calls are sent here."""
        if service.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return await service.health()

    app.include_router(build_browser_router(service.browser))
    app.mount(SOFTPHONE_PATH, softphone_files(), name="softphone")
    app.include_router(build_review_router(service.call_log_reader, settings, call_backs=line.call_backs))

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    return app
