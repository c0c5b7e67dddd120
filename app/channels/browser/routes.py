"""HTTP and websocket routes of the browser channel: the seed's sockets, the sign-in that
issues their tokens (`POST /api/web/token`) and the softphone's files (`/softphone/`)."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from app.accounts.passwords import BUSY_RETRY_SECONDS, TooManyPasswordChecks
from app.channels.browser.line import REALTIME_PATH, TOKEN_COOKIE, VOICE_PATH, BrowserLine

log = logging.getLogger(__name__)

TOKEN_PATH = "/api/web/token"
SOFTPHONE_PATH = "/softphone"
SOFTPHONE_FILES = Path(__file__).parent / "static"
FIELD_LIMIT = 256
NO_STORE = {"Cache-Control": "no-store"}


class Credentials(BaseModel):
    username: str
    password: str


def build_browser_router(line: BrowserLine) -> APIRouter:
    router = APIRouter()
    failures = line.sign_in_failures

    @router.websocket(REALTIME_PATH)
    async def realtime(websocket: WebSocket) -> None:
        await line.serve(websocket)

    @router.websocket(VOICE_PATH)
    async def voice(websocket: WebSocket) -> None:
        await line.serve(websocket)

    @router.post(TOKEN_PATH)
    async def issue_token(credentials: Credentials, request: Request) -> JSONResponse:
        """A token for a user's username and password; it is also set as an HttpOnly cookie,
        which same-site pages' websockets then carry by themselves."""
        client = request.client.host if request.client else "unknown"
        username = credentials.username[:FIELD_LIMIT]
        wait = await failures.retry_after(client, username)
        if wait is not None:
            return too_many_attempts(wait)
        try:
            user = await line.users.authenticate(username, credentials.password[:FIELD_LIMIT])
        except TooManyPasswordChecks:
            return JSONResponse({"error": f"Trop de connexions en cours. Réessayez dans {BUSY_RETRY_SECONDS} s."},
                                status_code=429, headers={**NO_STORE, "Retry-After": str(BUSY_RETRY_SECONDS)})
        wait = await (failures.failed(client, username) if user is None else failures.succeeded(client, username))
        if wait is not None:
            return too_many_attempts(wait)
        if user is None:
            log.warning("browser sign-in refused from %s", client)
            return JSONResponse({"error": "Identifiant ou mot de passe incorrect."}, status_code=401, headers=NO_STORE)
        token = line.tokens.issue(user)
        lifetime = int(line.tokens.lifetime_seconds)
        response = JSONResponse({"token": token, "token_type": "jwt", "expires_in": lifetime, "user": user},
                                headers=NO_STORE)
        secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"
        response.set_cookie(TOKEN_COOKIE, token, max_age=lifetime, httponly=True, samesite="strict", secure=secure,
                            path="/")
        log.info("browser sign-in for %s", user)
        return response

    return router


def too_many_attempts(wait: int) -> JSONResponse:
    return JSONResponse({"error": f"Trop d'essais. Réessayez dans {wait} s."}, status_code=429,
                        headers={**NO_STORE, "Retry-After": str(wait)})


def softphone_files() -> StaticFiles:
    """The softphone page and its scripts, plain files (no build step)."""
    return StaticFiles(directory=SOFTPHONE_FILES, html=True)
