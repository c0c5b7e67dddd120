"""The product's REST client (`TwilioRest`) against the local impersonator of Twilio's REST API,
over real sockets: the calls it acts on are simulated calls to a small customer app written
here, which checks every Twilio signature and records what its streams receive."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from twilio.request_validator import RequestValidator

from app.channels.twilio.rest import TwilioRest, TwilioRestError
from app.config import Settings
from app.simulators import twilio_wire as wire
from app.simulators.twilio_caller import Advisor, CallResult, CallScript, Utterance, place_call
from app.simulators.twilio_rest import Callee, TwilioRestDouble
from tests.harness import free_loopback_port, loopback_socket, serving_on

AUDIO = Path(__file__).parent / "audio"
TOKEN = "test-auth-token-0123456789abcdef"
ACCOUNT = "AC" + "5" * 32
PUBLIC = "https://octi.example.test"
OUR_NUMBER = "+33198765432"
ADVISOR = "+33611223344"
GREETING = wire.comfort_noise_frame(np.random.default_rng(1), -20.0) * 15  # 300 ms of sound


def twiml(body: str) -> Response:
    return Response(f"<Response>{body}</Response>", media_type="application/xml")


def connect_stream() -> str:
    return '<Connect><Stream url="wss://octi.example.test/stream"><Parameter name="leg" value="octi"/></Stream></Connect>'


@dataclass
class Stream:
    """What one media stream brought to the app."""

    call_sid: str = ""
    events: list[str] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class CustomerApp:
    """Webhook, media stream, whisper, dial action, outbound-call webhook and call status, every
    request's signature checked against the public URL."""

    def __init__(self, *, after_dial: str = connect_stream()) -> None:
        self.validator = RequestValidator(TOKEN)
        self.after_dial = after_dial
        self.requests: dict[str, list[dict[str, str]]] = {}
        self.invalid_signatures = 0
        self.streams: asyncio.Queue[Stream] = asyncio.Queue()  # each one once its `start` arrived
        self.app = Starlette(routes=[
            *(Route(path, self._form(path, answer), methods=["POST"]) for path, answer in (
                ("/voice/incoming", lambda _: twiml(connect_stream())),
                ("/whisper", lambda _: twiml('<Say language="fr-FR">Un éleveur vous est transféré.</Say>')),
                ("/dial-done", lambda _: twiml(self.after_dial)),
                ("/voice/outbound", self._outbound),
                ("/call-status", lambda _: Response(status_code=204)),
            )),
            WebSocketRoute("/stream", self._stream),
        ])

    def _form(self, path: str, answer):
        async def handle(request: Request) -> Response:
            form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            if not self.validator.validate(PUBLIC + path, form, request.headers.get("X-Twilio-Signature", "")):
                self.invalid_signatures += 1
                return Response(status_code=403)
            self.requests.setdefault(path, []).append(form)
            return answer(form)
        return handle

    @staticmethod
    def _outbound(form: dict[str, str]) -> Response:
        if form.get("AnsweredBy", "human") != "human":
            return twiml('<Say language="fr-FR">Bonjour, ici OCTI. Rappelez-nous quand vous pourrez.</Say><Hangup/>')
        return twiml(connect_stream())

    async def _stream(self, ws: WebSocket) -> None:
        if not self.validator.validate("wss://octi.example.test/stream", {}, ws.headers.get("x-twilio-signature", "")):
            self.invalid_signatures += 1
            await ws.close(code=1008)
            return
        await ws.accept()
        stream = Stream()
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                event = json.loads(message["text"])
                stream.events.append(event["event"])
                if event["event"] == "start":
                    stream.call_sid = event["start"]["callSid"]
                    # A short greeting, so that the caller's next utterance becomes due.
                    await ws.send_text(json.dumps({"event": "media", "streamSid": event["streamSid"],
                                                   "media": {"payload": base64.b64encode(GREETING).decode()}}))
                    self.streams.put_nowait(stream)
        finally:
            stream.closed.set()


@contextlib.asynccontextmanager
async def serving(app: Starlette):
    sock, port = loopback_socket()
    async with serving_on(sock, uvicorn.Config(app, lifespan="off", log_level="warning", ws="websockets-sansio")):
        yield f"http://127.0.0.1:{port}"


def rest_client(api_base: str, *, auth_token: str = TOKEN) -> TwilioRest:
    return TwilioRest(Settings(_env_file=None, twilio_account_sid=ACCOUNT, twilio_auth_token=auth_token,
                               twilio_api_base=api_base, twilio_phone_number=OUR_NUMBER))


