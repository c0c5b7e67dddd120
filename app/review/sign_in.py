"""Signing in and out: ``/review/login`` (GET, POST), ``/review/logout`` (POST), ``/review``."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from app.accounts.passwords import BUSY_RETRY_SECONDS, TooManyPasswordChecks
from app.review.access import (
    LOGIN_PATH,
    LOGOUT_PATH,
    Context,
    ReviewRoute,
    client_address,
    login_page,
    refusal,
    safe_next,
    too_many,
    with_session,
)
from app.review.auth import CSRF_COOKIE, SESSION_COOKIE
from app.review.rendering import NO_STORE

log = logging.getLogger(__name__)

FIELD_LIMIT = 1024      # longer form fields are cut: nothing legitimate is that long
FormField = Annotated[str, Form()]

router = APIRouter(route_class=ReviewRoute)


@router.get(LOGIN_PATH)
async def login_form(request: Request, context: Context,
                     next_path: Annotated[str | None, Query(alias="next")] = None) -> Response:
    auth = context.auth
    next_path = safe_next(next_path)
    refused = refusal(request, context, api=False)
    if refused is not None:
        return refused
    if auth.mode == "open" or auth.read_session(request.cookies.get(SESSION_COOKIE)):
        return RedirectResponse(next_path, status_code=303, headers=NO_STORE)
    return login_page(request, context, next_path=next_path, nonce=None)


@router.post(LOGIN_PATH)
async def sign_in(request: Request, context: Context, csrf: FormField = "",
                  next_path: Annotated[str, Form(alias="next")] = "", username: FormField = "",
                  password: FormField = "", token: FormField = "") -> Response:
    auth = context.auth
    refused = refusal(request, context, api=False)
    if refused is not None:
        return refused
    if auth.mode == "open":
        return RedirectResponse("/calls", status_code=303, headers=NO_STORE)
    csrf, username, password, token = (field[:FIELD_LIMIT] for field in (csrf, username, password, token))
    next_path = safe_next(next_path[:FIELD_LIMIT])
    client = client_address(request)
    wait = await auth.limiter.retry_after(client)
    if wait is not None:
        return too_many(request, context, wait, api=False)
    if not auth.check_csrf(csrf, request.cookies.get(CSRF_COOKIE)):
        return login_page(request, context, status=403, next_path=next_path, nonce=auth.new_csrf_nonce(),
                          error="Le formulaire a expiré ou n'a pas été envoyé depuis cette page. Réessayez.")
    reviewer = None
    if token:
        reviewer = auth.check_token(token)
    elif username or password:
        try:
            reviewer = await auth.check_password(username, password)
        except TooManyPasswordChecks:
            return too_many(request, context, BUSY_RETRY_SECONDS, api=False)
    wait = await (auth.limiter.failed(client) if reviewer is None else auth.limiter.succeeded(client))
    if wait is not None:
        return too_many(request, context, wait, api=False)
    if reviewer is None:
        log.warning("review: failed sign-in from %s", client)
        return login_page(request, context, status=401, next_path=next_path, nonce=None, username=username,
                          error="Identifiant, mot de passe ou jeton incorrect.")
    log.info("review: %s signed in from %s", reviewer.name, client)
    response = with_session(RedirectResponse(next_path, status_code=303, headers=NO_STORE), request, context,
                            reviewer)
    response.delete_cookie(CSRF_COOKIE, path=LOGIN_PATH)
    return response


@router.post(LOGOUT_PATH)
async def sign_out(request: Request, context: Context, csrf: FormField = "") -> Response:
    auth = context.auth
    reviewer = auth.read_session(request.cookies.get(SESSION_COOKIE))
    if reviewer is not None and not auth.check_form_token(reviewer, csrf):
        return context.pages.render("error.html", request, status=403, reviewer=reviewer, title="Requête refusée",
                                    message="La déconnexion n'a pas été demandée depuis cette page.")
    response = RedirectResponse(LOGIN_PATH if auth.mode == "signin" else "/calls", status_code=303,
                                headers=NO_STORE)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/review")
async def review_home() -> Response:
    return RedirectResponse("/calls", status_code=303)
