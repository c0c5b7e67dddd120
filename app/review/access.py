"""What the review routes share, as FastAPI dependencies: the review context (access rules,
pages, call log), who is asking, and the responses sent instead of a page (sign-in
redirect, 401, 429, disabled, closed, call log unavailable).

A dependency that must answer the request itself raises EarlyResponse; the routes' class,
ReviewRoute, sends that response. Access rules are those of ``auth.py``.
"""

from __future__ import annotations

import inspect
import logging
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from app.calllog.store_queries import call_number
from app.calllog.views import CallDetail, CallLogReader, CallQuery, CallSummary
from app.channels.twilio.callback import CallBacks
from app.review.auth import (
    CSRF_COOKIE,
    CSRF_SECONDS,
    LOCAL_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    ReviewAuth,
    Reviewer,
)
from app.review.rendering import NO_STORE, Pages

log = logging.getLogger(__name__)

LOGIN_PATH = "/review/login"
LOGOUT_PATH = "/review/logout"

# The CallLogReader itself, or a (sync or async) callable returning it; None while the call
# log is unavailable.
ReaderProvider = Callable[[], Awaitable[CallLogReader | None] | CallLogReader | None] | CallLogReader | None


class EarlyResponse(Exception):
    """Raised by a dependency that answers the request itself."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class ReviewRoute(APIRoute):
    """The review routes' class: an EarlyResponse raised by a dependency is the response; a
    browser's new open-pages nonce (see local_reviewer) goes out with whatever is sent."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except EarlyResponse as early:
                response = early.response
            cookie = getattr(request.state, "review_local_cookie", None)
            if cookie is not None:
                response.set_cookie(LOCAL_COOKIE, cookie, max_age=SESSION_SECONDS, path="/", httponly=True,
                                    samesite="lax", secure=is_https(request))
            return response

        return handle


@dataclass(frozen=True, slots=True)
class ReviewContext:
    auth: ReviewAuth
    pages: Pages
    reader_provider: ReaderProvider
    call_backs: CallBacks | None = None  # None: the review cannot place call-backs (no phone line)

    @asynccontextmanager
    async def lifespan(self, _: Any) -> AsyncIterator[None]:
        """The review router's lifespan, which FastAPI runs within the app's."""
        yield
        self.auth.limiter.close()

    async def attach(self, request: Request) -> None:
        """The review router's own dependency, run before the routes' ones: see review_context."""
        request.state.review_context = self


async def review_context(request: Request) -> ReviewContext:
    return request.state.review_context


Context = Annotated[ReviewContext, Depends(review_context)]


async def call_log_reader(context: Context) -> CallLogReader | None:
    provider = context.reader_provider
    if provider is None or hasattr(provider, "list_calls"):
        return provider  # type: ignore[return-value]
    value = provider()  # type: ignore[operator]
    if inspect.isawaitable(value):
        value = await value
    return value


Reader = Annotated[CallLogReader | None, Depends(call_log_reader)]


# ---------------------------------------------------------------- request helpers

def client_address(request: Request) -> str:
    return request.client.host if request.client else "inconnu"


def safe_next(target: str | None) -> str:
    """A path on this site to go to after signing in; anything else goes to the list."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/calls"
    return target


def is_https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


# ---------------------------------------------------------------- responses instead of a page

def disabled(request: Request, context: ReviewContext, api: bool) -> Response:
    if api:
        return JSONResponse({"detail": "pages de relecture désactivées : aucun identifiant configuré"},
                            status_code=404, headers=NO_STORE)
    return context.pages.render("disabled.html", request, status=404, problem=context.auth.problem,
                                open_access=False)


def closed(request: Request, context: ReviewContext, api: bool) -> Response:
    """No credentials, and the service is exposed (PUBLIC_BASE_URL, or a proxy or tunnel's
    headers on the request): the pages hold the callers' numbers and voices, so they stay shut."""
    if api:
        return JSONResponse({"detail": "relecture fermée : ce service est joignable depuis Internet et aucun "
                                       "identifiant n'est configuré ; définissez REVIEW_USERNAME et REVIEW_PASSWORD "
                                       "(ou REVIEW_TOKEN) puis redémarrez le service",
                             "code": "review_closed"}, status_code=403, headers=NO_STORE)
    return context.pages.render("closed.html", request, status=403, problem=context.auth.problem,
                                open_access=False)


def refusal(request: Request, context: ReviewContext, api: bool) -> Response | None:
    """What to send instead of any review page when no credentials are configured and the
    request may not be answered without (disabled, closed); None otherwise."""
    auth = context.auth
    if auth.mode == "disabled":
        return disabled(request, context, api)
    if auth.mode == "closed" or (auth.mode == "open" and not auth.open_to(request.headers)):
        return closed(request, context, api)
    return None


def with_session(response: Response, request: Request, context: ReviewContext, reviewer: Reviewer) -> Response:
    response.set_cookie(SESSION_COOKIE, context.auth.issue_session(reviewer), max_age=SESSION_SECONDS, path="/",
                        httponly=True, samesite="lax", secure=is_https(request))
    return response


def login_page(request: Request, context: ReviewContext, *, status: int = 200, error: str | None = None,
               next_path: str, nonce: str | None, username: str = "") -> HTMLResponse:
    """The sign-in form, with a CSRF token bound to the nonce cookie (kept, or `nonce`, or new)."""
    auth = context.auth
    nonce = nonce or request.cookies.get(CSRF_COOKIE) or auth.new_csrf_nonce()
    response = context.pages.render("login.html", request, status=status, error=error, next_path=next_path,
                                    csrf=auth.csrf_token(nonce), username=username,
                                    password_enabled=auth.password_enabled, token_enabled=auth.token_enabled)
    response.set_cookie(CSRF_COOKIE, nonce, max_age=CSRF_SECONDS, path=LOGIN_PATH, httponly=True,
                        samesite="strict", secure=is_https(request))
    return response