@contextlib.asynccontextmanager
async def world(customer: CustomerApp):
    """The customer app, the REST impersonator routing calls.create's URLs to it, and the client."""
    async with serving(customer.app) as url, TwilioRestDouble(account_sid=ACCOUNT, auth_token=TOKEN,
                                                              server_url=url, public_url=PUBLIC) as double:
        rest = rest_client(double.url)
        try:
            yield url, double, rest
        finally:
            await rest.close()


def call(url: str, double: TwilioRestDouble, script: CallScript) -> asyncio.Task[CallResult]:
    return asyncio.create_task(place_call(url, script=script, public_url=PUBLIC, rest_api=double))


async def test_hang_up_stops_the_live_stream_and_a_second_hang_up_finds_the_call_ended() -> None:
    customer = CustomerApp()
    async with world(customer) as (url, double, rest):
        running = call(url, double, CallScript(hangup_after=60))
        stream = await customer.streams.get()
        await rest.hang_up(stream.call_sid)
        result = await running
        await stream.closed.wait()
        await rest.hang_up(stream.call_sid)  # already ended: Twilio's 20404 counts as done

    assert stream.events[-1] == "stop" and "media" in stream.events
    assert result.hung_up_by_rest and result.closed_by == "caller"
    assert [s.ended_by for s in result.streams] == ["rest_hang_up"]
    assert [(u["params"], u["status"]) for u in double.call_updates] == [({"Status": "completed"}, 200),
                                                                          ({"Status": "completed"}, 404)]
    assert customer.invalid_signatures == 0


async def test_redirect_to_a_dial_whispers_to_the_advisor_then_the_caller_comes_back_to_octi() -> None:
    customer = CustomerApp()
    script = CallScript(utterances=[Utterance(AUDIO / "question_followup.wav")], hangup_after=60,
                        hangup_when_done_after_s=0.3, twiml_speed=50.0,
                        advisor=Advisor("answers", ring_seconds=3.0, talk_seconds=12.0))
    async with world(customer) as (url, double, rest):
        running = call(url, double, script)
        first = await customer.streams.get()
        await rest.redirect(first.call_sid, (
            f'<Response><Say language="fr-FR">Je vous passe un conseiller.</Say>'
            f'<Dial timeout="20" action="{PUBLIC}/dial-done" callerId="{OUR_NUMBER}">'
            f'<Number url="{PUBLIC}/whisper">{ADVISOR}</Number></Dial></Response>'))
        back = await customer.streams.get()
        result = await running

    assert first.events[-1] == "stop" and back.call_sid == first.call_sid
    assert [s.ended_by for s in result.streams] == ["rest_redirect", "caller"]
    assert result.streams[1].utterances == ["question_followup"]  # the caller carried on with what was left
    assert result.connect_action is None and "/voice/action" not in customer.requests
    assert [d.source for d in result.documents] == ["webhook", "rest_twiml", "dial_action"]
    assert result.documents[1].say_texts == ["Je vous passe un conseiller."]
    (dial,) = result.dials
    assert (dial.number, dial.status, dial.duration_s) == (ADVISOR, "completed", 12)
    assert dial.whisper_texts == ["Un éleveur vous est transféré."]
    (whisper,) = customer.requests["/whisper"]
    assert (whisper["To"], whisper["From"], whisper["Direction"]) == (ADVISOR, OUR_NUMBER, "outbound-dial")
    assert whisper["ParentCallSid"] == first.call_sid and whisper["CallSid"] == dial.dial_call_sid
    (action,) = customer.requests["/dial-done"]
    assert (action["DialCallStatus"], action["DialCallSid"], action["DialCallDuration"]) == (
        "completed", dial.dial_call_sid, "12")
    assert action["CallSid"] == first.call_sid and action["CallStatus"] == "in-progress"
    assert customer.invalid_signatures == 0 and result.errors == []


