"""The reviewer pages over HTTP (httpx against the ASGI app), with an in-memory call log.

The CallLogReader is the pages' boundary: `FakeReader` implements it over a few calls so
that what the pages ask (CallQuery) and what they show can both be checked.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
import struct
import tempfile
import wave
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from itsdangerous import base64_decode, base64_encode
from pwdlib.hashers.argon2 import Argon2Hasher

from app.calllog.records import CallEvent, PassageUsed, TurnRecorded
from app.calllog.views import FLAG_ERROR, FLAG_INTERRUPTED, FLAG_NO_KNOWLEDGE, CallDetail, CallQuery, CallSummary
from app.config import Settings
from app.review import build_review_router, call_api, formatting
from app.review.auth import CSRF_COOKIE, SESSION_COOKIE, SESSION_SECONDS, ReviewAuth, Reviewer
from app.review.limiter import MAX_FAILURES

USER, PASSWORD, TOKEN = "alice", "correct horse battery", "tok-0123456789abcdefghijklmnopqrstuv"
# An argon2id hash as `octi review hash-password` prints, with tiny costs to keep the tests fast.
CHEAP_ARGON2 = Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD_HASH = CHEAP_ARGON2.hash(PASSWORD)
SCRIPT = "<script>alert('x')</script>"


# ---------------------------------------------------------------- the fake call log

class FakeReader:
    """CallLogReader over a list of CallDetail; records every query it answers."""

    def __init__(self, calls: list[CallDetail], recordings: dict[int, Path] | None = None) -> None:
        self.calls = {call.summary.id: call for call in calls}
        self.recordings = recordings or {}
        self.queries: list[CallQuery] = []

    async def list_calls(self, query: CallQuery) -> tuple[list[CallSummary], int]:
        self.queries.append(query)
        matching = []
        for call in sorted(self.calls.values(), key=lambda c: c.summary.started_at, reverse=True):
            day = call.summary.started_at.date()
            if query.text and not any(query.text.casefold() in t.text.casefold() for t in call.turns):
                continue
            if query.outcome and call.summary.outcome != query.outcome:
                continue
            if (query.date_from and day < query.date_from) or (query.date_to and day > query.date_to):
                continue
            matching.append(call.summary)
        start = (query.page - 1) * query.per_page
        return matching[start:start + query.per_page], len(matching)

    async def get_call(self, call_id: int) -> CallDetail | None:
        return self.calls.get(call_id)

    async def recording_path(self, call_id: int) -> Path | None:
        path = self.recordings.get(call_id)
        return path if path is not None and path.exists() else None


def turn(sid: str, index: int, role: str, text: str, start: float | None, end: float | None, **more) -> TurnRecorded:
    return TurnRecorded(call_sid=sid, index=index, role=role, text=text, start_ms=start, end_ms=end, **more)


def detail(summary: CallSummary, turns: list[TurnRecorded] = (), events: list[CallEvent] = ()) -> CallDetail:
    return CallDetail(
        summary=summary, stream_sid=f"MZ{summary.id:032d}", called="+33198765432", caller_hash="h" * 16,
        channel="twilio", codec="pcmu", model="gpt-realtime", rag_mode="inject",
        answered_at=summary.started_at + timedelta(seconds=1),
        ended_at=None if summary.duration_s is None else summary.started_at + timedelta(seconds=summary.duration_s),
        input_tokens=1234, output_tokens=567, input_audio_tokens=1000, output_audio_tokens=500, cached_tokens=200,
        turns=list(turns), events=list(events),
    )


# The recorded call's timeline (ms), shared with the browser test and the WAV.
RECORDED_TURNS = [(0, "caller", 200, 1500), (1, "assistant", 1800, 3400), (2, "caller", 3700, 4600),
                  (3, "assistant", 4900, 6200)]


def sample_calls() -> list[CallDetail]:
    """Call 1: recorded, with passages, latencies and a barge-in. Call 2: hostile text. 3–32: filler."""
    t0 = datetime(2025, 7, 14, 12, 0, tzinfo=timezone.utc)  # 14:00 in Paris (summer time)
    sid1 = "CA" + "1" * 32
    first = detail(
        CallSummary(id=1, call_sid=sid1, started_at=t0, caller_masked="+336••••••78", duration_s=125.4, turns=4,
                    barge_ins=1, outcome="agent_ended", cost_usd=0.1234, flags=(FLAG_INTERRUPTED, FLAG_NO_KNOWLEDGE),
                    recorded=True),
        turns=[
            # Stored out of order on purpose: the page orders by index.
            turn(sid1, 2, "caller", "Et pour la ventilation en été ?", 3700, 4600, retrieval_ms=12.0,
                 retrieval_outcome="unavailable"),
            turn(sid1, 0, "caller", "Ma couveuse affiche 39 degrés, c'est grave ?", 200, 1500,
                 passages=(PassageUsed("p1", "guides/incubation.md", "Température d'incubation", 0.8234),
                           PassageUsed("p2", "guides/couvoir.md", "Réglages du couvoir", 0.61)),
                 retrieval_ms=38.0, retrieval_outcome="ok"),
            turn(sid1, 1, "assistant", "Oui, c'est trop chaud : visez 37,7 degrés.", 1800, 3400, interrupted=True,
                 heard_ms=2400.0, speech_end_to_model_audio_ms=640.0, model_audio_to_caller_ms=12.0),
            turn(sid1, 3, "assistant", "Ouvrez les trappes d'aération le matin.", 4900, 6200,
                 speech_end_to_model_audio_ms=410.0, model_audio_to_caller_ms=9.0),
        ],
        events=[CallEvent(sid1, t0 + timedelta(seconds=4), "dtmf", "touche 5"),
                CallEvent(sid1, t0 + timedelta(seconds=65), "error", "upstream timeout")],
    )
    sid2 = "CA" + "2" * 32
    second = detail(
        CallSummary(id=2, call_sid=sid2, started_at=t0 - timedelta(days=1), caller_masked="=HYPERLINK(\"x\")",
                    duration_s=42.0, turns=2, barge_ins=0, outcome="error", cost_usd=0.02, flags=(FLAG_ERROR,)),
        turns=[turn(sid2, 0, "caller", f"Bonjour {SCRIPT} les poules", 100, 900, retrieval_outcome="empty",
                    retrieval_ms=20.0),
               turn(sid2, 1, "assistant", "Pardon, je n'ai pas compris.", 1000, 2000)],
        events=[CallEvent(sid2, t0 - timedelta(days=1) + timedelta(seconds=30), "error", f"boom {SCRIPT}")],
    )
    filler = []
    for n in range(3, 33):
        sid = f"CA{n:032d}"
        filler.append(detail(
            CallSummary(id=n, call_sid=sid, started_at=t0 - timedelta(days=2, minutes=n), caller_masked="+331••••••00",
                        duration_s=30.0 + n, turns=2, barge_ins=0,
                        outcome="transferred" if n % 3 == 0 else "caller_hung_up", cost_usd=0.05),
            turns=[turn(sid, 0, "caller", f"Question d'abreuvement numéro {n}", 0, 1000),
                   turn(sid, 1, "assistant", "Vérifiez la pression des pipettes.", 1200, 2500)],
        ))
    return [first, second, *filler]


def write_wav(path: Path, seconds: float = 6.5, rate: int = 8000) -> Path:
    """A stereo 16-bit WAV: a tone on the left while the caller speaks, on the right for OCTI."""
    frames = bytearray()
    for i in range(int(seconds * rate)):
        ms = i * 1000 / rate
        left = right = 0
        for _, role, start, end in RECORDED_TURNS:
            if start <= ms < end:
                sample = int(6000 * math.sin(2 * math.pi * (330 if role == "caller" else 550) * i / rate))
                if role == "caller":
                    left = sample
                else:
                    right = sample
        frames += struct.pack("<hh", left, right)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return path


# ---------------------------------------------------------------- app and clients

# Open pages keep their signing key in DATA_DIR: one for this run, not the working directory's.
REVIEW_DATA_DIR = Path(tempfile.mkdtemp(prefix="octi-review-"))


def review_settings(**overrides) -> Settings:
    values = {"host": "0.0.0.0", "review_username": None, "review_password": None, "review_token": None,
              "data_dir": REVIEW_DATA_DIR}
    values.update(overrides)
    return Settings(_env_file=None, **values)


def signin_settings(**overrides) -> Settings:
    return review_settings(review_username=USER, review_password=PASSWORD_HASH, review_token=TOKEN, **overrides)


def make_app(reader, settings: Settings, auth: ReviewAuth | None = None) -> FastAPI:
    app = FastAPI()
    app.include_router(build_review_router(reader, settings, auth=auth))
    return app


def client(app: FastAPI, ip: str = "198.51.100.7") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 40000)), base_url="http://testserver")


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "call-1.wav")


@pytest.fixture
def reader(recording: Path) -> FakeReader:
    return FakeReader(sample_calls(), {1: recording})


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field in the form"
    return match.group(1)


async def sign_in(http: httpx.AsyncClient, username: str = USER, password: str = PASSWORD,
                  next_path: str = "/calls") -> httpx.Response:
    form = await http.get("/review/login", params={"next": next_path})
    assert form.status_code == 200
    return await http.post("/review/login", data={"csrf": csrf_of(form.text), "next": next_path,
                                                  "username": username, "password": password})


@pytest.fixture
async def signed_in(reader: FakeReader):
    async with client(make_app(reader, signin_settings())) as http:
        response = await sign_in(http)
        assert response.status_code == 303
        yield http


# ---------------------------------------------------------------- access matrix

async def test_without_credentials_a_public_server_disables_the_review_pages(reader):
    async with client(make_app(reader, review_settings(host="0.0.0.0"))) as http:
        page = await http.get("/calls")
        assert page.status_code == 404
        assert "Relecture des appels désactivée" in page.text
        assert "REVIEW_USERNAME" in page.text and "octi review hash-password" in page.text
        for path in ("/api/calls", "/api/calls/1", "/calls.csv", "/calls/1/recording.wav"):
            response = await http.get(path)
            assert response.status_code == 404, path
            assert "désactivées" in response.json()["detail"]
        assert (await http.get("/calls/1")).status_code == 404
        assert (await http.get("/review/login")).status_code == 404
        assert (await http.get("/api/calls", params={"token": "anything"})).status_code == 404
    assert reader.queries == []


async def test_half_configured_credentials_keep_the_pages_disabled_and_say_why(reader):
    async with client(make_app(reader, review_settings(review_username=USER))) as http:
        page = await http.get("/calls")
    assert page.status_code == 404
    assert "REVIEW_USERNAME et REVIEW_PASSWORD doivent être définis ensemble" in page.text


async def test_loopback_without_credentials_is_open_with_a_banner(reader):
    async with client(make_app(reader, review_settings(host="127.0.0.1")), ip="127.0.0.1") as http:
        page = await http.get("/calls")
        assert page.status_code == 200
        assert "accès local sans authentification" in page.text
        assert "Se déconnecter" not in page.text
        assert (await http.get("/api/calls")).json()["total"] == 32
        assert "accès local sans authentification" in (await http.get("/calls/1")).text
        assert (await http.get("/calls/1/recording.wav")).status_code == 200
        assert (await http.get("/review/login")).status_code == 303


async def test_credentials_require_sign_in_and_a_wrong_password_is_refused(reader):
    async with client(make_app(reader, signin_settings(host="127.0.0.1"))) as http:
        # Credentials win over the loopback rule.
        redirect = await http.get("/calls", params={"text": "poule"})
        assert redirect.status_code == 303
        target = urlsplit(redirect.headers["location"])
        assert target.path == "/review/login" and parse_qs(target.query)["next"] == ["/calls?text=poule"]
        api = await http.get("/api/calls")
        assert api.status_code == 401 and api.headers["www-authenticate"].startswith("Bearer")
        assert (await http.get("/calls.csv")).status_code == 401
        assert (await http.get("/calls/1/recording.wav")).status_code == 401

        wrong = await sign_in(http, password="incorrect")
        assert wrong.status_code == 401
        assert "Identifiant, mot de passe ou jeton incorrect" in wrong.text
        assert SESSION_COOKIE not in http.cookies
        assert (await sign_in(http, username="bob")).status_code == 401
        assert reader.queries == []

        good = await sign_in(http, next_path="/calls?text=poule")
        assert good.status_code == 303 and good.headers["location"] == "/calls?text=poule"
        cookie = next(h for h in good.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE))
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Max-Age=43200" in cookie
        assert "Secure" not in cookie  # plain HTTP here; HTTPS gets Secure
        page = await http.get("/calls")
        assert page.status_code == 200 and "Se déconnecter" in page.text and USER in page.text
        assert "accès local sans authentification" not in page.text

        # Sign out needs the page's token, then the session is gone.
        refused = await http.post("/review/logout", data={"csrf": "forged"})
        assert refused.status_code == 403
        out = await http.post("/review/logout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 303 and SESSION_COOKIE not in http.cookies
        assert (await http.get("/calls")).status_code == 303


async def test_sign_in_over_https_sets_a_secure_cookie_and_next_cannot_leave_the_site(reader):
    transport = httpx.ASGITransport(app=make_app(reader, signin_settings()), client=("198.51.100.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        form = await http.get("/review/login")
        response = await http.post("/review/login", data={
            "csrf": csrf_of(form.text), "next": "//evil.example/", "username": USER, "password": PASSWORD})
    assert response.status_code == 303 and response.headers["location"] == "/calls"
    assert "Secure" in next(h for h in response.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE))


async def test_a_plain_password_is_hashed_at_start_up_and_still_signs_in(reader):
    settings = review_settings(review_username=USER, review_password="plain secret")
    auth = ReviewAuth(settings)
    assert "plain secret" not in repr(vars(auth))   # only its argon2 hash is kept
    async with client(make_app(reader, settings, auth=auth)) as http:
        assert (await sign_in(http, password="wrong secret")).status_code == 401
        assert (await sign_in(http, password="plain secret")).status_code == 303
        assert (await http.get("/calls")).status_code == 200


async def test_the_sign_in_form_needs_its_csrf_token(reader):
    async with client(make_app(reader, signin_settings())) as http:
        fields = {"username": USER, "password": PASSWORD, "next": "/calls"}
        assert (await http.post("/review/login", data=fields)).status_code == 403
        form = await http.get("/review/login")
        token = csrf_of(form.text)
        assert (await http.post("/review/login", data={**fields, "csrf": token + "x"})).status_code == 403
        # A token taken from another browser (another nonce cookie) is refused too.
        async with client(make_app(reader, signin_settings())) as other:
            foreign = csrf_of((await other.get("/review/login")).text)
        refused = await http.post("/review/login", data={**fields, "csrf": foreign})
        assert refused.status_code == 403 and "formulaire a expiré" in refused.text
        assert SESSION_COOKIE not in http.cookies
        # Without the nonce cookie, the page's own token is not enough either.
        nonce = http.cookies.get(CSRF_COOKIE, path="/review/login")
        http.cookies.delete(CSRF_COOKIE, path="/review/login")
        assert (await http.post("/review/login", data={**fields, "csrf": token})).status_code == 403
        http.cookies.set(CSRF_COOKIE, nonce, domain="testserver.local", path="/review/login")
        fresh = await http.get("/review/login")
        assert (await http.post("/review/login", data={**fields, "csrf": csrf_of(fresh.text)})).status_code == 303


async def test_sign_in_attempts_are_rate_limited_per_client_ip(reader):
    app = make_app(reader, signin_settings())
    async with client(app, ip="203.0.113.9") as attacker, client(app, ip="203.0.113.10") as colleague:
        for _ in range(MAX_FAILURES):
            assert (await sign_in(attacker, password="guess")).status_code == 401
        blocked = await sign_in(attacker)  # even the right password, once blocked
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) > 0 and "Trop de tentatives" in blocked.text
        assert SESSION_COOKIE not in attacker.cookies
        # Wrong tokens count against the same address.
        assert (await attacker.get("/api/calls", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 429
        assert (await sign_in(colleague)).status_code == 303


async def test_the_token_opens_the_api_and_csv_and_trades_for_a_cookie_once(reader):
    async with client(make_app(reader, signin_settings())) as http:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert (await http.get("/api/calls", headers=bearer)).status_code == 200
        assert (await http.get("/calls.csv", headers=bearer)).status_code == 200
        assert (await http.get("/calls/1/recording.wav", headers=bearer)).status_code == 200
        assert (await http.get("/api/calls", headers={"Authorization": "Bearer nope"})).status_code == 401
        assert SESSION_COOKIE not in http.cookies  # bearer requests get no cookie

        wrong = await http.get("/calls", params={"token": "nope", "text": "x"})
        assert wrong.status_code == 303 and "nope" not in wrong.headers["location"]
        traded = await http.get("/calls", params={"text": "poule", "token": TOKEN})
        assert traded.status_code == 303 and traded.headers["location"] == "/calls?text=poule"
        assert SESSION_COOKIE in http.cookies
        page = await http.get(traded.headers["location"])
        assert page.status_code == 200 and "jeton" in page.text


async def test_token_only_configuration_signs_in_with_the_token_form(reader):
    async with client(make_app(reader, review_settings(review_token=TOKEN))) as http:
        form = await http.get("/review/login")
        assert 'name="token"' in form.text and 'name="password"' not in form.text
        signed = await http.post("/review/login", data={"csrf": csrf_of(form.text), "token": TOKEN, "next": "/calls/1"})
        assert signed.status_code == 303 and signed.headers["location"] == "/calls/1"
        assert (await http.get("/calls/1")).status_code == 200


async def test_a_tampered_forged_or_expired_cookie_is_refused(reader):
    now = [1_800_000_000.0]
    auth = ReviewAuth(signin_settings(), clock=lambda: now[0])
    app = make_app(reader, signin_settings(), auth=auth)
    async with client(app) as http:
        assert (await sign_in(http)).status_code == 303
        cookie = http.cookies[SESSION_COOKIE]
        payload, stamp, signature = cookie.split(".")
        promoted = base64_decode(payload).replace(b'"sub":"alice"', b'"sub":"admin"')
        assert promoted != base64_decode(payload)
        forged_payload = f"{base64_encode(promoted).decode()}.{stamp}.{signature}"
        backdated = f"{payload}.{base64_encode(b'x').decode()}.{signature}"
        flipped = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
        other_key = ReviewAuth(review_settings(review_username=USER, review_password=CHEAP_ARGON2.hash("x")))
        for bad in (forged_payload, backdated, flipped, "garbage", "v1..", "..",
                    other_key.issue_session(Reviewer(USER, "password")),
                    auth.csrf_token("nonce")):           # signed by the same key, for another purpose
            http.cookies.set(SESSION_COOKIE, bad, domain="testserver.local")
            assert (await http.get("/calls")).status_code == 303, bad
            assert (await http.get("/api/calls")).status_code == 401, bad
        http.cookies.set(SESSION_COOKIE, cookie, domain="testserver.local")
        assert (await http.get("/calls")).status_code == 200
        now[0] += SESSION_SECONDS - 5
        assert (await http.get("/calls")).status_code == 200
        now[0] += 6
        assert (await http.get("/calls")).status_code == 303
        assert (await http.get("/api/calls")).status_code == 401


# ---------------------------------------------------------------- the list

async def test_the_list_shows_calls_newest_first_in_french(signed_in, reader):
    page = await signed_in.get("/calls")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["cache-control"] == "no-store"
    html = page.text
    assert "32 appels" in html and "Page 1 sur 2" in html
    rows = re.findall(r'<tr class="call" data-id="(\d+)"', html)
    assert rows[:3] == ["1", "2", "3"] and len(rows) == 25
    first = html[html.index('data-id="1"'):html.index('data-id="2"')]
    assert "14/07/2025 14:00" in first             # Europe/Paris, summer time
    assert "+336••••••78" in first and "2 min 05 s" in first and "$0.12" in first
    assert "terminé par OCTI" in first
    assert ">interrompu<" in first and ">sans connaissance<" in first and "enregistré" in first
    second = html[html.index('data-id="2"'):html.index('data-id="3"')]
    assert ">erreur<" in second and "$0.02" in second
    assert "raccroché par l&#39;appelant" in html and "transféré" in html
    assert reader.queries[-1] == CallQuery(page=1, per_page=25)
    assert 'href="/calls?page=2"' in html and 'href="/calls.csv"' in html


async def test_filters_search_and_pagination_reach_the_reader(signed_in, reader):
    params = {"text": "  abreuvement ", "outcome": "transferred", "date_from": "2025-07-01",
              "date_to": "2025-07-31", "page": "1"}
    page = await signed_in.get("/calls", params=params)
    assert reader.queries[-1] == CallQuery(text="abreuvement", outcome="transferred", date_from=date(2025, 7, 1),
                                           date_to=date(2025, 7, 31), page=1, per_page=25)
    html = page.text
    assert "10 appels correspondants" in html and "Page 1 sur 1" in html
    assert 'value="abreuvement"' in html and '<option value="transferred" selected>' in html
    assert ('href="/calls.csv?text=abreuvement&amp;outcome=transferred&amp;date_from=2025-07-01'
            '&amp;date_to=2025-07-31"') in html

    narrowed = await signed_in.get("/calls", params={"text": "couveuse"})
    assert re.findall(r'data-id="(\d+)"', narrowed.text) == ["1"] and "1 appel correspondant" in narrowed.text

    second = await signed_in.get("/calls", params={"outcome": "caller_hung_up", "page": "2"})
    assert reader.queries[-1] == CallQuery(outcome="caller_hung_up", page=2, per_page=25)
    assert "Page 2 sur 1" not in second.text
    assert "Cette page est vide" in second.text and "Revenir à la première page" in second.text
    third = await signed_in.get("/calls", params={"page": "2"})
    assert len(re.findall(r'data-id="(\d+)"', third.text)) == 7
    assert 'href="/calls?page=1"' in third.text and "Page 2 sur 2" in third.text

    bad = await signed_in.get("/calls", params={"date_from": "14/07/2025", "outcome": "bogus", "page": "-3"})
    assert bad.status_code == 200
    assert "date « du » invalide" in bad.text and "issue inconnue" in bad.text
    assert reader.queries[-1] == CallQuery(page=1, per_page=25)


async def test_the_json_api_lists_with_the_same_filters(signed_in, reader):
    body = (await signed_in.get("/api/calls", params={"per_page": "10", "page": "2"})).json()
    assert reader.queries[-1] == CallQuery(page=2, per_page=10)
    assert body["total"] == 32 and body["page"] == 2 and body["per_page"] == 10 and len(body["items"]) == 10
    assert set(body["items"][0]) >= {"id", "call_sid", "started_at", "caller_masked", "duration_s", "turns",
                                     "barge_ins", "outcome", "cost_usd", "flags", "recorded", "url"}
    filtered = (await signed_in.get("/api/calls", params={"text": "couveuse"})).json()
    assert [item["id"] for item in filtered["items"]] == [1]
    assert filtered["items"][0]["flags"] == ["interrupted", "no_knowledge"]
    assert filtered["items"][0]["started_at"] == "2025-07-14T12:00:00+00:00"
    await signed_in.get("/api/calls", params={"per_page": "5000"})
    assert reader.queries[-1].per_page == 100
    bad = await signed_in.get("/api/calls", params={"date_to": "demain"})
    assert bad.status_code == 400 and "invalide" in bad.json()["detail"][0]


async def test_the_json_api_gives_one_call_in_full(signed_in):
    body = (await signed_in.get("/api/calls/1")).json()
    assert body["summary"]["id"] == 1 and body["model"] == "gpt-realtime" and body["codec"] == "pcmu"
    assert [t["index"] for t in body["turns"]] == [2, 0, 1, 3]  # as the reader gave them
    caller = next(t for t in body["turns"] if t["index"] == 0)
    assert caller["passages"][0] == {"id": "p1", "source": "guides/incubation.md",
                                     "title": "Température d'incubation", "score": 0.8234}
    assert body["events"][0]["type"] == "dtmf" and body["events"][0]["at"].startswith("2025-07-14T12:00:04")
    assert body["recording_url"] == "/calls/1/recording.wav"
    assert (await signed_in.get("/api/calls/2")).json()["recording_url"] is None


async def test_the_csv_export_follows_the_filter_across_reader_pages(signed_in, reader, monkeypatch):
    monkeypatch.setattr(call_api, "CSV_BATCH", 7)
    response = await signed_in.get("/calls.csv", params={"outcome": "caller_hung_up", "page": "3"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith('attachment; filename="appels-octi-')
    raw = response.content
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0] == ["id", "call_sid", "started_at", "caller", "duration_s", "turns", "barge_ins", "outcome",
                       "cost_usd", "flags"]
    assert len(rows) == 1 + 20                     # every match, not one page; the page parameter is ignored
    assert [q.page for q in reader.queries[-3:]] == [1, 2, 3] and reader.queries[-1].per_page == 7
    assert {row[7] for row in rows[1:]} == {"caller_hung_up"}

    everything = list(csv.reader(io.StringIO((await signed_in.get("/calls.csv")).content.decode("utf-8-sig"))))
    by_id = {row[0]: row for row in everything[1:]}
    assert len(by_id) == 32
    assert by_id["1"] == ["1", "CA" + "1" * 32, "2025-07-14T12:00:00+00:00", "'+336••••••78", "125.4", "4", "1",
                          "agent_ended", "0.1234", "interrupted|no_knowledge"]
    assert by_id["2"][3] == "'=HYPERLINK(\"x\")"   # no formula runs in a spreadsheet


# ---------------------------------------------------------------- one call

async def test_the_call_page_shows_the_conversation_in_order_with_its_details(signed_in):
    page = await signed_in.get("/calls/1")
    assert page.status_code == 200
    html = page.text
    positions = [html.index(f'id="turn-{i}"') for i in range(4)]
    assert positions == sorted(positions)
    assert re.search(r'<li class="turn caller" id="turn-0"\s+data-start-ms="200"\s+data-end-ms="1500">', html)
    assert re.search(r'<li class="turn assistant interrupted" id="turn-1"', html)
    assert "▶ 00:01" in html and "▶ 00:04" in html
    assert "interrompu après 2,4 s" in html
    turn0 = html[positions[0]:positions[1]]
    assert "Température d&#39;incubation" in turn0 and "guides/incubation.md" in turn0 and "score 0,82" in turn0
    assert "2 passages utilisés" in turn0 and "passages trouvés" in turn0 and "38 ms" in turn0
    turn2 = html[positions[2]:positions[3]]
    assert "base indisponible" in turn2 and "12 ms" in turn2
    turn1 = html[positions[1]:positions[2]]
    assert "fin de parole → premier audio du modèle <b>640 ms</b>" in turn1
    assert "premier envoi à l'appelant <b>12 ms</b>" in turn1 and "total 652 ms" in turn1
    assert '<audio id="recording" controls preload="metadata" src="/calls/1/recording.wav">' in html
    assert "/review/static/review.js?v=" in html
    for text in ("gpt-realtime", "pcmu", "inject", "1\u202f234", "en cache 200", "$0.12", "terminé par OCTI",
                 "14/07/2025 14:00:00", "Appelant", "OCTI"):
        assert text in html, text
    events = html[html.index('id="events"'):]
    assert "14:00:04" in events and "touche DTMF" in events and "touche 5" in events
    assert "14:01:05" in events and "(01:05)" in events and "upstream timeout" in events


async def test_transcripts_and_events_are_escaped(signed_in):
    html = (await signed_in.get("/calls/2")).text
    assert SCRIPT not in html
    assert "Bonjour &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; les poules" in html
    assert "boom &lt;script&gt;" in html
    assert "aucun passage trouvé" in html
    assert "<audio" not in html and "review.js" not in html  # not recorded
    assert "<script" not in html
    listing = (await signed_in.get("/calls")).text
    assert '=HYPERLINK(&#34;x&#34;)' in listing


async def test_unknown_calls_are_404(signed_in):
    for path in ("/calls/999", "/calls/abc", "/calls/-1"):
        page = await signed_in.get(path)
        assert page.status_code == 404 and "Appel introuvable" in page.text, path
    for path in ("/api/calls/999", "/api/calls/abc", "/calls/999/recording.wav", "/calls/2/recording.wav"):
        assert (await signed_in.get(path)).status_code == 404, path
    assert (await signed_in.get("/review/static/../auth.py")).status_code == 404
    assert (await signed_in.get("/review/static/nope.js")).status_code == 404


async def test_a_recorded_call_whose_file_vanished_shows_no_player(signed_in, recording):
    recording.unlink()
    html = (await signed_in.get("/calls/1")).text
    assert "<audio" not in html and "Enregistrement indisponible" in html
    assert (await signed_in.get("/calls/1/recording.wav")).status_code == 404


async def test_the_recording_supports_range_requests(signed_in, recording):
    data = recording.read_bytes()
    full = await signed_in.get("/calls/1/recording.wav")
    assert full.status_code == 200 and full.content == data
    assert full.headers["content-type"] == "audio/wav" and full.headers["accept-ranges"] == "bytes"
    head = await signed_in.get("/calls/1/recording.wav", headers={"Range": "bytes=0-43"})
    assert head.status_code == 206 and head.content == data[:44]
    assert head.headers["content-range"] == f"bytes 0-43/{len(data)}"
    assert wave.open(io.BytesIO(data)).getnchannels() == 2 and head.content[:4] == b"RIFF"
    middle = await signed_in.get("/calls/1/recording.wav", headers={"Range": f"bytes={len(data) // 2}-"})
    assert middle.status_code == 206 and middle.content == data[len(data) // 2:]
    tail = await signed_in.get("/calls/1/recording.wav", headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == data[-100:]
    beyond = await signed_in.get("/calls/1/recording.wav", headers={"Range": f"bytes={len(data) + 10}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"
    only_headers = await signed_in.head("/calls/1/recording.wav")
    assert only_headers.status_code == 200 and int(only_headers.headers["content-length"]) == len(data)


# ---------------------------------------------------------------- unknown costs

def costed_calls() -> list[CallDetail]:
    """Call 1: a model without a price (cost unknown), its transcription priced. Call 2: priced,
    transcription included. Call 3: logged before transcription was kept. Call 4: going on."""
    t0 = datetime(2025, 7, 14, 12, 0, tzinfo=timezone.utc)

    def call(n: int, cost_usd: float | None, seconds: float | None = 60.0, **transcription) -> CallDetail:
        summary = CallSummary(id=n, call_sid=f"CA{n:032d}", started_at=t0 - timedelta(hours=n),
                              caller_masked="+336••••••78", duration_s=seconds, turns=2, barge_ins=0,
                              outcome="caller_hung_up" if seconds else None, cost_usd=cost_usd)
        return dataclasses.replace(detail(summary), **transcription)

    return [
        call(1, None, transcription_model="gpt-realtime-whisper", transcription_seconds=48.0,
             transcription_cost_usd=0.0136),
        call(2, 0.4321, transcription_model="gpt-realtime-whisper", transcription_seconds=75.0,
             transcription_cost_usd=0.02125),
        call(3, 0.05),
        call(4, 0.0, seconds=None, transcription_model="gpt-realtime-whisper"),
    ]


async def test_an_unknown_cost_is_shown_as_unknown_and_the_transcription_part_apart():
    async with client(make_app(FakeReader(costed_calls()), review_settings(host="127.0.0.1"))) as http:
        listing = (await http.get("/calls")).text
        first = listing[listing.index('data-id="1"'):listing.index('data-id="2"')]
        assert "coût inconnu" in first and "$0.00" not in first
        assert "$0.43" in listing[listing.index('data-id="2"'):]

        unknown = (await http.get("/calls/1")).text
        assert "coût inconnu (dont transcription : $0.01)" in unknown and "$0.00" not in unknown
        assert "gpt-realtime-whisper · 48,0 s d'audio" in unknown
        priced = (await http.get("/calls/2")).text
        assert "$0.43 (dont transcription : $0.02)" in priced
        older = (await http.get("/calls/3")).text
        assert "$0.05" in older and "dont transcription" not in older and "coût inconnu" not in older
        ongoing = (await http.get("/calls/4")).text   # no transcription part before the call ends
        assert "en cours" in ongoing and "dont transcription" not in ongoing and "coût inconnu" not in ongoing

        items = {item["id"]: item for item in (await http.get("/api/calls")).json()["items"]}
        assert items[1]["cost_usd"] is None and items[2]["cost_usd"] == 0.4321
        body = (await http.get("/api/calls/1")).json()
        assert body["summary"]["cost_usd"] is None and body["transcription_cost_usd"] == 0.0136
        assert body["transcription_model"] == "gpt-realtime-whisper" and body["transcription_seconds"] == 48.0

        rows = list(csv.reader(io.StringIO((await http.get("/calls.csv")).content.decode("utf-8-sig"))))
        by_id = {row[0]: row for row in rows[1:]}
        assert by_id["1"][8] == "" and by_id["2"][8] == "0.4321"


# ---------------------------------------------------------------- the reader boundary

@pytest.mark.parametrize("kind", ["object", "async", "sync"])
async def test_the_reader_provider_may_be_the_reader_or_a_callable(reader, kind):
    async def async_provider():
        return reader

    provider = {"object": reader, "async": async_provider, "sync": lambda: reader}[kind]
    async with client(make_app(provider, review_settings(host="127.0.0.1"))) as http:
        assert (await http.get("/api/calls")).json()["total"] == 32


async def test_an_unavailable_call_log_is_a_503_page(reader):
    class Broken(FakeReader):
        async def list_calls(self, query):
            raise ConnectionError("database down")

    async with client(make_app(None, review_settings(host="127.0.0.1"))) as http:
        assert (await http.get("/calls")).status_code == 503
    async with client(make_app(lambda: None, review_settings(host="127.0.0.1"))) as http:
        page = await http.get("/calls")
        assert page.status_code == 503 and "Journal indisponible" in page.text
        assert (await http.get("/api/calls/1")).status_code == 503
    async with client(make_app(Broken(sample_calls()), review_settings(host="127.0.0.1"))) as http:
        assert (await http.get("/calls")).status_code == 503
        assert (await http.get("/calls.csv")).status_code == 503
        assert (await http.get("/calls/1")).status_code == 200


async def test_static_files_are_served_and_versioned(signed_in):
    page = (await signed_in.get("/calls")).text
    css_url = re.search(r'href="(/review/static/review\.css\?v=[0-9a-f]+)"', page).group(1)
    css = await signed_in.get(css_url)
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "@media (max-width: 600px)" in css.text
    js = await signed_in.get("/review/static/review.js")
    assert js.status_code == 200 and "timeupdate" in js.text


def test_naive_and_aware_times_display_in_paris():
    assert formatting.paris(datetime(2025, 1, 10, 8, 30)) == "10/01/2025 09:30"          # winter, naive = UTC
    assert formatting.paris(datetime(2025, 7, 10, 8, 30, tzinfo=timezone.utc)) == "10/07/2025 10:30"
    assert formatting.clock(65_400) == "01:05" and formatting.clock(3_725_000) == "1:02:05"
    assert formatting.cost(0.1234) == "$0.12" and formatting.cost(0.001) == "< $0.01"
    assert formatting.cost(0) == "$0.00"
    assert formatting.cost(None) == "coût inconnu"
    assert formatting.duration(None) == "en cours" and formatting.duration(42.4) == "42 s"


def test_every_event_a_call_journals_has_a_french_label():
    app_dir = Path(formatting.__file__).resolve().parents[1]
    journaled = {name for source in app_dir.rglob("*.py")
                 for name in re.findall(r'journal\.event\(\s*"([a-z_]+)"', source.read_text(encoding="utf-8"))}
    assert {"dtmf", "transcription_failed", "model_error"} <= journaled  # the search itself works
    assert journaled <= set(formatting.EVENTS), journaled - set(formatting.EVENTS)


# ---------------------------------------------------------------- call-backs

def voicemail_call(number: str | None) -> CallDetail:
    t0 = datetime(2025, 7, 15, 8, 0, tzinfo=timezone.utc)
    sid = "CA" + "9" * 32
    call = detail(CallSummary(id=40, call_sid=sid, started_at=t0, caller_masked="+336••••••78", duration_s=80.0,
                              turns=1, barge_ins=0, outcome="transferred", cost_usd=0.01),
                  turns=[turn(sid, 0, "caller", "Mes dindes toussent.", 0, 1500)],
                  events=[CallEvent(sid, t0 + timedelta(seconds=40), "transfer_unanswered", "no-answer"),
                          CallEvent(sid, t0 + timedelta(seconds=70), "voicemail", "https://x/RE1 (9 s)")])
    return dataclasses.replace(call, caller_number=number)


async def test_a_call_left_as_a_voicemail_offers_rappeler_which_posts_with_the_form_token():
    reader = FakeReader([voicemail_call("+33612345678"), *sample_calls()[:1]])
    async with client(make_app(reader, signin_settings())) as http:
        await sign_in(http)
        page = (await http.get("/calls/40")).text
        elsewhere = (await http.get("/calls/1")).text
        # No phone line behind this review: the refusal is shown on the page it came from.
        sent = await http.post("/api/calls/outbound", data={"call_id": "40", "csrf": csrf_of(page)})
        shown = (await http.get(sent.headers["location"])).text
        forged = await http.post("/api/calls/outbound", data={"call_id": "40", "csrf": "x"})
    form = page[page.index('id="call-back"'):]
    assert "au sujet de : « Mes dindes toussent. »" in form
    assert '<form method="post" action="/api/calls/outbound">' in form and 'name="call_id" value="40"' in form
    assert ">Rappeler</button>" in form
    assert 'id="call-back"' not in elsewhere
    assert sent.status_code == 303 and sent.headers["location"] == "/calls/40?rappel=not_configured"
    assert '<p class="alert" role="status">Rappel impossible : l&#39;API de Twilio n&#39;est pas configurée' in shown
    assert forged.status_code == 403 and "Requête refusée" in forged.text


async def test_the_call_page_says_how_a_call_back_went_and_why_it_cannot_without_the_number():
    reader = FakeReader([voicemail_call(None)])
    async with client(make_app(reader, signin_settings())) as http:
        await sign_in(http)
        placed = (await http.get("/calls/40", params={"rappel": "placed"})).text
        unknown = (await http.get("/calls/40", params={"rappel": "<b>"})).text
    assert '<p class="done" role="status">Rappel lancé' in placed
    assert "STORE_CALLER_NUMBER=false" in placed and ">Rappeler</button>" not in placed
    assert 'role="status"' not in unknown
