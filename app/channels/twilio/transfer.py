"""Warm transfers to a person over Twilio: the live call is redirected (REST) to TwiML that
dials TRANSFER_NUMBER; the advisor first hears a whisper with the caller's question. When
nobody answers, the caller leaves their question as a voicemail, for a call-back."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

from app.agent import phrases
from app.calllog.records import CallEvent, CallRecord
from app.channels.twilio import twiml
from app.channels.twilio.awaited import AwaitedWebhooks
from app.channels.twilio.rest import TwilioRest, TwilioRestError
from app.channels.twilio.security import public_url
from app.channels.twilio.voicemail import Voicemail
from app.config import Settings

log = logging.getLogger(__name__)

WHISPER_PATH = "/voice/whisper"
DIAL_ENDED_PATH = "/voice/transfer-ended"
WHISPER_MAX_CHARS = 300  # a sentence or two: the advisor is waiting to talk
ANSWERED = {"completed", "answered"}
DIAL_WEBHOOK_MARGIN_SECONDS = 30.0  # the redirect, the whisper's fetch, Twilio's own delays


class TwilioTransfers:
    def __init__(self, settings: Settings, rest: TwilioRest, voicemail: Voicemail,
                 submit: Callable[[CallRecord], None], awaited: AwaitedWebhooks) -> None:
        self._settings = settings
        self._rest = rest
        self._voicemail = voicemail
        self._submit = submit  # to the call log: how the dial ended
        self._awaited = awaited

    def unavailable(self) -> str | None:
        """Why no transfer can be made from this line (French, for the caller), or None."""
        if not self._settings.transfer_number:
            return phrases.NO_PERSON
        if not self._rest.configured:
            log.warning("TRANSFER_NUMBER is set but Twilio's REST credentials are not: no transfer")
            return phrases.NO_PERSON
        return None

    async def transfer(self, call_sid: str, caller: str, summary: str) -> str | None:
        """Redirect the live call to the advisor; None once Twilio took it, else why not."""
        # The question rides in the whisper URL (signed by Twilio when fetched), so any
        # instance can answer it.
        whisper_url = public_url(self._settings, WHISPER_PATH,
                                 urlencode({"summary": summary[:WHISPER_MAX_CHARS]}))
        document = twiml.render(
            "transfer", number=self._settings.transfer_number or "", whisper_url=whisper_url,
            action_url=public_url(self._settings, DIAL_ENDED_PATH),
            ring_seconds=str(self._settings.transfer_ring_seconds),
            caller_id=caller or self._settings.twilio_phone_number or "",
        )
        # The whisper, and the dial's outcome when nobody answers, come while the advisor's
        # phone rings (an answered dial reports at the end of the conversation: not awaited).
        self._awaited.expect(call_sid, self._settings.transfer_ring_seconds + DIAL_WEBHOOK_MARGIN_SECONDS)
        try:
            await self._rest.redirect(call_sid, document)
        except TwilioRestError as exc:
            self._awaited.arrived(call_sid)
            log.error("the transfer of %s failed: %s", call_sid, exc)
            return phrases.TRANSFER_FAILED
        return None

    def whisper(self, query: Mapping[str, str]) -> str:
        summary = query.get("summary", "").strip() or "Question non précisée."
        return twiml.render("whisper", summary=summary[:WHISPER_MAX_CHARS])

    def dial_ended(self, form: Mapping[str, str]) -> str:
        """After the dial: the caller talked to the advisor (hang up), or leaves a voicemail."""
        status = form.get("DialCallStatus", "")
        self._awaited.arrived(form.get("CallSid", ""))
        self._event(form, "transfer_answered" if status in ANSWERED else "transfer_unanswered", status)
        if status in ANSWERED:
            return twiml.hangup()
        return self._voicemail.prompt(phrases.VOICEMAIL_PROMPT, form.get("CallSid", ""))

    def _event(self, form: Mapping[str, str], kind: str, detail: str) -> None:
        if form.get("CallSid"):
            self._submit(CallEvent.now(form["CallSid"], kind, detail))
