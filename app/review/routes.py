"""Reviewer pages over the call logs: list, one call, its recording, JSON and CSV.

Routes (all GET unless said):

* ``/calls`` list · ``/calls/{id}`` one call · ``/calls/{id}/recording.wav`` (Range requests)
* ``/calls.csv`` export of the current filter · ``/api/calls`` · ``/api/calls/{id}``
* ``/review/login`` (GET, POST) · ``/review/logout`` (POST) · ``/review/static/{name}``

Filters, the same everywhere as query parameters: ``text``, ``outcome``, ``date_from``,
``date_to`` (YYYY-MM-DD, inclusive, on the UTC start date), ``page``, ``per_page``
(API only; the pages show PAGE_SIZE calls). Access rules live in ``auth.py``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import inspect
import io
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from app.calllog.records import TurnRecorded
from app.calllog.views import (
    FLAG_ERROR,
    FLAG_INTERRUPTED,
    FLAG_NO_KNOWLEDGE,
    CallDetail,
    CallLogReader,
    CallQuery,
    CallSummary,
)
from app.config import Settings
from app.review.auth import CSRF_COOKIE, CSRF_SECONDS, SESSION_COOKIE, SESSION_SECONDS, Reviewer, ReviewAuth

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
PAGE_SIZE = 25
MAX_PER_PAGE = 100
CSV_BATCH = 200
MAX_TEXT = 200
LOGIN_PATH = "/review/login"
LOGOUT_PATH = "/review/logout"
STATIC_PATH = "/review/static"

OUTCOMES = {
    "caller_hung_up": "raccroché par l'appelant",
    "agent_ended": "terminé par OCTI",
    "transferred": "transféré",
    "error": "erreur",
    "timeout": "délai dépassé",
}
FLAGS = {FLAG_INTERRUPTED: "interrompu", FLAG_NO_KNOWLEDGE: "sans connaissance", FLAG_ERROR: "erreur"}
RETRIEVAL = {
    "ok": "passages trouvés",
    "empty": "aucun passage trouvé",
    "timeout": "délai de recherche dépassé",
    "error": "erreur de recherche",
    "cancelled": "recherche annulée",
    "unavailable": "base indisponible",
}
EVENTS = {
    "error": "erreur",
    "upstream_failure": "panne du modèle",
    "dtmf": "touche DTMF",
    "signature_refused": "signature refusée",
    "stream_error": "erreur du flux",
}
CSV_COLUMNS = ["id", "call_sid", "started_at", "caller", "duration_s", "turns", "barge_ins", "outcome",
               "cost_usd", "flags"]

try:
    PARIS: Any = ZoneInfo("Europe/Paris")
    PARIS_LABEL = ""
except ZoneInfoNotFoundError:  # no system tz database and no `tzdata` package
    log.warning("review: no time zone data for Europe/Paris; times are shown in UTC")
    PARIS, PARIS_LABEL = timezone.utc, " UTC"

ReaderProvider = Callable[[], Awaitable[CallLogReader | None] | CallLogReader | None] | CallLogReader

NO_STORE = {"Cache-Control": "no-store"}
PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
                               "media-src 'self'; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


# ---------------------------------------------------------------- formatting (French)

def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def paris(moment: datetime | None, fmt: str = "%d/%m/%Y %H:%M") -> str:
    return "—" if moment is None else _utc(moment).astimezone(PARIS).strftime(fmt) + PARIS_LABEL


def fr_number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    text = f"{value:,.{digits}f}".replace(",", "\u202f").replace(".", ",")
    return text


def fr_int(value: int | None) -> str:
    return "—" if value is None else f"{value:,d}".replace(",", "\u202f")


def clock(ms: float | None) -> str:
    """An offset on the call timeline as mm:ss (h:mm:ss past an hour)."""
    if ms is None:
        return "—"
    seconds = max(0, int(ms // 1000))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "en cours"
    total = int(round(seconds))
    minutes, rest = divmod(total, 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


UNKNOWN_COST = "coût inconnu"


def cost(usd: float | None) -> str:
    """A cost in dollars; None is a cost MODEL_PRICES could not price, never shown as $0."""
    if usd is None:
        return UNKNOWN_COST
    if 0 < usd < 0.005:
        return "< $0.01"
    return f"${usd:,.2f}"


def milliseconds(ms: float | None) -> str:
    return "—" if ms is None else f"{fr_int(int(round(ms)))} ms"


def outcome_label(outcome: str | None, summary: CallSummary | None = None) -> str:
    if outcome is None:
        return "en cours" if summary is not None and summary.duration_s is None else "—"
    return OUTCOMES.get(outcome, outcome)


# ---------------------------------------------------------------- query parameters

def _clean_text(value: str | None) -> str | None:
    value = (value or "").strip()[:MAX_TEXT]
    return value or None


def parse_query(params: Any, *, per_page: int | None = None) -> tuple[CallQuery, list[str], dict[str, str]]:
    """The CallQuery asked for, the French problems found, and the form's values to show back."""
    problems: list[str] = []
    text = _clean_text(params.get("text"))
    outcome = (params.get("outcome") or "").strip() or None
    if outcome is not None and outcome not in OUTCOMES:
        problems.append(f"issue inconnue : {outcome}")
        outcome = None
    dates: dict[str, date | None] = {}
    for name, label in (("date_from", "du"), ("date_to", "au")):
        raw = (params.get(name) or "").strip()
        try:
            dates[name] = date.fromisoformat(raw) if raw else None
        except ValueError:
            problems.append(f"date « {label} » invalide (attendu AAAA-MM-JJ)")
            dates[name] = None
    page = _positive(params.get("page"), 1, "page", problems)
    if per_page is None:
        per_page = min(_positive(params.get("per_page"), PAGE_SIZE, "per_page", problems), MAX_PER_PAGE)
    query = CallQuery(text=text, outcome=outcome, date_from=dates["date_from"], date_to=dates["date_to"],
                      page=min(page, 1_000_000), per_page=per_page)
    form = {"text": text or "", "outcome": outcome or "",
            "date_from": dates["date_from"].isoformat() if dates["date_from"] else "",
            "date_to": dates["date_to"].isoformat() if dates["date_to"] else ""}
    return query, problems, form


