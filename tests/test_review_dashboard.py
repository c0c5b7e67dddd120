"""The reviewers' KPI dashboard over a real call log, on SQLite and on PostgreSQL.

Eight calls are stored through the store's `apply`, as the writer stores them; every figure
the JSON and the page report is checked against numbers worked out by hand below. Times are
UTC; the dashboard counts in Paris time (UTC+1 in November, UTC+2 before 26 October).

  call channel caller start (UTC)      Paris day     outcome        cost caller answers: latency ms
                                                                       turns  (to model + to caller)
  A    phone   num-A  2025-11-20 08:00 Thu 20/11 W47 caller_hung_up 0.10 2      400+20=420, 600+∅=600 (cut)
  B    phone   num-A  2025-11-20 23:30 Fri 21/11 W47 error          ∅    1      300+10=310
  C    phone   num-B  2025-11-24 10:00 Mon 24/11 W48 agent_ended    0.20 3      450+50=500, (none known)
  D    browser marie  2025-11-20 14:00 Thu 20/11 W47 caller_hung_up 0.05 2      700+∅=700 (cut), 200+30=230 (cut)
  E    browser marie  2025-11-24 09:00 Mon 24/11 W48 timeout        0.07 1      480+20=500
  F    browser paul   2025-11-24 16:00 Mon 24/11 W48 error          ∅    0      —
  G    phone   num-C  2025-10-19 22:30 Mon 20/10 W43 caller_hung_up 0.30 1      100+5=105
  H    phone   num-D  2025-11-30 23:30 Mon 01/12 W49 caller_hung_up 1.00 1      9000+0 (outside every window)

(∅: unknown. "cut": the caller talked over that answer, a barge-in.) The window ends on Sunday
30/11/2025: 30 days from 01/11, 12 ISO weeks from W37 (08/09), 12 months from December 2024.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from app.calllog.migrate import upgrade_database
from app.calllog.reader import CallLogReader
from app.calllog.records import CallEnded, CallRecord, CallStarted, TurnRecorded
from app.calllog.store import CallLogStore
from app.review.kpi_charts import nice_scale
from app.review.kpi_figures import nearest_rank
from tests.test_calllog_store import database_url, pg_url  # noqa: F401  (the two-database fixtures)
from tests.test_review_pages import TOKEN, client, make_app, review_settings, sign_in, signin_settings

END = "2025-11-30"
WINDOW = {"end": END}


# ---------------------------------------------------------------- the calls

def conversation(sid: str, at: datetime, *, channel: str, who: str, outcome: str, cost: float | None,
                 turns: list[tuple[str, float | None, float | None, bool]]) -> list[CallRecord]:
    """A call as its journal records it. `turns`: (role, to model ms, to caller ms, interrupted)."""
    phone = channel == "twilio"
    records: list[CallRecord] = [CallStarted(
        call_sid=sid, stream_sid=f"MZ{sid}", channel=channel,
        caller_masked="+336••••••00" if phone else who, caller_hash=who if phone else f"hash-of-{who}",
        caller_number=None, called="+33900000000", started_at=at, codec="pcmu", model="gpt-realtime",
        rag_mode="inject")]
    for index, (role, to_model, to_caller, interrupted) in enumerate(turns):
        records.append(TurnRecorded(
            call_sid=sid, index=index, role=role, text=f"{role} {index}",  # type: ignore[arg-type]
            start_ms=index * 3000.0, end_ms=index * 3000.0 + 2000, interrupted=interrupted,
            speech_end_to_model_audio_ms=to_model, model_audio_to_caller_ms=to_caller))
    records.append(CallEnded(
        call_sid=sid, ended_at=at + timedelta(minutes=2), outcome=outcome, answered_at=at,  # type: ignore[arg-type]
        duration_s=120.0, cost_usd=cost, turns=len(turns),
        barge_ins=sum(1 for *_, interrupted in turns if interrupted)))
    return records


ASK = ("caller", None, None, False)


def answer(to_model: float | None, to_caller: float | None, *, cut: bool = False) -> tuple[str, Any, Any, bool]:
    return ("assistant", to_model, to_caller, cut)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


CALLS = [
    conversation("CA-A", utc(2025, 11, 20, 8, 0), channel="twilio", who="num-A", outcome="caller_hung_up", cost=0.10,
                 turns=[ASK, answer(400, 20), ASK, answer(600, None, cut=True)]),
    conversation("CA-B", utc(2025, 11, 20, 23, 30), channel="twilio", who="num-A", outcome="error", cost=None,
                 turns=[ASK, answer(300, 10)]),
    conversation("CA-C", utc(2025, 11, 24, 10, 0), channel="twilio", who="num-B", outcome="agent_ended", cost=0.20,
                 turns=[ASK, answer(450, 50), ASK, answer(None, None), ASK]),
    conversation("CA-D", utc(2025, 11, 20, 14, 0), channel="web", who="marie", outcome="caller_hung_up", cost=0.05,
                 turns=[ASK, answer(700, None, cut=True), ASK, answer(200, 30, cut=True)]),
    conversation("CA-E", utc(2025, 11, 24, 9, 0), channel="web", who="marie", outcome="timeout", cost=0.07,
                 turns=[ASK, answer(480, 20)]),
    conversation("CA-F", utc(2025, 11, 24, 16, 0), channel="web", who="paul", outcome="error", cost=None, turns=[]),
    conversation("CA-G", utc(2025, 10, 19, 22, 30), channel="twilio", who="num-C", outcome="caller_hung_up",
                 cost=0.30, turns=[ASK, answer(100, 5)]),
    conversation("CA-H", utc(2025, 11, 30, 23, 30), channel="twilio", who="num-D", outcome="caller_hung_up",
                 cost=1.00, turns=[ASK, answer(9000, 0)]),
]


@pytest.fixture
async def store(database_url: str) -> CallLogStore:  # noqa: F811
    opened = await CallLogStore.open(database_url)   # no prices: an unknown cost stays unknown
    for records in CALLS:
        await opened.apply(records)
    yield opened
    await opened.close()


# ---------------------------------------------------------------- expected figures

def figures(calls: int, answers: int, p50: float | None, p95: float | None, interrupted: int, caller_turns: int,
            errors: int, cost: float | None, unknown: int, users: int) -> dict[str, Any]:
    """A channel's figures as the JSON gives them; the rates are the counts over the calls."""
    return {
        "calls": calls, "answers": answers, "latency_p50_ms": p50, "latency_p95_ms": p95,
        "interrupted_calls": interrupted, "interruption_rate": interrupted / calls if calls else None,
        "caller_turns": caller_turns, "turns_per_call": caller_turns / calls if calls else None,
        "error_calls": errors, "error_rate": errors / calls if calls else None,
        "cost_usd": cost, "unknown_cost_calls": unknown, "users": users,
    }


