"""The call filters, the same everywhere as query parameters: ``text``, ``outcome``,
``date_from``, ``date_to`` (YYYY-MM-DD, inclusive, on the UTC start date), ``page``,
``per_page`` (API only; the pages show PAGE_SIZE calls). Problems are reported in French."""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import urlencode

from app.calllog.store_queries import FIRST_DAY, LAST_DAY
from app.calllog.views import CallQuery
from app.review.formatting import OUTCOMES

PAGE_SIZE = 25
MAX_PER_PAGE = 100
MAX_TEXT = 200


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
        day = dates[name]
        if day is not None and not FIRST_DAY <= day <= LAST_DAY:   # far dates overflow the search
            problems.append(f"date « {label} » hors limites (années {FIRST_DAY.year} à {LAST_DAY.year})")
            dates[name] = None
    page = positive_int(params.get("page"), 1, "page", problems)
    if per_page is None:
        per_page = min(positive_int(params.get("per_page"), PAGE_SIZE, "per_page", problems), MAX_PER_PAGE)
    query = CallQuery(text=text, outcome=outcome, date_from=dates["date_from"], date_to=dates["date_to"],
                      page=min(page, 1_000_000), per_page=per_page)
    form = {"text": text or "", "outcome": outcome or "",
            "date_from": dates["date_from"].isoformat() if dates["date_from"] else "",
            "date_to": dates["date_to"].isoformat() if dates["date_to"] else ""}
    return query, problems, form


def positive_int(raw: str | None, default: int, name: str, problems: list[str], *, limit: int | None = None) -> int:
    """A query parameter that must be a whole number from 1 (to `limit`); the default, with a
    French problem, otherwise."""
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1 or (limit is not None and value > limit):
        problems.append(f"{name} invalide : {raw}" + (f" (de 1 à {limit})" if limit is not None else ""))
        return default
    return value


def filters_url(path: str, form: dict[str, str], **extra: Any) -> str:
    params = {key: value for key, value in {**form, **extra}.items() if value not in ("", None)}
    return f"{path}?{urlencode(params)}" if params else path