def _positive(raw: str | None, default: int, name: str, problems: list[str]) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        problems.append(f"{name} invalide : {raw}")
        return default
    return value


def _filters_url(path: str, form: dict[str, str], **extra: Any) -> str:
    params = {key: value for key, value in {**form, **extra}.items() if value not in ("", None)}
    return f"{path}?{urlencode(params)}" if params else path


# ---------------------------------------------------------------- JSON

def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "kind"}
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _summary_json(summary: CallSummary) -> dict[str, Any]:
    return {**jsonable(summary), "url": f"/calls/{summary.id}"}


# ---------------------------------------------------------------- CSV

def _csv_cell(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula is prefixed with a quote (OWASP)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_row(summary: CallSummary) -> list[Any]:
    return [_csv_cell(value) for value in (
        summary.id, summary.call_sid, _utc(summary.started_at).isoformat(), summary.caller_masked,
        "" if summary.duration_s is None else round(summary.duration_s, 3), summary.turns, summary.barge_ins,
        summary.outcome or "", "" if summary.cost_usd is None else round(summary.cost_usd, 6), "|".join(summary.flags),
    )]


def _csv_text(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


# ---------------------------------------------------------------- the call page's model

@dataclasses.dataclass
class TurnView:
    turn: TurnRecorded
    end_ms: float | None      # end_ms, or the next turn's start when unknown

    @property
    def role_label(self) -> str:
        return "Appelant" if self.turn.role == "caller" else "OCTI"

    @property
    def interrupted_label(self) -> str | None:
        if not self.turn.interrupted:
            return None
        if self.turn.heard_ms is None:
            return "interrompu"
        return f"interrompu après {fr_number(self.turn.heard_ms / 1000, 1)} s"

    @property
    def retrieval_label(self) -> str | None:
        outcome = self.turn.retrieval_outcome
        if outcome is None:
            return None
        if outcome == "ok" and not self.turn.passages:
            return RETRIEVAL["empty"]
        return RETRIEVAL.get(outcome, outcome)

    @property
    def has_latency(self) -> bool:
        return self.turn.role == "assistant" and (self.turn.speech_end_to_model_audio_ms is not None
                                                  or self.turn.model_audio_to_caller_ms is not None)

    @property
    def total_latency_ms(self) -> float | None:
        a, b = self.turn.speech_end_to_model_audio_ms, self.turn.model_audio_to_caller_ms
        return None if a is None or b is None else a + b


def turn_views(turns: list[TurnRecorded]) -> list[TurnView]:
    ordered = sorted(turns, key=lambda turn: turn.index)
    views = []
    for position, turn in enumerate(ordered):
        end = turn.end_ms
        if end is None and turn.start_ms is not None:
            later = [t.start_ms for t in ordered[position + 1:]
                     if t.start_ms is not None and t.start_ms > turn.start_ms]
            end = later[0] if later else None
        views.append(TurnView(turn, end))
    return views


def event_views(detail: CallDetail) -> list[dict[str, Any]]:
    start = _utc(detail.summary.started_at)
    views = []
    for event in sorted(detail.events, key=lambda e: _utc(e.at)):
        offset = (_utc(event.at) - start).total_seconds() * 1000
        views.append({"time": paris(event.at, "%H:%M:%S"), "offset": clock(offset) if offset >= 0 else "—",
                      "type": EVENTS.get(event.type, event.type), "code": event.type, "detail": event.detail})
    return views


# ---------------------------------------------------------------- the router

def _client(request: Request) -> str:
    return request.client.host if request.client else "inconnu"


def _safe_next(target: str | None) -> str:
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/calls"
    return target


def _is_https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


class _Pages:
    """Templates, static files and the shared bits of every response."""

    def __init__(self, auth: ReviewAuth) -> None:
        self.auth = auth
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                               trim_blocks=True, lstrip_blocks=True)
        self.static: dict[str, tuple[bytes, str, str]] = {}
        for name, media in (("review.css", "text/css; charset=utf-8"),
                            ("review.js", "text/javascript; charset=utf-8")):
            body = (HERE / "static" / name).read_bytes()
            self.static[name] = (body, media, hashlib.sha256(body).hexdigest()[:12])
        self.env.globals.update(static_url=self.static_url, outcomes=OUTCOMES, flags=FLAGS)
        self.env.filters.update(paris=paris, clock=clock, duration=duration, cost=cost, fr_number=fr_number,
                                fr_int=fr_int, ms=milliseconds, outcome_label=outcome_label)

    def static_url(self, name: str) -> str:
        return f"{STATIC_PATH}/{name}?v={self.static[name][2]}"

    def render(self, name: str, request: Request, status: int = 200, reviewer: Reviewer | None = None,
               **context: Any) -> HTMLResponse:
        context.setdefault("open_access", self.auth.mode == "open")
        context["reviewer"] = reviewer
        context["logout_csrf"] = (self.auth.logout_token(reviewer)
                                  if reviewer is not None and reviewer.via != "local" else "")
        context["path"] = request.url.path
        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def build_review_router(reader_provider: ReaderProvider, settings: Settings, *,
                        auth: ReviewAuth | None = None) -> APIRouter:
    """The reviewer routes. `reader_provider` is the CallLogReader itself, or a (sync or async)
    callable returning it, or None while the call log is unavailable."""
    auth = auth or ReviewAuth(settings)
    pages = _Pages(auth)
    router = APIRouter(include_in_schema=False)

    async def reader() -> CallLogReader | None:
        if reader_provider is None or hasattr(reader_provider, "list_calls"):
            return reader_provider  # type: ignore[return-value]
        value = reader_provider()  # type: ignore[operator]
        if inspect.isawaitable(value):
            value = await value
        return value

    # -- access

    def disabled(request: Request, api: bool) -> Response:
        if api:
            return JSONResponse({"detail": "pages de relecture désactivées : aucun identifiant configuré"},
                                status_code=404, headers=NO_STORE)
        return pages.render("disabled.html", request, status=404, problem=auth.problem, open_access=False)

    def set_session(response: Response, request: Request, reviewer: Reviewer) -> Response:
        response.set_cookie(SESSION_COOKIE, auth.issue_session(reviewer), max_age=SESSION_SECONDS, path="/",
                            httponly=True, samesite="lax", secure=_is_https(request))
        return response

    def too_many(request: Request, wait: int, api: bool) -> Response:
        headers = {**NO_STORE, "Retry-After": str(wait)}
        message = f"Trop de tentatives de connexion. Réessayez dans {math.ceil(wait / 60)} min."
        if api:
            return JSONResponse({"detail": message}, status_code=429, headers=headers)
        response = login_page(request, status=429, error=message, next_path="/calls", nonce=None)
        response.headers.update(headers)
        return response

    async def access(request: Request, *, api: bool) -> Reviewer | Response:
        """The reviewer, or the response to send instead (disabled, sign-in, 401, 429)."""
        if auth.mode == "disabled":
            return disabled(request, api)
        if auth.mode == "open":
            return Reviewer("local", "local")
        reviewer = auth.read_session(request.cookies.get(SESSION_COOKIE))
        if reviewer is not None:
            return reviewer
        header = request.headers.get("authorization", "")
        bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
        in_query = request.query_params.get("token")
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        target = request.url.path + (f"?{urlencode(rest)}" if rest else "")  # the token never travels on
        if bearer is not None or in_query is not None:
            client = _client(request)
            wait = auth.limiter.retry_after(client)
            if wait is not None:
                return too_many(request, wait, api)
            reviewer = auth.check_token(bearer if bearer is not None else in_query)
            if reviewer is None:
                auth.limiter.failed(client)
                log.warning("review: wrong token from %s", client)
            elif in_query is not None and bearer is None and request.method in ("GET", "HEAD"):
                # Trade the token in the address for a session cookie, and drop it from the address.
                return set_session(RedirectResponse(target, status_code=303, headers=NO_STORE), request, reviewer)
            else:
                return reviewer
        if api:
            return JSONResponse({"detail": "authentification requise"}, status_code=401,
                                headers={**NO_STORE, "WWW-Authenticate": 'Bearer realm="octi-review"'})
        return RedirectResponse(f"{LOGIN_PATH}?{urlencode({'next': target})}", status_code=303, headers=NO_STORE)

    def unavailable(request: Request, reviewer: Reviewer, api: bool) -> Response:
        if api:
            return JSONResponse({"detail": "journal des appels indisponible"}, status_code=503, headers=NO_STORE)
        return pages.render("error.html", request, status=503, reviewer=reviewer,
                            title="Journal indisponible",
                            message="Le journal des appels est indisponible pour le moment. Réessayez plus tard.")

    def not_found(request: Request, reviewer: Reviewer, api: bool) -> Response:
        if api:
            return JSONResponse({"detail": "appel introuvable"}, status_code=404, headers=NO_STORE)
        return pages.render("error.html", request, status=404, reviewer=reviewer, title="Appel introuvable",
                            message="Cet appel n'existe pas (ou plus) dans le journal.")

    async def list_calls(query: CallQuery) -> tuple[list[CallSummary], int] | None:
        store = await reader()
        if store is None:
            return None
        try:
            return await store.list_calls(query)
        except Exception:
            log.exception("review: listing calls failed")
            return None

    async def get_call(call_id: str) -> tuple[CallDetail | None, Path | None] | None:
        """(detail, recording) — (None, None) for an unknown id — or None when the log is unavailable."""
        if not call_id.isdigit() or len(call_id) > 18:
            return None, None
        store = await reader()
        if store is None:
            return None
        try:
            detail = await store.get_call(int(call_id))
            recording = await store.recording_path(int(call_id)) if detail and detail.summary.recorded else None
        except Exception:
            log.exception("review: reading call %s failed", call_id)
            return None
        return detail, recording

    # -- sign-in

    def login_page(request: Request, *, status: int = 200, error: str | None = None, next_path: str,
                   nonce: str | None, username: str = "") -> HTMLResponse:
        nonce = nonce or request.cookies.get(CSRF_COOKIE) or auth.new_csrf_nonce()
        response = pages.render("login.html", request, status=status, error=error, next_path=next_path,
                                csrf=auth.csrf_token(nonce), username=username,
                                password_enabled=auth.password_enabled, token_enabled=auth.token_enabled)
        response.set_cookie(CSRF_COOKIE, nonce, max_age=CSRF_SECONDS, path=LOGIN_PATH, httponly=True,
                            samesite="strict", secure=_is_https(request))
        return response

    @router.get(LOGIN_PATH)
    async def login_form(request: Request) -> Response:
        next_path = _safe_next(request.query_params.get("next"))
        if auth.mode == "disabled":
            return disabled(request, api=False)
        if auth.mode == "open" or auth.read_session(request.cookies.get(SESSION_COOKIE)):
            return RedirectResponse(next_path, status_code=303, headers=NO_STORE)
        return login_page(request, next_path=next_path, nonce=None)

    @router.post(LOGIN_PATH)
    async def login(request: Request) -> Response:
        if auth.mode == "disabled":
            return disabled(request, api=False)
        if auth.mode == "open":
            return RedirectResponse("/calls", status_code=303, headers=NO_STORE)
        form = await request.form()
        field = lambda name: str(form.get(name) or "")[:1024]  # noqa: E731
        next_path = _safe_next(field("next"))
        client = _client(request)
        wait = auth.limiter.retry_after(client)
        if wait is not None:
            return too_many(request, wait, api=False)
        if not auth.check_csrf(field("csrf"), request.cookies.get(CSRF_COOKIE)):
            return login_page(request, status=403, next_path=next_path, nonce=auth.new_csrf_nonce(),
                              error="Le formulaire a expiré ou n'a pas été envoyé depuis cette page. Réessayez.")
        reviewer = None
        if field("token"):
            reviewer = auth.check_token(field("token"))
        elif field("username") or field("password"):
            reviewer = await auth.check_password(field("username"), field("password"))
        if reviewer is None:
            auth.limiter.failed(client)
            log.warning("review: failed sign-in from %s", client)
            return login_page(request, status=401, next_path=next_path, nonce=None, username=field("username"),
                              error="Identifiant, mot de passe ou jeton incorrect.")
        auth.limiter.succeeded(client)
        log.info("review: %s signed in from %s", reviewer.name, client)
        response = set_session(RedirectResponse(next_path, status_code=303, headers=NO_STORE), request, reviewer)
        response.delete_cookie(CSRF_COOKIE, path=LOGIN_PATH)
        return response

    @router.post(LOGOUT_PATH)
    async def logout(request: Request) -> Response:
        reviewer = auth.read_session(request.cookies.get(SESSION_COOKIE))
        form = await request.form()
        if reviewer is not None and not auth.check_logout(reviewer, str(form.get("csrf") or "")):
            return pages.render("error.html", request, status=403, reviewer=reviewer, title="Requête refusée",
                                message="La déconnexion n'a pas été demandée depuis cette page.")
        response = RedirectResponse(LOGIN_PATH if auth.mode == "signin" else "/calls", status_code=303,
                                    headers=NO_STORE)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @router.get("/review")
    async def review_home() -> Response:
        return RedirectResponse("/calls", status_code=303)

    @router.get(STATIC_PATH + "/{name}")
    async def static(name: str) -> Response:
        if name not in pages.static:
            return Response("introuvable", status_code=404, media_type="text/plain; charset=utf-8")
        body, media, _ = pages.static[name]
        return Response(body, media_type=media, headers={"Cache-Control": "public, max-age=86400",
                                                         "X-Content-Type-Options": "nosniff"})

    # -- pages

    @router.get("/calls")
    async def calls_page(request: Request) -> Response:
        who = await access(request, api=False)
        if isinstance(who, Response):
            return who
        query, problems, form = parse_query(request.query_params, per_page=PAGE_SIZE)
        found = await list_calls(query)
        if found is None:
            return unavailable(request, who, api=False)
        items, total = found
        pages_count = max(1, math.ceil(total / query.per_page))
        return pages.render(
            "calls.html", request, reviewer=who, items=items, total=total, page=query.page, pages=pages_count,
            problems=problems, form=form, filtered=any(form.values()),
            prev_url=_filters_url("/calls", form, page=query.page - 1) if query.page > 1 else None,
            next_url=_filters_url("/calls", form, page=query.page + 1) if query.page < pages_count else None,
            first_url=_filters_url("/calls", form) if query.page > pages_count else None,
            csv_url=_filters_url("/calls.csv", form),
        )

    @router.get("/calls.csv")
    async def calls_csv(request: Request) -> Response:
        who = await access(request, api=True)
        if isinstance(who, Response):
            return who
        query, problems, _ = parse_query(request.query_params, per_page=CSV_BATCH)
        if problems:
            return JSONResponse({"detail": problems}, status_code=400, headers=NO_STORE)
        query = dataclasses.replace(query, page=1)
        first = await list_calls(query)
        if first is None:
            return unavailable(request, who, api=True)

        async def rows() -> AsyncIterator[bytes]:
            items, total = first
            yield ("\ufeff" + _csv_text([CSV_COLUMNS] + [_csv_row(s) for s in items])).encode("utf-8")
            sent, page = len(items), 1
            while items and sent < total:
                page += 1
                found = await list_calls(dataclasses.replace(query, page=page))
                if found is None:  # the log went away mid-export: the file ends here
                    break
                items = found[0]
                sent += len(items)
                yield _csv_text([_csv_row(s) for s in items]).encode("utf-8")

        stamp = datetime.now(PARIS).strftime("%Y%m%d-%H%M")
        return StreamingResponse(rows(), media_type="text/csv; charset=utf-8", headers={
            **NO_STORE, "Content-Disposition": f'attachment; filename="appels-octi-{stamp}.csv"',
            "X-Content-Type-Options": "nosniff"})

    @router.get("/calls/{call_id}")
    async def call_page(request: Request, call_id: str) -> Response:
        who = await access(request, api=False)
        if isinstance(who, Response):
            return who
        found = await get_call(call_id)
        if found is None:
            return unavailable(request, who, api=False)
        detail, recording = found
        if detail is None:
            return not_found(request, who, api=False)
        return pages.render("call.html", request, reviewer=who, call=detail, summary=detail.summary,
                            turns=turn_views(detail.turns), events=event_views(detail),
                            recording_url=f"/calls/{detail.summary.id}/recording.wav" if recording else None,
                            back_url=request.headers.get("referer") if _same_list(request) else "/calls")

    def _same_list(request: Request) -> bool:
        referer = request.headers.get("referer", "")
        return referer.startswith(f"{request.url.scheme}://{request.url.netloc}/calls?")

    @router.api_route("/calls/{call_id}/recording.wav", methods=["GET", "HEAD"])
    async def recording(request: Request, call_id: str) -> Response:
        who = await access(request, api=True)
        if isinstance(who, Response):
            return who
        missing = JSONResponse({"detail": "enregistrement introuvable"}, status_code=404, headers=NO_STORE)
        if not call_id.isdigit() or len(call_id) > 18:
            return missing
        store = await reader()
        if store is None:
            return unavailable(request, who, api=True)
        try:  # only the path: the player sends many Range requests while seeking
            path = await store.recording_path(int(call_id))
        except Exception:
            log.exception("review: finding the recording of call %s failed", call_id)
            return unavailable(request, who, api=True)
        if path is None or not await anyio.Path(path).is_file():
            return missing
        return FileResponse(path, media_type="audio/wav", content_disposition_type="inline",
                            filename=f"appel-{int(call_id)}.wav",
                            headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"})

    # -- JSON

    @router.get("/api/calls")
    async def api_calls(request: Request) -> Response:
        who = await access(request, api=True)
        if isinstance(who, Response):
            return who
        query, problems, _ = parse_query(request.query_params)
        if problems:
            return JSONResponse({"detail": problems}, status_code=400, headers=NO_STORE)
        found = await list_calls(query)
        if found is None:
            return unavailable(request, who, api=True)
        items, total = found
        return JSONResponse({"items": [_summary_json(s) for s in items], "total": total, "page": query.page,
                             "per_page": query.per_page}, headers=NO_STORE)

    @router.get("/api/calls/{call_id}")
    async def api_call(request: Request, call_id: str) -> Response:
        who = await access(request, api=True)
        if isinstance(who, Response):
            return who
        found = await get_call(call_id)
        if found is None:
            return unavailable(request, who, api=True)
        detail, recording_path = found
        if detail is None:
            return not_found(request, who, api=True)
        body = jsonable(detail)
        body["summary"] = _summary_json(detail.summary)
        body["recording_url"] = f"/calls/{detail.summary.id}/recording.wav" if recording_path else None
        return JSONResponse(body, headers=NO_STORE)

    return router