NOTHING = figures(0, 0, None, None, 0, 0, 0, 0.0, 0, 0)

# Percentiles by nearest rank: the value at rank ceil(n × p / 100) of the sorted latencies.
# 20/11 — phone A: [420, 600]: P50 rank 1 → 420, P95 rank 2 → 600; browser D: [230, 700] → 230, 700;
#         together [230, 420, 600, 700]: P50 rank 2 → 420, P95 rank ceil(3.8) = 4 → 700.
DAY_20 = {"phone": figures(1, 2, 420, 600, 1, 2, 0, 0.10, 0, 1),
          "web": figures(1, 2, 230, 700, 1, 2, 0, 0.05, 0, 1),
          "all": figures(2, 4, 420, 700, 2, 4, 0, 0.15, 0, 2)}
# 21/11 (B started at 00:30 Paris): one phone call in error, cost unknown, hence None and not $0.
DAY_21 = {"phone": figures(1, 1, 310, 310, 0, 1, 1, None, 1, 1), "web": NOTHING,
          "all": figures(1, 1, 310, 310, 0, 1, 1, None, 1, 1)}
# 24/11 — phone C: 3 caller turns, one answer with a latency (500); browser E and F: 1 + 0 caller
# turns, F in error at an unknown cost, E's answer 500; together 4 turns over 3 calls.
DAY_24 = {"phone": figures(1, 1, 500, 500, 0, 3, 0, 0.20, 0, 1),
          "web": figures(2, 1, 500, 500, 0, 1, 1, 0.07, 1, 2),
          "all": figures(3, 2, 500, 500, 0, 4, 1, 0.27, 1, 3)}
