"""The review pages' templates and static files, and the headers every page is sent with."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from app.review.auth import ReviewAuth, Reviewer
from app.review.formatting import (
    FLAGS,
    OUTCOMES,
    clock,
    cost,
    duration,
    fr_int,
    fr_number,
    milliseconds,
    outcome_label,
    paris,
)

HERE = Path(__file__).parent
STATIC_PATH = "/review/static"
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
STATIC_FILES = {"review.css": "text/css; charset=utf-8", "review.js": "text/javascript; charset=utf-8",
                "dashboard.css": "text/css; charset=utf-8"}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    media_type: str
    version: str        # a digest of the body, in its URL so that browsers may cache it long


class Pages:
    """Renders the French pages; read once at start-up."""

    def __init__(self, auth: ReviewAuth) -> None:
        self.auth = auth
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                               trim_blocks=True, lstrip_blocks=True)
        self.static: dict[str, StaticFile] = {}
        for name, media_type in STATIC_FILES.items():
            body = (HERE / "static" / name).read_bytes()
            self.static[name] = StaticFile(body, media_type, hashlib.sha256(body).hexdigest()[:12])
        self.env.globals.update(static_url=self.static_url, outcomes=OUTCOMES, flags=FLAGS)
        self.env.filters.update(paris=paris, clock=clock, duration=duration, cost=cost, fr_number=fr_number,
                                fr_int=fr_int, ms=milliseconds, outcome_label=outcome_label)

    def static_url(self, name: str) -> str:
        return f"{STATIC_PATH}/{name}?v={self.static[name].version}"

    def render(self, name: str, request: Request, status: int = 200, reviewer: Reviewer | None = None,
               **context: Any) -> HTMLResponse:
        context.setdefault("open_access", self.auth.mode == "open")
        context["reviewer"] = reviewer
        context["form_csrf"] = self.auth.form_token(reviewer) if reviewer is not None else ""
        context["path"] = request.url.path
        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
