"""The review's edges, over HTTP: call ids and dates that are not what they seem, who may read
the pages when the service is exposed (ngrok forwards to 127.0.0.1), per-browser form tokens
on open pages, and the dashboard's latencies computed by the database."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.calllog.records import CallRecord
from app.calllog.store import CallLogStore
from app.config import Settings
from app.review import build_review_router
from app.review.auth import LOCAL_COOKIE
from app.review.kpi_figures import nearest_rank
from tests.test_calllog_store import database_url, pg_url  # noqa: F401  (the two-database fixtures)
from tests.test_review_dashboard import ASK, answer, conversation
from tests.test_review_pages import (
    TOKEN,
    FakeReader,
    client,
    csrf_of,
    make_app,
    review_settings,
    sample_calls,
    signin_settings,
    voicemail_call,
)

SQUARED = "%C2%B2"            # "²": a digit to str.isdigit, not to int
PAST_INT32 = str(2**31)       # past PostgreSQL's INTEGER, the ids' type
BEARER = {"Authorization": f"Bearer {TOKEN}"}
PROXIED = [{"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9;proto=https"},
           {"X-Forwarded-Host": "octi.ngrok-free.app"}, {"X-Real-IP": "203.0.113.9"}]


class FakeCallBacks:
    """The phone line's call-backs, as the review sees them."""

    def __init__(self) -> None:
        self.placed: list[tuple[str, str]] = []

    async def place(self, to: str, question: str = "", *, about_call_sid: str | None = None) -> str:
        self.placed.append((to, question))
        return "CA" + "7" * 32


def app_with_call_backs(reader: Any, settings: Settings, call_backs: FakeCallBacks) -> FastAPI:
    app = FastAPI()
    app.include_router(build_review_router(reader, settings, call_backs=call_backs))  # type: ignore[arg-type]
    return app


def open_settings(**overrides: Any) -> Settings:
    """Loopback, no credentials, no PUBLIC_BASE_URL: the open pages of local development."""
    return review_settings(host="127.0.0.1", **overrides)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[CallLogStore]:  # noqa: F811
    opened = await CallLogStore.open(database_url)
    await opened.apply(conversation("CA-1", datetime(2025, 11, 20, 8, tzinfo=UTC), channel="twilio", who="n1",
                                    outcome="caller_hung_up", cost=0.1, turns=[ASK, answer(400, 20)]))
    yield opened
    await opened.close()


# ---------------------------------------------------------------- call ids

async def test_a_call_id_that_is_no_plain_number_is_404_everywhere():
    reader = FakeReader(sample_calls())
    async with client(make_app(reader, open_settings()), ip="127.0.0.1") as http:
        page = await http.get(f"/calls/{SQUARED}")
        assert page.status_code == 404 and "Appel introuvable" in page.text
        api = await http.get(f"/api/calls/{SQUARED}")
        assert api.status_code == 404 and api.json() == {"detail": "appel introuvable"}
        wav = await http.get(f"/calls/{SQUARED}/recording.wav")
        assert wav.status_code == 404 and wav.json() == {"detail": "enregistrement introuvable"}
        for call_id in (PAST_INT32, "0", "９"):     # past the ids, no id, a full-width digit
            assert (await http.get(f"/api/calls/{call_id}")).status_code == 404, call_id
        assert (await http.get("/api/calls/1")).status_code == 200


async def test_a_call_back_about_a_call_id_that_is_no_plain_number_is_not_found():
    call_backs = FakeCallBacks()
    reader = FakeReader([voicemail_call("+33612345678")])
    async with client(app_with_call_backs(reader, signin_settings(), call_backs)) as http:
        for call_id in ("²", PAST_INT32, 2**40):
            refused = await http.post("/api/calls/outbound", json={"call_id": call_id}, headers=BEARER)
            assert refused.status_code == 404 and refused.json()["code"] == "not_found", call_id
        from_form = await http.post("/api/calls/outbound", data={"call_id": "²"}, headers=BEARER)
        assert from_form.status_code == 303 and from_form.headers["location"] == "/calls?rappel=not_found"
    assert call_backs.placed == []


async def test_ids_past_the_database_integer_are_404_not_an_unavailable_log(store, caplog):
    caplog.set_level(logging.ERROR)
    async with client(make_app(store, open_settings()), ip="127.0.0.1") as http:
        assert (await http.get(f"/api/calls/{PAST_INT32}")).status_code == 404
        assert (await http.get(f"/calls/{PAST_INT32}")).status_code == 404
        assert (await http.get(f"/calls/{PAST_INT32}/recording.wav")).status_code == 404
        assert (await http.get("/api/calls/1")).json()["summary"]["call_sid"] == "CA-1"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# ---------------------------------------------------------------- dates