@pytest.mark.parametrize("answer", ["no-answer", "busy"])
async def test_an_advisor_who_does_not_pick_up_reaches_the_dial_action_with_its_status(answer: str) -> None:
    customer = CustomerApp(after_dial='<Say language="fr-FR">Aucun conseiller n\'est disponible.</Say><Hangup/>')
    script = CallScript(hangup_after=60, twiml_speed=50.0, advisor=Advisor(answer))
    async with world(customer) as (url, double, rest):
        running = call(url, double, script)
        stream = await customer.streams.get()
        await rest.redirect(stream.call_sid, f'<Response><Dial timeout="20" action="{PUBLIC}/dial-done">'
                                             f'<Number url="{PUBLIC}/whisper">{ADVISOR}</Number></Dial></Response>')
        result = await running

    (action,) = customer.requests["/dial-done"]
    assert action["DialCallStatus"] == answer and action["DialCallDuration"] == "0"
    assert "/whisper" not in customer.requests and result.dials[0].whisper_texts == []
    last = result.documents[-1]
    assert (last.source, last.say_texts, last.hangup) == ("dial_action", ["Aucun conseiller n'est disponible."], True)
    assert [s.ended_by for s in result.streams] == ["rest_redirect"]


async def test_send_sms_is_recorded_with_its_body_and_numbers() -> None:
    async with world(CustomerApp()) as (_, double, rest):
        sid = await rest.send_sms(ADVISOR, "Récapitulatif OCTI : aérez le bâtiment.")
    assert sid.startswith("SM")
    assert double.messages == [{"sid": sid, "to": ADVISOR, "from": OUR_NUMBER,
                                "body": "Récapitulatif OCTI : aérez le bâtiment.", "messaging_service_sid": None,
                                "status": "queued"}]


async def test_a_call_placed_with_machine_detection_reaches_a_machine() -> None:
    customer = CustomerApp()
    async with world(customer) as (_, double, rest):
        double.callee = Callee("machine", CallScript(hangup_after=5))
        sid = await rest.place_call("+33699887766", url=f"{PUBLIC}/voice/outbound",
                                    status_callback=f"{PUBLIC}/call-status", machine_detection=True)
        (created,) = double.created_calls
        result = await created.result()

    assert created.sid == sid and created.params["MachineDetection"] == "Enable"
    (hook,) = customer.requests["/voice/outbound"]
    assert (hook["CallSid"], hook["Direction"], hook["AnsweredBy"]) == (sid, "outbound-api", "machine_start")
    assert (hook["From"], hook["To"], hook["AccountSid"]) == (OUR_NUMBER, "+33699887766", ACCOUNT)
    assert result.status == "spoken_only" and result.say_texts == ["Bonjour, ici OCTI. Rappelez-nous quand vous pourrez."]
    (status,) = customer.requests["/call-status"]
    assert status["CallStatus"] == "completed" and created.status_callbacks == [204]


async def test_bad_credentials_are_refused_with_401() -> None:
    async with world(CustomerApp()) as (_, double, _rest):
        wrong = rest_client(double.url, auth_token="not-the-token")
        with pytest.raises(TwilioRestError) as refused:
            await wrong.send_sms(ADVISOR, "Bonjour")
        await wrong.close()
    assert (refused.value.status, refused.value.code) == (401, 20003)
    assert double.messages == []


async def test_an_unreachable_api_is_a_twilio_rest_error() -> None:
    port = free_loopback_port()
    rest = rest_client(f"http://127.0.0.1:{port}")
    with pytest.raises(TwilioRestError) as failed:
        await rest.hang_up("CA" + "1" * 32)
    await rest.close()
    assert failed.value.status is None and "unreachable" in str(failed.value)


async def test_twiml_over_4000_characters_is_refused_before_sending() -> None:
    async with world(CustomerApp()) as (_, double, rest):
        with pytest.raises(TwilioRestError) as refused:
            await rest.redirect("CA" + "1" * 32, "<Response>" + "<Say>Bonjour.</Say>" * 300 + "</Response>")
    assert refused.value.code == 32018 and double.requests == []


async def test_the_impersonator_checks_parameters_as_twilio_does() -> None:
    async with world(CustomerApp()) as (_, double, _rest):
        async with httpx.AsyncClient(base_url=double.url, auth=(ACCOUNT, TOKEN)) as http:
            base = f"/2010-04-01/Accounts/{ACCOUNT}"
            no_body = await http.post(base + "/Messages.json", data={"To": ADVISOR, "From": OUR_NUMBER})
            no_to = await http.post(base + "/Calls.json", data={"From": OUR_NUMBER, "Url": PUBLIC + "/x"})
            unknown = await http.post(base + "/Calls/CA" + "0" * 32 + ".json", data={"Status": "completed"})
    assert no_body.status_code == 400 and no_body.json()["code"] == 21602
    assert no_to.status_code == 400 and no_to.json()["code"] == 21201
    assert unknown.status_code == 404 and unknown.json() == {
        "code": 20404, "message": unknown.json()["message"], "more_info": "https://www.twilio.com/docs/errors/20404",
        "status": 404}
