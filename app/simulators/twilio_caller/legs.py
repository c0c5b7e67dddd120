"""What a call does once Twilio's REST API has acted on it: a hang-up ends it; new TwiML runs verb
by verb (Say, Pause, Hangup, Dial to the scripted advisor with its whisper and action,
Connect/Stream back to the server with the caller's remaining utterances), as Twilio runs it."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import httpx

from app.simulators import twilio_wire as wire
from app.simulators.twilio_caller.live import Interruption, LiveCall
from app.simulators.twilio_caller.playback import Playback
from app.simulators.twilio_caller.records import CallResult, DialRecord, RecordingRecord, StreamSegment, TwimlRun
from app.simulators.twilio_caller.script import CallScript
from app.simulators.twilio_caller.speech import CallerSpeech
from app.simulators.twilio_caller.stream import MediaStream
from app.simulators.twilio_caller.timeline import CallTimeline
from app.simulators.twilio_caller.webhooks import TwilioRequests
from app.simulators.twilio_wire.verbs import ConnectStream, Dial, DialNumber, Hangup, Pause, Record, Verb


@dataclass(frozen=True, slots=True)
class Document:
    text: str
    source: str  # as TwimlRun.source
    url: str | None


class _CallOver:
    """The call has ended (a <Hangup/>, the caller hanging up, a document Twilio could not get)."""


CALL_OVER = _CallOver()
Step = Document | _CallOver | None  # None: go on with the next verb


def stream_segment(result: CallResult, playback: Playback, live: LiveCall, *, opened: bool) -> StreamSegment:
    """The record of a stream that has just ended, and who ended it."""
    pending = live.pending
    if not opened:
        ended_by = "not_opened"
    elif pending is not None:
        ended_by = "rest_hang_up" if pending.kind == "hang_up" else "rest_redirect"
    else:
        ended_by = result.closed_by or "caller"
    return StreamSegment(stream_url=result.stream_url or "", stream_sid=result.stream_sid, ended_by=ended_by,
                         duration_s=result.duration_s, utterances=[u.label for u in result.utterances],
                         heard_ms=sum(b.played_ms for b in playback.bursts))


class CallLegs:
    """The rest of one call after its first stream, driven by REST updates."""

    def __init__(self, *, http: httpx.AsyncClient, result: CallResult, live: LiveCall, script: CallScript,
                 audio: list[bytes], bounds: list[tuple[float, float] | None], auth_token: str | None,
                 params: dict[str, str], webhook_path: str, realtime: bool, next_utterance: int) -> None:
        self.http = http
        self.result = result
        self.live = live
        self.script = script
        self.audio = audio
        self.bounds = bounds
        self.auth_token = auth_token
        self.params = {**params, "CallStatus": "in-progress"}
        self.webhook_path = webhook_path
        self.realtime = realtime
        self.next_utterance = next_utterance  # the first utterance the caller has not said yet
        self.requests = TwilioRequests(http, result, CallTimeline(result, realtime=realtime), auth_token=auth_token,
                                       params=self.params, webhook_path=webhook_path)

    async def follow(self, interruption: Interruption | None) -> None:
        """Carry out REST updates, one after the other, until the call ends."""
        while interruption is not None:
            if interruption.kind == "hang_up":
                self.result.hung_up_by_rest = True
                return
            if interruption.url:  # with both, Twilio uses the URL (warning 32019)
                document = await self._fetch(interruption.url, interruption.method, self.params, "rest_url")
            else:
                document = Document(interruption.twiml or "", "rest_twiml", None)
            interruption = await self._run(document) if isinstance(document, Document) else None

    async def _run(self, document: Document) -> Interruption | None:
        """Run `document` and those it leads to; the REST update that stopped them, if one did."""
        current: Step = document
        while isinstance(current, Document):
            run = TwimlRun(source=current.source, url=current.url)
            self.result.documents.append(run)
            try:
                verbs = wire.parse_verbs(current.text)
            except wire.TwimlError as exc:
                run.error = str(exc)
                self.result.errors.append(f"TwiML from {current.source}: {exc}")
                return None
            run.verbs, run.say_texts = verbs.names, verbs.says
            step: Step = None
            for verb in verbs.verbs:
                step = await self._step(verb, current, run)
                if self.live.requested.is_set():
                    return self.live.take()
                if step is not None:
                    break
            current = step  # after the last verb the call hangs up
        return None

    async def _step(self, verb: Verb, document: Document, run: TwimlRun) -> Step:
        if isinstance(verb, Pause):
            await self.live.wait(verb.seconds / self.script.twiml_speed)
        elif isinstance(verb, Hangup):
            run.hangup = True
            return CALL_OVER
        elif isinstance(verb, Dial):
            return await self._dial(verb, document)
        elif isinstance(verb, ConnectStream):
            return await self._stream(verb, document)
        elif isinstance(verb, Record):
            return await self._record(verb, document)
        return None  # <Say> is recorded with the document; other verbs are skipped

    # ------------------------------------------------------------------ <Dial>

    async def _dial(self, verb: Dial, document: Document) -> Step:
        number = verb.numbers[0]  # Twilio rings several at once; the first one is the advisor here
        record = DialRecord(number=number.number, caller_id=verb.caller_id, dial_call_sid=wire.new_sid("CA"),
                            whisper_url=self._absolute(number.url, document) if number.url else None)
        self.result.dials.append(record)
        advisor, speed = self.script.advisor, self.script.twiml_speed
        if advisor.answer == "busy":
            record.status = "busy"
        elif advisor.answer == "no-answer" or advisor.ring_seconds >= verb.timeout:
            record.status = "canceled" if await self.live.wait(verb.timeout / speed) else "no-answer"
        elif await self.live.wait(advisor.ring_seconds / speed):
            record.status = "canceled"
        else:
            if record.whisper_url:
                await self._whisper(number, record, verb)
            connected = time.monotonic()
            cut_short = self.live.requested.is_set() or await self.live.wait(advisor.talk_seconds / speed)
            record.status = "completed"
            talked = (time.monotonic() - connected) * speed if cut_short else advisor.talk_seconds
            record.duration_s = round(talked)
        if self.live.requested.is_set() or not verb.action:
            return None  # without an action the document goes on after <Dial>
        record.action_url = self._absolute(verb.action, document)
        params = {**self.params, "DialCallStatus": record.status, "DialCallSid": record.dial_call_sid,
                  "DialCallDuration": str(record.duration_s)}
        response = await self._get(record.action_url, verb.method, params)
        record.action_http_status = response.status_code if response is not None else None
        return self._document(response, record.action_url, "dial_action")

    async def _whisper(self, number: DialNumber, record: DialRecord, verb: Dial) -> None:
        """The advisor's leg runs the <Number url> TwiML before the two are connected."""
        assert record.whisper_url is not None
        leg = {**self.params, "CallSid": record.dial_call_sid, "ParentCallSid": self.result.call_sid,
               "Direction": "outbound-dial", "From": verb.caller_id or self.params.get("From", ""),
               "To": number.number, "Called": number.number, "Caller": verb.caller_id or self.params.get("From", "")}
        response = await self._get(record.whisper_url, number.method, leg)
        if response is None or response.status_code != 200:
            return
        try:
            whisper = wire.parse_verbs(response.content)
        except wire.TwimlError as exc:
            self.result.errors.append(f"whisper TwiML: {exc}")
            return
        record.whisper_texts = whisper.says
        pause = sum(v.seconds for v in whisper.verbs if isinstance(v, Pause))
        await self.live.wait(pause / self.script.twiml_speed)

    # ------------------------------------------------------------------ <Record>

    async def _record(self, verb: Record, document: Document) -> Step:
        """The caller leaves their next utterance not said yet as a message. With nothing to
        say, Twilio goes on with the next verb without requesting the action."""
        if self.next_utterance >= len(self.script.utterances):
            return None
        index = self.next_utterance
        self.next_utterance += 1
        seconds = min(len(self.audio[index]) / wire.SAMPLE_RATE, verb.max_length)
        if await self.live.wait(seconds / self.script.twiml_speed):
            return None  # a REST update took the call elsewhere
        sid = wire.new_sid("RE")
        record = RecordingRecord(
            recording_sid=sid, duration_s=max(1, round(seconds)), utterance=self.script.utterances[index].label,
            url=f"https://api.twilio.com/2010-04-01/Accounts/{self.result.account_sid}/Recordings/{sid}")
        self.result.recordings.append(record)
        if not verb.action and document.url is None:
            return None
        # Without an action, Twilio posts the recording to the document's own URL.
        record.action_url = self._absolute(verb.action, document) if verb.action else document.url
        params = {**self.params, "RecordingUrl": record.url, "RecordingSid": sid,
                  "RecordingDuration": str(record.duration_s), "Digits": "hangup"}
        response = await self._get(record.action_url, verb.method, params)
        record.action_http_status = response.status_code if response is not None else None
        return self._document(response, record.action_url, "record_action")

    # ------------------------------------------------------------------ <Connect><Stream>

    async def _stream(self, verb: ConnectStream, document: Document) -> Step:
        """A new media stream to the server, with the same CallSid; the caller carries on with
        the utterances not said yet."""
        r = self.result
        segment = CallResult(server_url=r.server_url, public_url=r.public_url, tunnels=r.tunnels,
                             call_sid=r.call_sid, account_sid=r.account_sid, direction=r.direction)
        timeline = CallTimeline(segment, realtime=self.realtime)
        playback = Playback()
        rest = slice(self.next_utterance, None)
        script = dataclasses.replace(self.script, utterances=self.script.utterances[rest], dtmf=[], raw_messages=[])
        speech = CallerSpeech(script, self.audio[rest], self.bounds[rest], playback, segment, timeline)
        requests = TwilioRequests(self.http, segment, timeline, auth_token=self.auth_token, params=self.params,
                                  webhook_path=self.webhook_path)
        requests.twiml = wire.Twiml(verbs=["Connect"], stream=verb.stream, connect_action=verb.action,
                                    connect_method=verb.method)
        segment.stream_url = self._absolute(verb.stream.url, document, websocket=True)
        segment.custom_parameters = dict(verb.stream.parameters)
        if verb.stream.status_callback:
            segment.status_callback = self._absolute(verb.stream.status_callback, document)
        stream = MediaStream(requests, timeline, playback, speech, sign_stream=True, extra_stream_headers=None,
                             send_hook=None, stop_requested=self.live.requested)
        opened = await stream.open()
        if opened:
            await stream.run()
        await requests.settle()
        self.next_utterance += speech.next_utt
        r.violations += segment.violations
        r.errors += segment.errors
        r.streams.append(stream_segment(segment, playback, self.live, opened=opened))
        if not opened or segment.closed_by == "caller":
            return CALL_OVER
        if self.live.requested.is_set() or not verb.action:
            return None
        action = self._absolute(verb.action, document)
        return self._document(await self._get(action, verb.method, self.params), action, "connect_action")

    # ------------------------------------------------------------------ Twilio's requests

    def _absolute(self, url: str, document: Document, *, websocket: bool = False) -> str:
        # Inline TwiML has no URL of its own: Twilio wants absolute URLs in it (error 15004).
        base = document.url or self.result.public_url + "/"
        return wire.resolve_twiml_url(url, document_url=base, websocket=websocket)

    async def _get(self, url: str, method: str, params: dict[str, str]) -> httpx.Response | None:
        """A signed request for TwiML; None (recorded) when it could not be made."""
        try:
            response = await self.requests.request(url, method if method in ("GET", "POST") else "POST", params)
        except httpx.HTTPError as exc:
            self.result.errors.append(f"requesting {url}: {type(exc).__name__}: {exc}")
            return None
        if response.status_code != 200:
            self.result.errors.append(f"{url} answered HTTP {response.status_code}")
        return response

    def _document(self, response: httpx.Response | None, url: str, source: str) -> Step:
        """The TwiML a request brought, or the end of the call (Twilio cannot go on without it)."""
        if response is None or response.status_code != 200:
            return CALL_OVER
        return Document(response.text, source, url)

    async def _fetch(self, url: str, method: str, params: dict[str, str], source: str) -> Step:
        return self._document(await self._get(url, method, params), url, source)