async def test_a_date_past_the_calendar_is_refused_in_french_not_an_unavailable_log(store, caplog):
    caplog.set_level(logging.ERROR)
    async with client(make_app(store, open_settings()), ip="127.0.0.1") as http:
        page = await http.get("/calls", params={"date_to": "9999-12-31"})
        api = await http.get("/api/calls", params={"date_to": "9999-12-31"})
        early = await http.get("/api/calls", params={"date_from": "0001-01-01"})
        csv = await http.get("/calls.csv", params={"date_to": "9999-12-31"})
        fine = await http.get("/api/calls", params={"date_to": "2999-12-31"})
    assert page.status_code == 200 and "Journal indisponible" not in page.text
    assert "date « au » hors limites (années 2000 à 2999)" in page.text
    assert "+336••••••00" in page.text        # the list still shows, without that filter
    assert api.status_code == 400 and api.json() == {"detail": ["date « au » hors limites (années 2000 à 2999)"]}
    assert early.status_code == 400 and early.json()["detail"] == ["date « du » hors limites (années 2000 à 2999)"]
    assert csv.status_code == 400
    assert fine.status_code == 200 and fine.json()["total"] == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# ---------------------------------------------------------------- exposed without credentials

async def test_a_loopback_service_with_a_public_url_keeps_the_review_closed(caplog):
    caplog.set_level(logging.WARNING, logger="app.review.auth")
    reader = FakeReader(sample_calls())
    app = make_app(reader, open_settings(public_base_url="https://octi.ngrok-free.app"))
    warnings = [r.getMessage() for r in caplog.records if "PUBLIC_BASE_URL" in r.getMessage()]
    assert len(warnings) == 1 and "REVIEW_USERNAME" in warnings[0]
    async with client(app, ip="127.0.0.1") as http:
        page = await http.get("/calls")
        assert page.status_code == 403 and "Relecture des appels fermée" in page.text
        assert "octi review hash-password" in page.text  # how to open it
        assert "REVIEW_USERNAME" in page.text and "REVIEW_PASSWORD" in page.text
        assert "accès local sans authentification" not in page.text
        for path in ("/api/calls", "/api/calls/1", "/calls.csv", "/calls/1/recording.wav", "/api/tableau-de-bord"):
            response = await http.get(path)
            assert response.status_code == 403, path
            assert response.json()["code"] == "review_closed" and "REVIEW_USERNAME" in response.json()["detail"]
        assert (await http.get("/calls/1")).status_code == 403
        assert (await http.get("/tableau-de-bord")).status_code == 403
        assert (await http.get("/review/login")).status_code == 403
        assert (await http.post("/review/login", data={"username": "x"})).status_code == 403
        assert (await http.post("/api/calls/outbound", json={"call_id": 1})).status_code == 403
    assert reader.queries == []


@pytest.mark.parametrize("headers", PROXIED, ids=lambda headers: next(iter(headers)))
async def test_open_pages_refuse_a_request_that_came_through_a_tunnel(headers):
    reader = FakeReader(sample_calls())
    async with client(make_app(reader, open_settings()), ip="127.0.0.1") as http:
        page = await http.get("/calls", headers=headers)
        api = await http.get("/api/calls/1", headers=headers)
        wav = await http.get("/calls/1/recording.wav", headers=headers)
        login = await http.get("/review/login", headers=headers)
        local = await http.get("/api/calls")
    assert page.status_code == 403 and "Relecture des appels fermée" in page.text
    assert api.status_code == 403 and api.json()["code"] == "review_closed"
    assert wav.status_code == 403 and login.status_code == 403
    assert local.status_code == 200 and local.json()["total"] == 32     # from this machine, still open


async def test_credentials_open_the_review_behind_a_public_url():
    reader = FakeReader(sample_calls())
    async with client(make_app(reader, signin_settings(host="127.0.0.1",
                                                       public_base_url="https://octi.ngrok-free.app"))) as http:
        response = await http.get("/api/calls/1", headers={**BEARER, **PROXIED[0]})
    assert response.status_code == 200 and response.json()["summary"]["id"] == 1


# ---------------------------------------------------------------- open pages' form tokens