# 01/11–30/11 — phone A, B, C: [310, 420, 500, 600] → P50 rank 2 = 420, P95 rank 4 = 600; callers
# num-A (twice) and num-B = 2; cost 0.10 + 0.20 = 0.30 and B unknown. Browser D, E, F:
# [230, 500, 700] → P50 rank 2 = 500, P95 rank ceil(2.85) = 3 = 700; marie (twice) and paul = 2.
# Together 7 answers [230, 310, 420, 500, 500, 600, 700] → P50 rank 4 = 500, P95 rank 7 = 700;
# 2 + 3 + 1 + 2 + 1 + 0 = 9 caller turns over 6 calls = 1.5; H (01/12 in Paris) is not counted.
NOVEMBER = {"phone": figures(3, 4, 420, 600, 1, 6, 1, 0.30, 1, 2),
            "web": figures(3, 3, 500, 700, 1, 3, 1, 0.12, 1, 2),
            "all": figures(6, 7, 500, 700, 2, 9, 2, 0.42, 2, 4)}
# W43 (20/10–26/10): G, started Sunday 19/10 at 22:30 UTC, is Monday 00:30 in Paris (UTC+2).
WEEK_43 = {"phone": figures(1, 1, 105, 105, 0, 1, 0, 0.30, 0, 1), "web": NOTHING,
           "all": figures(1, 1, 105, 105, 0, 1, 0, 0.30, 0, 1)}
# W47 (17/11–23/11): phone A and B, one caller (num-A): [310, 420, 600] → P50 rank 2 = 420,
# P95 rank 3 = 600; browser D. Together [230, 310, 420, 600, 700] → P50 rank 3 = 420, P95 rank 5 = 700.
WEEK_47 = {"phone": figures(2, 3, 420, 600, 1, 3, 1, 0.10, 1, 1),
           "web": figures(1, 2, 230, 700, 1, 2, 0, 0.05, 0, 1),
           "all": figures(3, 5, 420, 700, 2, 5, 1, 0.15, 1, 2)}
# 08/09–30/11 and December 2024–November 2025 both hold A to G. Phone: [105, 310, 420, 500, 600]
# → P50 rank 3 = 420, P95 rank 5 = 600; 7 caller turns over 4 calls; 0.10 + 0.20 + 0.30 = 0.60;
# callers num-A, num-B, num-C = 3. Together 8 answers [105, 230, 310, 420, 500, 500, 600, 700]
# → P50 rank 4 = 420, P95 rank ceil(7.6) = 8 = 700; 10 turns over 7 calls; 0.60 + 0.12 = 0.72.
A_TO_G = {"phone": figures(4, 5, 420, 600, 1, 7, 1, 0.60, 1, 3),
          "web": NOVEMBER["web"],
          "all": figures(7, 8, 420, 700, 2, 10, 2, 0.72, 2, 5)}


