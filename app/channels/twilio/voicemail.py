"""Voicemail: when no one can take the call (the advisor did not answer, the model cannot be
reached), the caller leaves their question after the beep; the recording's address goes to
the call log as a `voicemail` event, which the review offers for a call-back."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from app.agent import phrases
from app.calllog.records import CallBackNumber, CallEvent, CallRecord
from app.channels.twilio import twiml
from app.channels.twilio.awaited import AwaitedWebhooks
from app.channels.twilio.security import public_url
from app.config import Settings

VOICEMAIL_PATH = "/voice/voicemail"
# From the prompt to the recording's webhook at the latest: the message said, then
# twiml/voicemail.xml's maxLength (120 s) and silence timeout (5 s), with a margin.
RECORDING_WEBHOOK_SECONDS = 180.0


class Voicemail:
    def __init__(self, settings: Settings, submit: Callable[[CallRecord], None], awaited: AwaitedWebhooks) -> None:
        self._settings = settings
        self._submit = submit
        self._awaited = awaited

    def prompt(self, message: str, call_sid: str) -> str:
        """TwiML: `message`, the beep, the recording posted to VOICEMAIL_PATH (awaited until then)."""
        self._awaited.expect(call_sid, RECORDING_WEBHOOK_SECONDS)
        return twiml.render("voicemail", message=message, action_url=public_url(self._settings, VOICEMAIL_PATH))

    def saved(self, form: Mapping[str, str]) -> str:
        """The recorded question: stored in the call log, then goodbye."""
        url, seconds, call_sid = form.get("RecordingUrl", ""), form.get("RecordingDuration", "0"), form.get("CallSid")
        self._awaited.arrived(call_sid or "")
        if url and call_sid:
            self._submit(CallEvent.now(call_sid, "voicemail", f"{url} ({seconds} s)"))
            # The caller was promised a call-back: its number is kept for it.
            caller = form.get("From", "") if form.get("Direction", "inbound") == "inbound" else form.get("To", "")
            if self._settings.keep_call_back_numbers and caller:
                self._submit(CallBackNumber(call_sid, caller, datetime.now(UTC)))
        return twiml.say_goodbye(phrases.VOICEMAIL_SAVED)