async def test_open_pages_give_each_browser_a_form_token_of_its_own():
    call_backs = FakeCallBacks()
    reader = FakeReader([voicemail_call("+33612345678")])
    app = app_with_call_backs(reader, open_settings(), call_backs)
    async with client(app, ip="127.0.0.1") as first, client(app, ip="127.0.0.1") as second:
        first_page = await first.get("/calls/40")
        first_token = csrf_of(first_page.text[first_page.text.index('id="call-back"'):])
        second_page = await second.get("/calls/40")
        second_token = csrf_of(second_page.text[second_page.text.index('id="call-back"'):])
        assert LOCAL_COOKIE in first_page.cookies and LOCAL_COOKIE in second_page.cookies
        assert first_token != second_token
        # The same browser keeps its token from page to page.
        again = await first.get("/calls/40")
        assert csrf_of(again.text[again.text.index('id="call-back"'):]) == first_token
        stolen = await second.post("/api/calls/outbound", data={"call_id": "40", "csrf": first_token})
        stolen_json = await second.post("/api/calls/outbound", json={"call_id": 40},
                                        headers={"X-CSRF-Token": first_token})
        assert stolen.status_code == 403 and "Requête refusée" in stolen.text
        assert stolen_json.status_code == 403 and stolen_json.json()["code"] == "csrf"
        assert call_backs.placed == []
        placed = await first.post("/api/calls/outbound", data={"call_id": "40", "csrf": first_token})
        assert placed.status_code == 303 and placed.headers["location"] == "/calls/40?rappel=placed"
        placed_json = await second.post("/api/calls/outbound", json={"call_id": 40},
                                        headers={"X-CSRF-Token": second_token})
        assert placed_json.status_code == 201
    assert len(call_backs.placed) == 2
    # Without its cookie, a token is worth nothing.
    async with client(app, ip="127.0.0.1") as stranger:
        refused = await stranger.post("/api/calls/outbound", json={"call_id": 40},
                                      headers={"X-CSRF-Token": first_token})
    assert refused.status_code == 403


# ---------------------------------------------------------------- the dashboard's latencies

def many_answers(count: int, seed: int = 11) -> tuple[list[CallRecord], dict[str, list[float]]]:
    """Calls on 2025-11-20 and 21 (Paris days), phone and web, `count` answers in all with ties
    and unknown caller-side delays; and each (day, channel group)'s latencies as the service
    counts them (model + caller side)."""
    rnd = random.Random(seed)
    records: list[CallRecord] = []
    expected: dict[str, list[float]] = {}
    for index in range(count // 4):
        day = 20 + index % 2
        channel = "web" if index % 3 == 0 else "twilio"
        turns = [ASK]
        for _ in range(4):
            to_model = rnd.choice([float(rnd.randrange(100, 900, 50)), round(rnd.uniform(50, 3000), 3)])
            to_caller = rnd.choice([None, round(rnd.uniform(0, 80), 3)])
            turns += [answer(to_model, to_caller), ASK]
            latency = to_model + (to_caller or 0.0)
            for key in (f"{day}/{channel}", f"{day}/all"):
                expected.setdefault(key, []).append(latency)
        at = datetime(2025, 11, day, 9, tzinfo=UTC) + timedelta(seconds=index)
        records += conversation(f"CA-{index}", at, channel=channel, who=f"n{index % 7}", outcome="caller_hung_up",
                                cost=0.01, turns=turns)
    return records, expected


class RowsCounter:
    """Counts the rows every Session query hands back, while installed."""

    def __init__(self) -> None:
        self.rows = 0

    def __call__(self, state: Any) -> Any:
        frozen = state.invoke_statement().freeze()
        self.rows += len(frozen.data)
        return frozen()


async def test_the_dashboard_latencies_come_from_the_database_as_figures(database_url):  # noqa: F811
    records, expected = many_answers(1600)
    store = await CallLogStore.open(database_url)
    counter = RowsCounter()
    try:
        await store.apply(records)
        event.listen(Session, "do_orm_execute", counter)
        try:
            async with client(make_app(store, open_settings()), ip="127.0.0.1") as http:
                body = (await http.get("/api/tableau-de-bord", params={"end": "2025-11-30"})).json()
        finally:
            event.remove(Session, "do_orm_execute", counter)
    finally:
        await store.close()
    days = {period["period"]: period["channels"] for period in body["days"]["periods"]}
    names = {"twilio": "phone", "web": "web", "all": "all"}
    for key, latencies in expected.items():
        day, group = key.split("/")
        found = days[f"2025-11-{day}"][names[group]]
        assert (found["answers"], found["latency_p50_ms"], found["latency_p95_ms"]) == (
            len(latencies), nearest_rank(latencies, 50), nearest_rank(latencies, 95)), key
    whole = body["days"]["whole"]["channels"]["all"]
    every = [value for key, values in expected.items() if key.endswith("/all") for value in values]
    assert (whole["answers"], whole["latency_p95_ms"]) == (1600, nearest_rank(every, 95))
    # A few rows per period and channel group, not one per answer (which stalled the event loop).
    assert counter.rows < 400, counter.rows
