"""Twilio's HTTP side of a call: the signed voice webhook, the stream status callbacks, and the
<Connect> action once the server has ended the stream. Requests are signed for the public URL
and delivered to the server's real address, as through a tunnel."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

import httpx
from twilio.request_validator import RequestValidator

from app.simulators import twilio_wire as wire
from app.simulators.twilio_caller.records import CallResult
from app.simulators.twilio_caller.timeline import CallTimeline

WEBHOOK_USER_AGENT = "TwilioProxy/1.1"
WEBHOOK_PATH = "/voice/incoming"  # where Twilio posts the voice webhook to our server


class TwilioRequests:
    """The requests Twilio makes for one call, and the TwiML it got back."""

    def __init__(self, http: httpx.AsyncClient, result: CallResult, timeline: CallTimeline, *,
                 auth_token: str | None, params: dict[str, str], webhook_path: str) -> None:
        self.http = http
        self.result = result
        self.timeline = timeline
        self.server_url = result.server_url
        self.public_url = result.public_url
        self.validator = RequestValidator(auth_token) if auth_token else None
        self.params = params
        self.webhook_path = webhook_path
        self.twiml = wire.Twiml()
        self.background: set[asyncio.Task[None]] = set()  # status callbacks still being posted

    def signed(self, url: str, params: dict[str, str]) -> dict[str, str]:
        if self.validator is None:
            return {}
        return {"X-Twilio-Signature": self.validator.compute_signature(url, params)}

    async def request(self, public: str, method: str, params: dict[str, str]) -> httpx.Response:
        """A signed request to a public URL, delivered to the server's real address."""
        target = wire.map_to_server(public, server_url=self.server_url, public_url=self.public_url, websocket=False,
                                    tunnels=self.result.tunnels)
        if method == "GET":
            sep = "&" if "?" in public else "?"
            signed_url = public + sep + urlencode(params)
            return await self.http.get(target + ("&" if "?" in target else "?") + urlencode(params),
                                       headers=self.signed(signed_url, {}))
        return await self.http.post(target, data=params, headers=self.signed(public, params))

    async def webhook(self) -> bool:
        """Post the voice webhook and read the TwiML; True when it opens a media stream."""
        r = self.result
        url = self.public_url + self.webhook_path
        target = self.server_url + self.webhook_path
        self.timeline.log("sent", "webhook", url=url)
        started = self.timeline.loop.time()
        try:
            response = await self.http.post(target, data=self.params, headers=self.signed(url, self.params))
        except httpx.HTTPError as exc:
            r.status = "webhook_unreachable"
            r.errors.append(f"webhook {target}: {type(exc).__name__}: {exc}")
            return False
        r.webhook_ms = (self.timeline.loop.time() - started) * 1000
        r.http_status = response.status_code
        r.twiml = response.text
        self.timeline.log("received", "webhook_response", http_status=response.status_code,
                          content_type=response.headers.get("content-type", ""))
        if response.status_code != 200:
            r.status = "refused_webhook"
            return False
        try:
            self.twiml = wire.parse_twiml(response.content)
        except wire.TwimlError as exc:
            r.status = "invalid_twiml"
            r.errors.append(str(exc))
            return False
        r.verbs, r.say_texts, r.hangup = self.twiml.verbs, self.twiml.says, self.twiml.hangup
        stream = self.twiml.stream
        if stream is None:
            r.status = "spoken_only"
            return False
        r.stream_url = wire.resolve_twiml_url(stream.url, document_url=url, websocket=True)
        r.custom_parameters = dict(stream.parameters)
        if stream.status_callback:
            r.status_callback = wire.resolve_twiml_url(stream.status_callback, document_url=url, websocket=False)
        if self.twiml.connect_action:
            r.connect_action = wire.resolve_twiml_url(self.twiml.connect_action, document_url=url, websocket=False)
        for v in wire.stream_url_warnings(r.stream_url, stream.parameters):
            self.timeline.violation(v, "twiml")
        return True

    def status_callback(self, event: str, stream_name: str | None, error: str | None = None) -> None:
        """Post a stream status callback in the background; failures are recorded, not raised."""
        r = self.result
        if not r.status_callback:
            return
        params = {"AccountSid": r.account_sid, "CallSid": r.call_sid,
                  "StreamSid": r.stream_sid or "", "StreamName": stream_name or r.stream_sid or "",
                  "StreamEvent": event,
                  "Timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        if error:
            params["StreamError"] = error
        method = self.twiml.stream.status_callback_method if self.twiml.stream else "POST"

        async def post() -> None:
            record: dict[str, Any] = {"event": event, "url": r.status_callback}
            try:
                response = await self.request(r.status_callback or "", method, params)
                record["http_status"] = response.status_code
            except httpx.HTTPError as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
            r.status_callbacks.append(record)
            self.timeline.log("sent", "status_callback", stream_event=event,
                              **{k: v for k, v in record.items() if k in ("http_status", "error")})

        task = asyncio.create_task(post())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def settle(self) -> None:
        """Wait (a bounded time) for the status callbacks still being posted."""
        if self.background:
            await asyncio.wait(set(self.background), timeout=10)

    async def after_stream(self) -> None:
        """The server closed the stream: Twilio requests the Connect action, or runs the next verbs."""
        r = self.result
        if not r.connect_action:
            r.after_stream = {"source": "twiml", "say_texts": list(self.twiml.says_after_connect),
                              "hangup": self.twiml.hangup_after_connect}
            return
        method = self.twiml.connect_method if self.twiml.connect_method in ("GET", "POST") else "POST"
        record: dict[str, Any] = {"source": "action", "url": r.connect_action, "say_texts": [], "hangup": False}
        r.after_stream = record
        try:
            response = await self.request(r.connect_action, method, {**self.params, "CallStatus": "in-progress"})
        except httpx.HTTPError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            return
        record["http_status"] = response.status_code
        record["twiml"] = response.text
        self.timeline.log("sent", "connect_action", http_status=response.status_code)
        if response.status_code == 200:
            try:
                doc = wire.parse_twiml(response.content)
            except wire.TwimlError as exc:
                record["error"] = str(exc)
                return
            record["say_texts"], record["hangup"] = doc.says, doc.hangup