def too_many(request: Request, context: ReviewContext, wait: int, api: bool) -> Response:
    headers = {**NO_STORE, "Retry-After": str(wait)}
    message = f"Trop de tentatives de connexion. Réessayez dans {math.ceil(wait / 60)} min."
    if api:
        return JSONResponse({"detail": message}, status_code=429, headers=headers)
    response = login_page(request, context, status=429, error=message, next_path="/calls", nonce=None)
    response.headers.update(headers)
    return response


def unavailable(request: Request, context: ReviewContext, reviewer: Reviewer, api: bool) -> Response:
    if api:
        return JSONResponse({"detail": "journal des appels indisponible"}, status_code=503, headers=NO_STORE)
    return context.pages.render("error.html", request, status=503, reviewer=reviewer, title="Journal indisponible",
                                message="Le journal des appels est indisponible pour le moment. Réessayez plus tard.")


def not_found(request: Request, context: ReviewContext, reviewer: Reviewer, api: bool) -> Response:
    if api:
        return JSONResponse({"detail": "appel introuvable"}, status_code=404, headers=NO_STORE)
    return context.pages.render("error.html", request, status=404, reviewer=reviewer, title="Appel introuvable",
                                message="Cet appel n'existe pas (ou plus) dans le journal.")


# ---------------------------------------------------------------- who is asking

async def _reviewer(request: Request, context: ReviewContext, *, api: bool) -> Reviewer:
    """The reviewer, or EarlyResponse with what to send instead (disabled, closed, sign-in, 401, 429)."""
    auth = context.auth
    refused = refusal(request, context, api)
    if refused is not None:
        raise EarlyResponse(refused)
    if auth.mode == "open":
        return local_reviewer(request, auth)
    reviewer = auth.read_session(request.cookies.get(SESSION_COOKIE))
    if reviewer is not None:
        return reviewer
    header = request.headers.get("authorization", "")
    bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
    in_query = request.query_params.get("token")
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    target = request.url.path + (f"?{urlencode(rest)}" if rest else "")  # the token never travels on
    if bearer is not None or in_query is not None:
        client = client_address(request)
        reviewer = auth.check_token(bearer if bearer is not None else in_query)
        # A right token is not counted (API clients send it with every request), only refused
        # when the address is at its limit: then it answers like a wrong one.
        wait = await (auth.limiter.failed(client) if reviewer is None else auth.limiter.retry_after(client))
        if wait is not None:
            raise EarlyResponse(too_many(request, context, wait, api))
        if reviewer is None:
            log.warning("review: wrong token from %s", client)
        elif in_query is not None and bearer is None and request.method in ("GET", "HEAD"):
            # Trade the token in the address for a session cookie, and drop it from the address.
            redirect = RedirectResponse(target, status_code=303, headers=NO_STORE)
            raise EarlyResponse(with_session(redirect, request, context, reviewer))
        else:
            return reviewer
    if api:
        raise EarlyResponse(JSONResponse({"detail": "authentification requise"}, status_code=401,
                                         headers={**NO_STORE, "WWW-Authenticate": 'Bearer realm="octi-review"'}))
    raise EarlyResponse(RedirectResponse(f"{LOGIN_PATH}?{urlencode({'next': target})}", status_code=303,
                                         headers=NO_STORE))


def local_reviewer(request: Request, auth: ReviewAuth) -> Reviewer:
    """Open pages' reviewer, with this browser's own nonce for its forms' tokens: new ones are
    set as a cookie by ReviewRoute."""
    nonce = auth.read_local(request.cookies.get(LOCAL_COOKIE))
    if nonce is None:
        nonce = secrets.token_urlsafe(16)
        request.state.review_local_cookie = auth.issue_local(nonce)
    return Reviewer("local", "local", nonce)


async def page_reviewer(request: Request, context: Context) -> Reviewer:
    """For the HTML pages: without access, a redirect to the sign-in form (or the disabled page)."""
    return await _reviewer(request, context, api=False)


async def api_reviewer(request: Request, context: Context) -> Reviewer:
    """For JSON, CSV and audio: without access, a JSON 401 (or 404 when disabled)."""
    return await _reviewer(request, context, api=True)


PageReviewer = Annotated[Reviewer, Depends(page_reviewer)]
ApiReviewer = Annotated[Reviewer, Depends(api_reviewer)]


# ---------------------------------------------------------------- reading the call log

async def list_calls(reader: CallLogReader | None, query: CallQuery) -> tuple[list[CallSummary], int] | None:
    """One page of calls and the total, or None when the call log is unavailable."""
    if reader is None:
        return None
    try:
        return await reader.list_calls(query)
    except Exception:
        log.exception("review: listing calls failed")
        return None


async def get_call(reader: CallLogReader | None, call_id: str) -> tuple[CallDetail | None, Path | None] | None:
    """(detail, recording) — (None, None) for an unknown id — or None when the log is unavailable."""
    number = call_number(call_id)
    if number is None:
        return None, None
    if reader is None:
        return None
    try:
        detail = await reader.get_call(number)
        recording = await reader.recording_path(number) if detail and detail.summary.recorded else None
    except Exception:
        log.exception("review: reading call %s failed", number)
        return None
    return detail, recording
