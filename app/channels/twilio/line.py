"""The phone line: Twilio's webhooks, the media stream of each call, and what the caller
hears once our side closes it.

The line checks every request's signature and each stream's token, answers the webhook with
TwiML (and has the agent get an engine ready meanwhile), turns the stream into a
`TwilioChannel` and hands it to the agent. A call-back OCTI placed (`callback.py`) comes in
by its own webhook: a short message on an answering machine, else the same stream. The
FastAPI routes only translate HTTP into calls on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from app.agent import phrases
from app.calllog.journals import CallJournals
from app.calllog.records import CallEvent, CallRecord
from app.audio.formats import TELEPHONE_ULAW
from app.channels.admission import Admission
from app.channels.contract import CallIdentity, CallOutcome, Conversations
from app.channels.twilio import twiml
from app.channels.twilio.admission import CallAdmission
from app.channels.twilio.callback import (CALLED_BACK_ABOUT, MACHINE_ANSWERS, QUESTION_MAX_CHARS, UNANSWERED,
                                          CallBacks)
from app.channels.twilio.channel import StreamRejected, TwilioChannel
from app.channels.twilio.claims import StreamClaims
from app.channels.twilio.rest import TwilioRest
from app.channels.twilio.transfer import TwilioTransfers
from app.channels.twilio.awaited import AwaitedWebhooks
from app.channels.twilio.voicemail import Voicemail
from app.channels.twilio.security import STATUS_PATH, SignatureChecker, StreamTokens, public_url, websocket_url
from app.channels.websocket_io import POLICY_VIOLATION, FrameSocket
from app.config import Settings
from app.expiring import ExpiringValues
from app.logs import current_call, mask_phone
from app.metrics import Metrics

log = logging.getLogger(__name__)

INCOMING_PATH = "/voice/incoming"
STREAM_PATH = "/voice/stream"
STREAM_ENDED_PATH = "/voice/stream-ended"

# Twilio's final call statuses: the call is over, with or without a conversation.
CALL_OVER_STATUSES = frozenset({"completed", *UNANSWERED})
START_TIMEOUT_SECONDS = 10.0
OUTCOME_TTL_SECONDS = 600


def stream_url(settings: Settings) -> str:
    """The media stream URL we give Twilio (it signs the upgrade over exactly this URL): on the
    stream listener when it has a port of its own, else on the web server."""
    if settings.stream_port:
        base = settings.stream_public_url or f"ws://{settings.host}:{settings.stream_port}"
        return base + STREAM_PATH
    return websocket_url(settings, STREAM_PATH)


class TwilioLine:
    """A phone number's calls: Twilio's webhooks and media streams, each call handed to the agent."""

    def __init__(self, settings: Settings, metrics: Metrics, *, agent: Conversations, journals: CallJournals,
                 submit: Callable[[CallRecord], None], rest: TwilioRest, admission: Admission) -> None:
        self.settings = settings
        self.metrics = metrics
        self._agent = agent
        self._journals = journals
        self._submit = submit  # to the call log: refusals and stream errors naming a call
        self.signatures = SignatureChecker(settings)
        self.tokens = StreamTokens(settings)
        # How each stream ended, for the <Connect> action that follows (maybe on another instance).
        self._outcomes = ExpiringValues(settings.redis_url, prefix="octi-stream-outcome",
                                        ttl_seconds=OUTCOME_TTL_SECONDS)
        self.admission = admission  # what every line checks, the browser's too
        self.callers = CallAdmission(settings, admission)
        # Which instance took each call's stream: a stream token is good for one stream, and
        # what this instance readied for a call whose stream went elsewhere is let go.
        self.claims = StreamClaims(settings.redis_url, ttl_seconds=settings.stream_token_ttl_seconds,
                                   taken_elsewhere=self._taken_elsewhere)
        self.draining = False  # shutting down: new calls go elsewhere
        self.rest = rest
        self.awaited = AwaitedWebhooks()  # calls past their stream that still need a webhook
        self.voicemail = Voicemail(settings, submit, self.awaited)
        self.transfers = TwilioTransfers(settings, rest, self.voicemail, submit, self.awaited)
        self.call_backs = CallBacks(settings, rest, submit)

    # ------------------------------------------------------------------ HTTP webhooks

    def signed(self, path: str, params: Mapping[str, str], signature: str | None, query: str = "") -> bool:
        ok = self.signatures.valid(public_url(self.settings, path, query), params, signature)
        if not ok:
            self.metrics.refusals.labels("signature").inc()
            log.warning("refused a request to %s: bad or missing X-Twilio-Signature", path)
            self._refusal(params.get("CallSid", ""), f"bad or missing X-Twilio-Signature on {path}")
        return ok

    def _refusal(self, call_sid: str, detail: str) -> None:
        """Refusals naming a call go to its log, so reviewers see forged or replayed requests."""
        if call_sid:
            self._submit(CallEvent.now(call_sid, "signature_refused", detail))

    async def answer_call(self, form: Mapping[str, str]) -> str:
        """The TwiML answer to an incoming call (signature already checked)."""
        call_sid = form.get("CallSid", "")
        caller, called = form.get("From", ""), form.get("To", "")
        current_call.set(call_sid or "-")
        log.info("incoming call %s from %s to %s", call_sid, mask_phone(caller), mask_phone(called))
        if not call_sid:
            return twiml.unavailable()
        identity = CallIdentity(call_sid, caller=caller, called=called)
        if self.draining:
            return self._elsewhere(identity)
        if (unreachable := self.admission.unreachable()) is not None:
            log.error("answering with voicemail: %s", unreachable)
            await self._log_unconnected(identity, CallOutcome.ERROR,
                                        ("upstream_failure", "modèle injoignable : messagerie"))
            return self.voicemail.prompt(phrases.UNREACHABLE_VOICEMAIL, call_sid)
        refusal = await self.callers.refusal(call_sid, caller)
        if refusal is not None:
            await self._refuse_call(identity, refusal)
            return twiml.refused(refusal.value)
        return self._connect(identity)

    async def answer_call_back(self, form: Mapping[str, str], query: Mapping[str, str]) -> str:
        """The TwiML of a call-back OCTI placed, once answered (signature, query included, checked)."""
        call_sid = form.get("CallSid", "")
        # On a call we placed, the farmer is the one called.
        identity = CallIdentity(call_sid, caller=form.get("To", ""), called=form.get("From", ""),
                                call_back=query.get("question", "")[:QUESTION_MAX_CHARS])
        answered_by = form.get("AnsweredBy", "")
        current_call.set(call_sid or "-")
        log.info("call-back %s to %s answered (%s)", call_sid, mask_phone(identity.caller), answered_by or "?")
        if not self.settings.realtime_configured or not call_sid:
            return twiml.unavailable()
        if answered_by in MACHINE_ANSWERS:
            await self._log_unconnected(identity, CallOutcome.MACHINE_ANSWERED,
                                        (CallOutcome.MACHINE_ANSWERED.value, answered_by))
            return twiml.say_goodbye(phrases.CALL_BACK_MACHINE_MESSAGE)
        refusal = self.callers.call_back_refusal(call_sid)
        if refusal is not None:
            await self._refuse_call(identity, refusal)
            return twiml.refused(refusal.value)
        return self._connect(identity)

    def _elsewhere(self, identity: CallIdentity) -> str:
        """While draining: back to the public URL, where the load balancer picks another
        instance; a lone instance says the line is busy."""
        log.info("draining: call %s %s", identity.call_id, "redirected" if self.settings.drain_redirect else "told busy")
        if self.settings.drain_redirect:
            return twiml.render("redirect", url=public_url(self.settings, INCOMING_PATH))
        return twiml.refused(CallOutcome.BUSY.value)

    def _connect(self, identity: CallIdentity) -> str:
        """Admitted: the agent gets an engine ready while Twilio opens the stream."""
        self._agent.expect(identity.call_id, TwilioChannel.audio_format)
        self.claims.watch(identity.call_id)
        return twiml.connect_stream(
            stream_url=stream_url(self.settings),
            status_url=public_url(self.settings, STATUS_PATH),
            action_url=public_url(self.settings, STREAM_ENDED_PATH),
            token=self.tokens.issue(identity.call_id),
            call_sid=identity.call_id,
            caller=identity.caller,
            called=identity.called,
            call_back=identity.call_back,
        )

    async def _refuse_call(self, identity: CallIdentity, outcome: CallOutcome) -> None:
        self.metrics.refusals.labels(outcome.value).inc()
        log.warning("refused the call with %s: %s", mask_phone(identity.caller), outcome.value)
        await self._log_unconnected(identity, outcome)

    async def _log_unconnected(self, identity: CallIdentity, outcome: CallOutcome,
                               event: tuple[str, str] | None = None) -> None:
        """A call answered without a conversation (refused, or sent to voicemail) still has its log."""
        journal = self._journals.open(identity, stream_sid="", audio_format=TELEPHONE_ULAW, recorded=False)
        if event is not None:
            journal.event(*event)
        await journal.ended(outcome.value, [], turns=0, barge_ins=0)

    async def after_stream(self, form: Mapping[str, str]) -> str:
        """The <Connect> action: what the caller hears once our side closed the stream."""
        call_sid = form.get("CallSid", "")
        outcome = await self._outcomes.pop(call_sid)
        if outcome == CallOutcome.ERROR.value:
            return self.voicemail.prompt(phrases.FAILURE_VOICEMAIL, call_sid)
        return twiml.hangup()

    def status_callback(self, form: Mapping[str, str], query: Mapping[str, str]) -> None:
        """Twilio's status callbacks: a media stream's events, and calls' statuses (of the calls
        we place, and of incoming ones when the number's "Call status changes" points here)."""
        call_sid, event, status = form.get("CallSid", ""), form.get("StreamEvent", ""), form.get("CallStatus", "")
        if event == "stream-error":
            error = form.get("StreamError", "")
            self.metrics.stream_errors.inc()
            if call_sid:
                self._submit(CallEvent.now(call_sid, "stream_error", error))
            log.error("Twilio reports a stream error for %s: %s", call_sid, error)
            return
        log.info("status of %s: %s", call_sid, event or status or "?")
        if not event and status in CALL_OVER_STATUSES:
            self._call_over(call_sid, status, about=query.get(CALLED_BACK_ABOUT))

    def _call_over(self, call_sid: str, status: str, *, about: str | None) -> None:
        if about and status in UNANSWERED:  # a call-back nobody answered: its call says so
            self._submit(CallEvent.now(about, "call_back_unanswered", f"{call_sid} : {UNANSWERED[status]}"))
        if self.admission.over(call_sid):
            # The caller hung up before the stream opened: its place and pre-warmed engine go
            # now rather than after STREAM_TOKEN_TTL_SECONDS and PREWARM_TTL_SECONDS.
            log.info("call %s ended before its stream started", call_sid)
            self.claims.forget(call_sid)
            self._agent.release(call_sid)

    async def _record_outcome(self, call_sid: str, outcome: CallOutcome) -> None:
        await self._outcomes.put(call_sid, outcome.value)

    def _taken_elsewhere(self, call_sid: str) -> None:
        """The stream of a call this instance admitted went to another instance."""
        log.info("the stream of %s went to another instance", call_sid)
        self.admission.started(call_sid)
        self._agent.release(call_sid)

    async def redis_problem(self) -> str | None:
        """Why the state shared with other instances is kept per instance now, or None."""
        return await self.claims.redis_problem()

    async def close(self) -> None:
        self.callers.close()
        self._outcomes.close()
        await self.claims.close()

    # ------------------------------------------------------------------ media stream

    def stream_upgrade_signed(self, headers: Mapping[str, str]) -> bool:
        """Whether a media stream's upgrade request carries Twilio's signature of our stream URL
        (refusals are counted and logged); each listener refuses an unsigned upgrade with 403."""
        if self.signatures.valid(stream_url(self.settings), {}, headers.get("x-twilio-signature")):
            return True
        self.metrics.refusals.labels("signature").inc()
        log.warning("refused a media stream upgrade: bad or missing x-twilio-signature")
        return False

    async def serve_stream(self, websocket: FrameSocket) -> None:
        """Accept and run one media stream (its upgrade signed) until the call ends."""
        await websocket.accept()
        try:
            start = await TwilioChannel.receive_start(
                websocket, timeout=START_TIMEOUT_SECONDS,
                max_message_bytes=self.settings.max_stream_message_bytes, metrics=self.metrics,
            )
        except StreamRejected as exc:
            log.warning("closing a media stream: %s", exc)
            await websocket.close(POLICY_VIOLATION)
            return
        current_call.set(start.call_sid)
        # Held here (whichever instance admitted it) until the agent counts it: a drain that
        # saw the call nowhere meanwhile would stop under it.
        self.admission.hold(start.call_sid)
        try:
            if not self.tokens.check(start.call_sid, start.custom_parameters.get("token")):
                await self._refuse_stream(websocket, start.call_sid, "an invalid or expired stream token")
                return
            if not await self.claims.claim(start.call_sid):
                await self._refuse_stream(websocket, start.call_sid, "a stream token already used")
                return
            channel = TwilioChannel(
                websocket, start, max_message_bytes=self.settings.max_stream_message_bytes,
                metrics=self.metrics, submit=self._submit, on_end=self._record_outcome,
                max_seconds=self.settings.max_call_minutes * 60, rest=self.rest, transfers=self.transfers,
            )
            journal = self._journals.open(channel.identity, stream_sid=channel.stream_sid,
                                          audio_format=channel.audio_format)
        finally:
            self.admission.started(start.call_sid)
        await self._agent.converse(channel, journal)  # counts the call before its first await

    async def _refuse_stream(self, websocket: FrameSocket, call_sid: str, why: str) -> None:
        self.metrics.refusals.labels("stream_token").inc()
        log.warning("closing a media stream: %s", why)
        self._refusal(call_sid, f"media stream with {why}")
        await websocket.close(POLICY_VIOLATION)

