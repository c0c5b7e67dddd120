"""A local HTTP server that answers as Twilio's REST API does, for the calls the simulated caller
places: updates hang them up or replace their TwiML, calls.create places one to the server,
messages.create keeps the SMS. Every request is recorded for tests."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from app.simulators import twilio_wire as wire
from app.simulators.twilio_caller import CallResult, CallScript, place_call
from app.simulators.twilio_caller.live import Interruption, LiveCall
from app.simulators.twilio_rest import resources
from app.simulators.twilio_rest.resources import RestRefusal

ACCOUNT_PATH = f"/{resources.API_VERSION}/Accounts/{{account_sid}}"


UNANSWERED = ("no-answer", "busy")  # Callee kinds that never pick up, as Twilio's CallStatus says


@dataclass(slots=True)
class Callee:
    """Who picks up a call placed through calls.create: a person following `script`, or an
    answering machine (it says nothing); or nobody: the line rings out (`no-answer`) or is
    `busy`, and the call ends with that status without a webhook."""

    kind: Literal["human", "machine", "no-answer", "busy"] = "human"
    script: CallScript = field(default_factory=lambda: CallScript(hangup_after=10.0))

    def answered_by(self, machine_detection: str) -> str:
        """AnsweredBy as Twilio reports it: `Enable` answers at the machine's greeting,
        `DetectMessageEnd` after its beep."""
        if self.kind == "human":
            return "human"
        return "machine_end_beep" if machine_detection == "DetectMessageEnd" else "machine_start"


@dataclass(slots=True)
class CreatedCall:
    """A call placed through calls.create, running (or run) through the simulated caller."""

    sid: str
    params: dict[str, str]
    task: asyncio.Task[CallResult]
    status_callbacks: list[int | str] = field(default_factory=list)  # HTTP status, or the transport error

    async def result(self) -> CallResult:
        return await self.task


class TwilioRestDouble:
    """Twilio's REST API on 127.0.0.1 (an ephemeral port; `url`), for one account.

    Simulated calls join it through `place_call(..., rest_api=double)`. `server_url` and
    `public_url` say where calls.create's `Url` really lands (as `place_call` has them);
    `callee` answers the calls it places.
    """

    def __init__(self, *, account_sid: str | None = None, auth_token: str = "rest-double-auth-token",
                 server_url: str | None = None, public_url: str | None = None, callee: Callee | None = None) -> None:
        self.account_sid = account_sid or wire.new_sid("AC")
        self.auth_token = auth_token
        self.server_url = server_url
        self.public_url = public_url
        self.callee = callee or Callee()
        self.calls: dict[str, LiveCall] = {}
        self.requests: list[dict[str, Any]] = []  # every request: method, path, params, status
        self.call_updates: list[dict[str, Any]] = []  # call_sid, params, status (accepted or not)
        self.created_calls: list[CreatedCall] = []
        self.messages: list[dict[str, Any]] = []
        self.warnings: list[dict[str, Any]] = []  # what Twilio's debugger would show (e.g. 32019)
        # Seconds the API takes to answer a redirect it has already carried out: the call has
        # moved on (its stream stopped) before the client hears back, as can happen on Twilio.
        self.redirect_answer_delay = 0.0
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._port = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def __aenter__(self) -> TwilioRestDouble:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        app = Starlette(routes=[
            Route(ACCOUNT_PATH + "/Calls.json", self._create_call, methods=["POST"]),
            Route(ACCOUNT_PATH + "/Calls/{call_sid}.json", self._update_call, methods=["POST"]),
            Route(ACCOUNT_PATH + "/Messages.json", self._create_message, methods=["POST"]),
        ])
        self._server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
        self._serving = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:  # uvicorn offers no start event to await
            if self._serving.done():
                self._serving.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        running = [c.task for c in self.created_calls if not c.task.done()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            await self._serving

    def attach(self, call: LiveCall) -> None:
        """A simulated call of this account started: REST requests may now act on it."""
        self.calls[call.call_sid] = call

    # ------------------------------------------------------------------ the API

    async def _create_call(self, request: Request) -> JSONResponse:
        async def create(form: dict[str, str]) -> dict[str, Any]:
            resources.check_call_create(form)
            sid = wire.new_sid("CA")
            detection = form.get("MachineDetection")
            answered_by = self.callee.answered_by(detection) if detection else None
            task = asyncio.create_task(self._run_created(sid, form, answered_by))
            self.created_calls.append(CreatedCall(sid=sid, params=form, task=task))
            return resources.call_resource(self.account_sid, sid, to=form["To"], from_=form["From"],
                                           status="queued", direction="outbound-api")

        return await self._answer(request, create, status=201)

    async def _update_call(self, request: Request) -> JSONResponse:
        call_sid = request.path_params["call_sid"]

        async def update(form: dict[str, str]) -> dict[str, Any]:
            record: dict[str, Any] = {"call_sid": call_sid, "params": form}
            self.call_updates.append(record)
            call = self.calls.get(call_sid)
            try:
                if call is None or call.completed:
                    raise RestRefusal(404, resources.NOT_FOUND,
                                      f"The requested resource {request.url.path} was not found")
                resources.check_call_update(form)
            except RestRefusal as refusal:
                record["status"] = refusal.status
                raise
            record["status"] = 200
            status = "in-progress"
            if form.get("Status") == "completed":
                call.interrupt(Interruption("hang_up"))
                status = "completed"
            elif form.get("Status") == "canceled":
                pass  # cancels only queued or ringing calls; these are in progress
            elif form.get("Url") or form.get("Twiml") is not None:
                if form.get("Url") and form.get("Twiml") is not None:
                    self.warnings.append({"code": resources.TWIML_AND_URL, "call_sid": call_sid,
                                          "message": "Twiml and Voice URL are both set. Using Voice URL."})
                call.interrupt(Interruption("redirect", twiml=form.get("Twiml"), url=form.get("Url"),
                                            method=(form.get("Method") or "POST").upper()))
                await asyncio.sleep(self.redirect_answer_delay)
            return resources.call_resource(self.account_sid, call_sid, to=call.to_number, from_=call.from_number,
                                           status=status, direction=call.direction)

        return await self._answer(request, update, status=200)

    async def _create_message(self, request: Request) -> JSONResponse:
        async def create(form: dict[str, str]) -> dict[str, Any]:
            resources.check_message_create(form)
            sid = wire.new_sid("SM")
            self.messages.append({"sid": sid, "to": form["To"], "from": form.get("From"), "body": form.get("Body", ""),
                                  "messaging_service_sid": form.get("MessagingServiceSid"), "status": "queued"})
            return resources.message_resource(self.account_sid, sid, to=form["To"], from_=form.get("From"),
                                              body=form.get("Body", ""),
                                              messaging_service_sid=form.get("MessagingServiceSid"))

        return await self._answer(request, create, status=201)

    async def _answer(self, request: Request, handle: Callable[[dict[str, str]], Awaitable[dict[str, Any]]], *,
                      status: int) -> JSONResponse:
        """Authenticate, parse the form, run `handle`; Twilio's error body for a refusal."""
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        entry: dict[str, Any] = {"method": request.method, "path": request.url.path, "params": form}
        self.requests.append(entry)
        try:
            self._authenticate(request)
            body = await handle(form)
        except RestRefusal as refusal:
            entry["status"] = refusal.status
            return JSONResponse(refusal.body(), status_code=refusal.status)
        entry["status"] = status
        return JSONResponse(body, status_code=status)

    def _authenticate(self, request: Request) -> None:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user = password = ""
        if not (scheme.lower() == "basic" and hmac.compare_digest(user, self.account_sid)
                and hmac.compare_digest(password, self.auth_token)):
            raise RestRefusal(401, resources.AUTHENTICATION_FAILED, "Authenticate")
        if request.path_params["account_sid"] != self.account_sid:
            raise RestRefusal(404, resources.NOT_FOUND, f"The requested resource {request.url.path} was not found")

    # ------------------------------------------------------------------ calls it places

    def _tunnel(self, url: str) -> tuple[str, str, str]:
        """(server URL, public URL, path) for a URL Twilio is asked to fetch: under `public_url`
        it lands on `server_url`, as through a tunnel; any other URL is reached as it is."""
        if self.public_url and self.server_url and url.startswith(self.public_url.rstrip("/") + "/"):
            public = self.public_url.rstrip("/")
            return self.server_url, public, url[len(public):]
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        return origin, origin, url[len(origin):] or "/"

    async def _run_created(self, sid: str, form: dict[str, str], answered_by: str | None) -> CallResult:
        if self.callee.kind in UNANSWERED:
            # Nobody picks up (Twilio would ring for the call's Timeout first): no webhook.
            result = CallResult(status=self.callee.kind, call_sid=sid, account_sid=self.account_sid,
                                direction="outbound-api")
        else:
            server, public, path = self._tunnel(form["Url"])
            result = await place_call(server, script=self.callee.script, public_url=public, call_sid=sid,
                                      from_number=form["From"], to_number=form["To"], rest_api=self, outbound=True,
                                      answered_by=answered_by, webhook_path=path)
        if form.get("StatusCallback"):
            await self._call_ended(sid, form, result)
        return result

    async def _call_ended(self, sid: str, form: dict[str, str], result: CallResult) -> None:
        """The call status callback Twilio posts when a call it placed ends (the default event):
        `completed`, or why it was never answered."""
        answered = result.status not in UNANSWERED
        params = {**wire.outbound_call_params(call_sid=sid, account_sid=self.account_sid, from_number=form["From"],
                                              to_number=form["To"]),
                  "CallStatus": "completed" if answered else result.status,
                  "CallDuration": str(round(result.duration_s)) if answered else "0"}
        url = form["StatusCallback"]
        server, public, _ = self._tunnel(url)
        target = wire.map_to_server(url, server_url=server, public_url=public, websocket=False)
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        created = next(c for c in self.created_calls if c.sid == sid)
        try:
            async with httpx.AsyncClient(timeout=15, trust_env=False) as http:
                response = await http.post(target, data=params, headers={"X-Twilio-Signature": signature})
            created.status_callbacks.append(response.status_code)
        except httpx.HTTPError as exc:
            created.status_callbacks.append(f"{type(exc).__name__}: {exc}")
