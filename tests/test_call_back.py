"""Call-backs over real sockets: `octi call-out` and `POST /api/calls/outbound` place a call
through the REST impersonator, whose callee (a person or an answering machine) answers it on
the running line's outbound webhook; the review's « Rappeler » button does the same."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.agent import phrases
from app.channels.twilio import twiml
from app.calllog.records import CallEvent, CallStarted
from app.calllog.store import CallLogStore
from app.simulators.twilio_caller import CallScript
from app.simulators.twilio_rest import Callee
from tests.cli_runner import run_octi
from tests.harness import PUBLIC_URL, running_line
from tests.test_behaviours import creates, stored
from tests.test_call_path import call
from tests.test_call_tools import ACCOUNT, line_with_rest

TOKEN = "review-token-0123456789abcdefghijkl"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
FARMER = "+33612345678"
QUESTION = "Mes poules ne pondent plus depuis une semaine"
OUR_NUMBER = "+33198765432"


def listens_briefly() -> Callee:
    return Callee("human", CallScript(hangup_after=4.0))


async def call_back(line, body: dict, **options) -> httpx.Response:
    async with httpx.AsyncClient(base_url=line.url, trust_env=False) as http:
        return await http.post("/api/calls/outbound", json=body, **options)


async def test_the_api_calls_back_a_person_whom_octi_greets_with_the_question(double):
    double.script_next_connection(greeting_seconds=1.0)
    async with line_with_rest(double, review_token=TOKEN) as (line, rest):
        rest.callee = listens_briefly()
        answer = await call_back(line, {"to": "+33 6 12 34 56 78", "question": QUESTION}, headers=BEARER)
        assert answer.status_code == 201, answer.text
        [placed] = rest.created_calls
        result = await placed.result()
        detail = await stored(line, placed.sid)
    assert answer.json() == {"call_sid": placed.sid, "to": "+336••••••78"}
    assert placed.params["To"] == FARMER and placed.params["From"] == OUR_NUMBER
    assert placed.params["MachineDetection"] == "Enable"
    assert placed.params["Url"].startswith(f"{PUBLIC_URL}/voice/outbound?question=Mes+poules")
    assert placed.params["StatusCallback"] == f"{PUBLIC_URL}/voice/status" and placed.status_callbacks == [204]
    # A person answered: the same stream as an incoming call, greeted as a call-back.
    assert result.status == "completed" and result.violations == [], result.summary()
    assert result.custom_parameters["direction"] == "outbound" and result.custom_parameters["question"] == QUESTION
    assert f"je vous rappelle au sujet de votre question : {QUESTION}." in creates(double.connections[0])[0]
    assert detail.summary.caller_masked == "+336••••••78" and detail.called == OUR_NUMBER
    assert [(e.type, e.detail) for e in detail.events] == [("outbound", QUESTION)]


async def test_octi_call_out_from_the_command_line_reaches_a_person(double, monkeypatch):
    double.script_next_connection(greeting_seconds=1.0)
    async with line_with_rest(double) as (line, rest):
        rest.callee = listens_briefly()
        for name, value in {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": rest.auth_token,
                            "TWILIO_API_BASE": rest.url, "TWILIO_PHONE_NUMBER": OUR_NUMBER,
                            "PUBLIC_BASE_URL": PUBLIC_URL}.items():
            monkeypatch.setenv(name, value)
        # The command runs its own event loop: off this one, which serves the line.
        placed_out = await asyncio.to_thread(run_octi, "call-out", FARMER, "--question", QUESTION)
        refused = await asyncio.to_thread(run_octi, "call-out", "06 12")
        [placed] = rest.created_calls
        result = await placed.result()
    assert placed_out.exit_code == 0, placed_out.output
    assert placed_out.stdout == f"call-back {placed.sid} placed to +336••••••78\n"
    assert refused.exit_code == 1 and "Numéro invalide" in refused.stderr and "(invalid_number)" in refused.stderr
    assert result.status == "completed", result.summary()
    assert QUESTION in creates(double.connections[0])[0]


async def test_call_backs_are_refused_clearly(double):
    async with running_line(openai_realtime_url=double.url, review_token=TOKEN) as line:
        unauthenticated = await call_back(line, {"to": FARMER})
        bad_number = await call_back(line, {"to": "0612345678"}, headers=BEARER)
        no_number = await call_back(line, {"question": QUESTION}, headers=BEARER)
        no_rest = await call_back(line, {"to": FARMER}, headers=BEARER)
        unknown_call = await call_back(line, {"call_id": 999}, headers=BEARER)
    assert unauthenticated.status_code == 401
    assert (bad_number.status_code, bad_number.json()["code"]) == (422, "invalid_number")
    assert "E.164" in bad_number.json()["detail"]
    assert (no_number.status_code, no_number.json()["code"]) == (422, "invalid_request")
    assert (no_rest.status_code, no_rest.json()["code"]) == (409, "not_configured")
    assert "TWILIO_ACCOUNT_SID" in no_rest.json()["detail"]
    assert (unknown_call.status_code, unknown_call.json()["code"]) == (404, "not_found")
    async with line_with_rest(double, review_token=TOKEN, allowed_callers="+33600000001") as (line, rest):
        stranger = await call_back(line, {"to": FARMER}, headers=BEARER)
    assert (stranger.status_code, stranger.json()["code"]) == (403, "not_allowed")
    assert rest.created_calls == []


async def test_a_call_back_answered_while_the_lines_are_full_hears_that_they_are_busy(double):
    double.script_next_connection(greeting_seconds=1.0)
    async with line_with_rest(double, review_token=TOKEN, max_concurrent_calls=1) as (line, rest):
        rest.callee = listens_briefly()
        incoming = asyncio.create_task(call(line, CallScript(hangup_after=6.0)))
        async with asyncio.timeout(5):
            while not line.metrics.active_calls:
                await asyncio.sleep(0.05)
        answer = await call_back(line, {"to": FARMER, "question": QUESTION}, headers=BEARER)
        [placed] = rest.created_calls
        result = await placed.result()
        await incoming
        detail = await stored(line, placed.sid)
    assert answer.status_code == 201
    assert result.status == "spoken_only" and result.say_texts == [twiml.REFUSALS["busy"]], result.summary()
    assert detail.summary.outcome == "busy" and len(double.connections) == 1


# ------------------------------------------------------------------ from the review's call page

VOICEMAIL_CALL = "CA" + "5" * 32


async def log_a_voicemail(line, *, number_kept: bool) -> int:
    """A call whose caller asked for an advisor, got none, and left a voicemail."""
    at = datetime.now(UTC) - timedelta(minutes=5)
    for record in (
        CallStarted(call_sid=VOICEMAIL_CALL, stream_sid="MZ1", channel="twilio", caller_masked="+336••••••78",
                    caller_hash="h" * 32, caller_number=FARMER if number_kept else None, called=OUR_NUMBER,
                    started_at=at, codec="pcm16", model="gpt-realtime-2.1", rag_mode="inject"),
        CallEvent(VOICEMAIL_CALL, at + timedelta(seconds=20), "transfer", QUESTION),
        CallEvent(VOICEMAIL_CALL, at + timedelta(seconds=45), "transfer_unanswered", "no-answer"),
        CallEvent(VOICEMAIL_CALL, at + timedelta(seconds=80), "voicemail", "https://api.twilio.com/RE1 (12 s)"),
    ):
        line.service.calllog.submit(record)
    assert await line.service.calllog.flush(timeout=15)
    async with await CallLogStore.open(line.settings.effective_database_url) as store:
        return await store.find_call_id(VOICEMAIL_CALL)


def form_token(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


async def test_the_review_s_call_back_button_calls_back_a_voicemail_and_logs_it(double):
    async with line_with_rest(double, review_token=TOKEN, store_caller_number=True) as (line, rest):
        rest.callee = Callee("machine")
        call_id = await log_a_voicemail(line, number_kept=True)
        async with httpx.AsyncClient(base_url=line.url, trust_env=False, follow_redirects=True) as browser:
            page = await browser.get(f"/calls/{call_id}", params={"token": TOKEN})  # signs in
            assert "Rappeler" in page.text and f"au sujet de : « {QUESTION} »" in page.text
            forged = await browser.post("/api/calls/outbound", data={"call_id": str(call_id), "csrf": "forged"})
            no_header = await browser.post("/api/calls/outbound", json={"call_id": call_id})
            assert rest.created_calls == []
            after = await browser.post("/api/calls/outbound", data={"call_id": str(call_id),
                                                                    "csrf": form_token(page.text)})
            [placed] = rest.created_calls
            result = await placed.result()
            assert await line.service.calllog.flush(timeout=15)
            page_later = await browser.get(f"/calls/{call_id}")
        machine_call = await stored(line, placed.sid)
    assert forged.status_code == 403 and "Requête refusée" in forged.text
    assert (no_header.status_code, no_header.json()["code"]) == (403, "csrf")
    assert after.status_code == 200 and str(after.url).endswith(f"/calls/{call_id}?rappel=placed")
    assert "Rappel lancé" in after.text
    assert placed.params["To"] == FARMER and "question=Mes+poules" in placed.params["Url"]
    assert "rappel lancé" in page_later.text and f"{placed.sid} vers +336••••••78" in page_later.text
    # An answering machine: the short message, then the end of the call; no stream.
    assert result.status == "spoken_only" and result.streams == [], result.summary()
    assert result.say_texts == [phrases.CALL_BACK_MACHINE_MESSAGE] and result.hangup
    assert machine_call.summary.outcome == "machine_answered"
    assert [(e.type, e.detail) for e in machine_call.events] == [("outbound", QUESTION),
                                                                ("machine_answered", "machine_start")]
    assert double.connections == []


@pytest.mark.parametrize("nobody, why", [("no-answer", "pas de réponse"), ("busy", "ligne occupée")])
async def test_a_call_back_nobody_answers_is_logged_on_the_call_it_was_about(double, nobody, why):
    async with line_with_rest(double, review_token=TOKEN, store_caller_number=True) as (line, rest):
        rest.callee = Callee(nobody)
        call_id = await log_a_voicemail(line, number_kept=True)
        answer = await call_back(line, {"call_id": call_id}, headers=BEARER)
        [placed] = rest.created_calls
        result = await placed.result()
        assert await line.service.calllog.flush(timeout=15)
        async with httpx.AsyncClient(base_url=line.url, trust_env=False, follow_redirects=True) as browser:
            page = await browser.get(f"/calls/{call_id}", params={"token": TOKEN})
        async with await CallLogStore.open(line.settings.effective_database_url) as store:
            events = [(e.type, e.detail) for e in (await store.get_call(call_id)).events]
    assert answer.status_code == 201, answer.text
    assert placed.params["StatusCallback"] == f"{PUBLIC_URL}/voice/status?about={VOICEMAIL_CALL}"
    assert result.status == nobody and placed.status_callbacks == [204]  # signed over the query too
    assert events[-2:] == [("call_back", f"{placed.sid} vers +336••••••78"),
                           ("call_back_unanswered", f"{placed.sid} : {why}")]
    assert "rappel sans réponse" in page.text and why in page.text
    assert double.connections == []


async def test_without_the_caller_s_number_the_page_says_why_it_cannot_call_back(double):
    async with line_with_rest(double, review_token=TOKEN) as (line, rest):
        call_id = await log_a_voicemail(line, number_kept=False)
        async with httpx.AsyncClient(base_url=line.url, trust_env=False, follow_redirects=True) as browser:
            page = await browser.get(f"/calls/{call_id}", params={"token": TOKEN})
        refused = await call_back(line, {"call_id": call_id}, headers=BEARER)
    assert "STORE_CALLER_NUMBER" in page.text and 'action="/api/calls/outbound"' not in page.text
    assert (refused.status_code, refused.json()["code"]) == (409, "number_not_kept")
    assert rest.created_calls == []