def assert_figures(found: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    assert set(found) == set(expected), where
    for name, value in expected.items():
        if isinstance(value, float):
            assert found[name] == pytest.approx(value), f"{where}: {name}"
        else:
            assert found[name] == value, f"{where}: {name}"


def check_view(view: dict[str, Any], expected: dict[str, dict[str, dict[str, Any]]], whole: dict[str, Any],
               count: int) -> None:
    """Every period of a view: the expected ones as given, all the others empty."""
    assert len(view["periods"]) == count
    for period in view["periods"]:
        for channel in ("phone", "web", "all"):
            want = expected.get(period["period"], {}).get(channel, NOTHING)
            assert_figures(period["channels"][channel], want, f"{period['period']} {channel}")
    for channel in ("phone", "web", "all"):
        assert_figures(view["whole"]["channels"][channel], whole[channel], f"whole {channel}")


# ---------------------------------------------------------------- the figures (JSON)

async def test_every_figure_matches_the_hand_count(store):
    async with client(make_app(store, review_settings(host="127.0.0.1")), ip="127.0.0.1") as http:
        response = await http.get("/api/tableau-de-bord", params=WINDOW)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["time_zone"] == "Europe/Paris"
    assert body["window"] == {"end": END, "days": 30, "weeks": 12, "months": 12}
    assert body["targets"] == {"latency_p95_ms": 500.0, "error_rate": 0.01, "turns_per_call": [2.0, 3.0]}

    days = body["days"]
    assert [days["periods"][0]["period"], days["periods"][-1]["period"]] == ["2025-11-01", "2025-11-30"]
    assert days["whole"]["first_day"] == "2025-11-01" and days["whole"]["last_day"] == END
    check_view(days, {"2025-11-20": DAY_20, "2025-11-21": DAY_21, "2025-11-24": DAY_24}, NOVEMBER, 30)

    weeks = body["weeks"]
    assert [weeks["periods"][0]["period"], weeks["periods"][-1]["period"]] == ["2025-W37", "2025-W48"]
    assert weeks["periods"][-1]["first_day"] == "2025-11-24" and weeks["periods"][-1]["last_day"] == END
    check_view(weeks, {"2025-W43": WEEK_43, "2025-W47": WEEK_47, "2025-W48": DAY_24}, A_TO_G, 12)

    months = body["months"]
    assert [months["periods"][0]["period"], months["periods"][-1]["period"]] == ["2024-12", "2025-11"]
    check_view(months, {"2025-10": WEEK_43, "2025-11": NOVEMBER}, A_TO_G, 12)


async def test_the_window_can_be_moved_and_narrowed(store):
    async with client(make_app(store, review_settings(host="127.0.0.1")), ip="127.0.0.1") as http:
        # Three days ending on Monday 01/12: H (Paris 01/12 00:30) now counts, B on 21/11 does not.
        body = (await http.get("/api/tableau-de-bord",
                               params={"end": "2025-12-01", "days": "3", "weeks": "1", "months": "1"})).json()
        refused = await http.get("/api/tableau-de-bord", params={"days": "0", "end": "30/11/2025"})
    assert [p["period"] for p in body["days"]["periods"]] == ["2025-11-29", "2025-11-30", "2025-12-01"]
    # H alone: one phone call, 1 caller turn, one answer of 9000 + 0 ms, $1.00.
    only_h = {"phone": figures(1, 1, 9000, 9000, 0, 1, 0, 1.00, 0, 1), "web": NOTHING,
              "all": figures(1, 1, 9000, 9000, 0, 1, 0, 1.00, 0, 1)}
    check_view(body["days"], {"2025-12-01": only_h}, only_h, 3)
    assert [p["period"] for p in body["weeks"]["periods"]] == ["2025-W49"]
    assert [p["period"] for p in body["months"]["periods"]] == ["2025-12"]
    assert refused.status_code == 400
    assert refused.json()["detail"] == ["date de fin invalide (attendu AAAA-MM-JJ)",
                                        "nombre de jours invalide : 0 (de 1 à 366)"]


# ---------------------------------------------------------------- the page

def text_of(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def tile(page: str, key: str) -> str:
    match = re.search(rf'<a class="tile[^"]*" href="#kpi-{key}" data-kpi="{key}">(.*?)</a>', page, re.S)
    assert match, key
    return text_of(match.group(1))


def table_row(page: str, key: str, title: str) -> list[str]:
    section = re.search(rf'<section class="kpi" id="kpi-{key}".*?</section>', page, re.S).group(0)
    row = re.search(rf"<tr><th scope=\"row\">{re.escape(title)}</th>(.*?)</tr>", section, re.S)
    assert row, (key, title)
    return [text_of(cell) for cell in re.findall(r"<td>(.*?)</td>", row.group(1), re.S)]


def chart(page: str, key: str) -> str:
    return re.search(rf'<svg class="kpi-chart" id="chart-{key}".*?</svg>', page, re.S).group(0)


def series(svg: str, channel: str) -> str:
    return re.search(rf'<g class="series series-{channel}" data-channel="{channel}">.*?</g>', svg, re.S).group(0)


async def test_the_page_shows_the_figures_in_french(store):
    async with client(make_app(store, review_settings(host="127.0.0.1")), ip="127.0.0.1") as http:
        response = await http.get("/tableau-de-bord", params=WINDOW)
    assert response.status_code == 200
    page = response.text
    assert "Du 01/11/2025 au 30/11/2025, heure de Paris" in page
    assert '<a href="/tableau-de-bord" aria-current="page">Tableau de bord</a>' in page

    # Over the 30 days (NOVEMBER above), all channels, then each alone.
    assert tile(page, "latency") == ("Latence de réponse (P95) 700 ms médiane 500 ms · 7 réponses "
                                     "téléphone 600 ms · navigateur 700 ms objectif : moins de 500 ms — non atteint")
    assert tile(page, "interruptions") == ("Taux d'interruption 33,3 % 2 sur 6 conversations "
                                           "téléphone 33,3 % · navigateur 33,3 %")
    assert tile(page, "turns") == ("Tours par conversation 1,5 9 tours · 6 conversations téléphone 2,0 · "
                                   "navigateur 1,0 objectif : de 2 à 3 tours — non atteint")
    assert tile(page, "errors") == ("Taux d'erreur 33,3 % 2 sur 6 conversations téléphone 33,3 % · "
                                    "navigateur 33,3 % objectif : moins de 1 % — non atteint")
    assert tile(page, "cost") == ("Coût ≥ $0.42 2 conversations au coût inconnu "
                                  "téléphone ≥ $0.30 · navigateur ≥ $0.12")
    assert tile(page, "users") == "Utilisateurs actifs 4 6 conversations téléphone 2 · navigateur 2"

    # The tables: téléphone, navigateur, ensemble.
    assert table_row(page, "latency", "jeu. 20/11/2025") == [
        "600 ms médiane 420 ms · 2 réponses", "700 ms médiane 230 ms · 2 réponses",
        "700 ms médiane 420 ms · 4 réponses"]
    assert table_row(page, "cost", "ven. 21/11/2025") == [
        "coût inconnu 1 conversation au coût inconnu", "$0.00", "coût inconnu 1 conversation au coût inconnu"]
    assert table_row(page, "turns", "lun. 24/11/2025") == [
        "3,0 3 tours · 1 conversation", "0,5 1 tour · 2 conversations", "1,3 4 tours · 3 conversations"]
    assert table_row(page, "errors", "lun. 24/11/2025") == [
        "0 % 0 sur 1 conversation", "50 % 1 sur 2 conversations", "33,3 % 1 sur 3 conversations"]
    assert table_row(page, "interruptions", "sam. 22/11/2025") == ["— aucune conversation"] * 3
    assert table_row(page, "users", "lun. 24/11/2025") == [
        "1 1 conversation", "2 2 conversations", "3 3 conversations"]
    assert table_row(page, "users", "Ensemble de la période (du 01/11/2025 au 30/11/2025)") == [
        "2 3 conversations", "2 3 conversations", "4 6 conversations"]


async def test_the_charts_are_svg_with_a_line_per_channel_and_gaps_where_there_is_nothing(store):
    async with client(make_app(store, review_settings(host="127.0.0.1")), ip="127.0.0.1") as http:
        page = (await http.get("/tableau-de-bord", params=WINDOW)).text
        weekly = (await http.get("/tableau-de-bord", params={**WINDOW, "view": "weeks"})).text
    assert page.count('<svg class="kpi-chart"') == 6
    latency = chart(page, "latency")
    assert '<title id="chart-latency-title">Latence de réponse (P95), par jour</title>' in latency
    assert "Un jour sans conversation laisse un trou dans les courbes." in latency
    assert "Jour (heure de Paris)" in latency and "P95 (ms)" in latency and "objectif 500 ms" in latency
    for channel in ("phone", "web", "all"):
        assert f'data-channel="{channel}"' in latency
    # The phone answered on 20, 21 and 24/11: a line from the 20th to the 21st, then a gap.
    phone = series(latency, "phone")
    assert phone.count("<circle") == 3 and re.search(r'<path d="M[\d. ]+L[\d. ]+M[\d. ]+"/>', phone)
    assert "téléphone, ven. 21/11/2025 : 310 ms (médiane 310 ms · 1 réponse)" in phone
    # Costs are 0 on days without calls: a point every day; 21/11 is marked unknown, not $0.
    cost_phone = series(chart(page, "cost"), "phone")
    assert cost_phone.count("<circle") == 29 and cost_phone.count('class="unknown"') == 1
    assert "Un jour sans conversation compte 0." in chart(page, "cost")

    assert '<title id="chart-errors-title">Taux d&#39;erreur, par semaine</title>' in weekly
    assert "Semaine ISO" in weekly and ">S48<" in weekly and ">S46<" in weekly
    assert table_row(weekly, "interruptions", "semaine 47 de 2025 (17/11 – 23/11)") == [
        "50 % 1 sur 2 conversations", "100 % 1 sur 1 conversation", "66,7 % 2 sur 3 conversations"]


# ---------------------------------------------------------------- access and availability

async def test_the_dashboard_is_behind_the_review_sign_in(store):
    async with client(make_app(store, signin_settings())) as http:
        redirect = await http.get("/tableau-de-bord", params=WINDOW)
        assert redirect.status_code == 303
        target = urlsplit(redirect.headers["location"])
        assert target.path == "/review/login"
        assert parse_qs(target.query)["next"] == [f"/tableau-de-bord?end={END}"]
        api = await http.get("/api/tableau-de-bord")
        assert api.status_code == 401 and api.headers["www-authenticate"].startswith("Bearer")
        with_token = await http.get("/api/tableau-de-bord", params=WINDOW,
                                    headers={"Authorization": f"Bearer {TOKEN}"})
        assert with_token.status_code == 200 and with_token.json()["days"]["whole"]["channels"]["all"]["calls"] == 6

        signed = await sign_in(http, next_path=f"/tableau-de-bord?end={END}")
        assert signed.status_code == 303 and signed.headers["location"] == f"/tableau-de-bord?end={END}"
        page = await http.get(signed.headers["location"])
        assert page.status_code == 200 and "Tableau de bord" in page.text
        assert "style-src 'self'" in page.headers["content-security-policy"]   # hence no inline style in the SVG
        calls = await http.get("/calls")   # the other pages link to the dashboard
        assert '<a href="/tableau-de-bord">Tableau de bord</a>' in calls.text


async def test_without_credentials_a_public_server_keeps_the_dashboard_closed(store):
    async with client(make_app(store, review_settings(host="0.0.0.0"))) as http:
        assert (await http.get("/tableau-de-bord")).status_code == 404
        assert (await http.get("/api/tableau-de-bord")).status_code == 404


async def test_an_unavailable_call_log_is_a_503(tmp_path: Path):
    never_migrated = f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}"   # no tables: every query fails
    broken = await CallLogStore.open(never_migrated)
    try:
        for provider in (None, lambda: None, broken):
            async with client(make_app(provider, review_settings(host="127.0.0.1")), ip="127.0.0.1") as http:
                page = await http.get("/tableau-de-bord")
                assert page.status_code == 503 and "Journal indisponible" in page.text
                api = await http.get("/api/tableau-de-bord")
                assert api.status_code == 503 and api.json() == {"detail": "journal des appels indisponible"}
    finally:
        await broken.close()


async def test_the_services_reader_feeds_the_dashboard(database_url):  # noqa: F811
    """Through the provider the service gives the review (app/calllog/reader.py), which opens the store."""
    provider = CallLogReader(review_settings(host="127.0.0.1", database_url=database_url))
    try:
        await (await provider()).apply(CALLS[0])
        async with client(make_app(provider, review_settings(host="127.0.0.1")), ip="127.0.0.1") as http:
            body = (await http.get("/api/tableau-de-bord", params=WINDOW)).json()
    finally:
        await provider.close()
    assert_figures(body["days"]["whole"]["channels"]["phone"], DAY_20["phone"], "call A alone")


async def test_an_empty_call_log_has_gaps_and_zeros(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.sqlite3'}"
    await upgrade_database(url)
    empty = await CallLogStore.open(url)
    try:
        async with client(make_app(empty, review_settings(host="127.0.0.1")), ip="127.0.0.1") as http:
            page = (await http.get("/tableau-de-bord", params={**WINDOW, "days": "7", "view": "months"})).text
            bad = (await http.get("/tableau-de-bord", params={"view": "années", "weeks": "500"})).text
    finally:
        await empty.close()
    assert tile(page, "latency").startswith("Latence de réponse (P95) — aucune réponse")
    assert tile(page, "cost") == "Coût $0.00 téléphone $0.00 · navigateur $0.00"
    assert series(chart(page, "errors"), "all").count("<circle") == 0      # no rate without calls
    assert series(chart(page, "users"), "all").count("<circle") == 12      # 0 users, month after month
    assert "vue inconnue : années" in bad and "nombre de semaines invalide : 500 (de 1 à 104)" in bad


# ---------------------------------------------------------------- the arithmetic

def test_percentiles_are_by_nearest_rank():
    assert nearest_rank([], 95) is None
    assert nearest_rank([7.0], 95) == 7.0
    assert nearest_rank([700, 230, 500], 50) == 500      # rank ceil(1.5) = 2
    assert nearest_rank(list(range(1, 21)), 95) == 19    # rank ceil(19.0) = 19
    assert nearest_rank(list(range(1, 22)), 95) == 20    # rank ceil(19.95) = 20


def test_the_y_scale_steps_by_round_numbers():
    assert nice_scale(700) == (200, 800)
    assert nice_scale(1.0) == (0.25, 1.0)
    assert nice_scale(0.42) == (0.2, 0.6)
    assert nice_scale(0) == (0.25, 1.0)
    assert nice_scale(3, whole_numbers=True) == (1, 3)
