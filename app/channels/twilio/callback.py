"""Call-backs: OCTI calls a farmer back (`octi call-out`, `POST /api/calls/outbound`, the
review's « Rappeler ») through Twilio's REST API, with machine detection.

Twilio fetches the call's TwiML from OUTBOUND_PATH once the farmer's line answers; the
question rides in that URL's query, which Twilio signs with the rest when it requests it, so
the webhook can trust it and nothing of it has to be kept here. The line answers that webhook
(`TwilioLine.answer_call_back`): a short message on an answering machine, else the same media
stream as an incoming call, where OCTI greets the farmer as a call-back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlencode

from app.calllog.records import CallEvent, CallRecord
from app.channels.twilio.admission import AllowedCallers
from app.channels.twilio.numbers import international
from app.channels.twilio.rest import TwilioRest, TwilioRestError
from app.channels.twilio.security import STATUS_PATH, public_url
from app.config import Settings
from app.logs import mask_phone

log = logging.getLogger(__name__)

OUTBOUND_PATH = "/voice/outbound"
# AnsweredBy values that mean nobody is there to talk to (Twilio's answering machine detection).
MACHINE_ANSWERS = frozenset({"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"})
# The question goes on in a <Parameter>, whose name and value must stay under 500 characters.
QUESTION_MAX_CHARS = 400
CALLED_BACK_ABOUT = "about"  # the status callback's query: the logged call a call-back is about
# Why a call-back was never answered (Twilio's final CallStatus), for the reviewers.
UNANSWERED = {"no-answer": "pas de réponse", "busy": "ligne occupée", "failed": "appel impossible",
              "canceled": "appel annulé"}


# Why a call-back was not placed: the HTTP status the API answers with, and French for the reviewer.
REFUSALS: dict[str, tuple[int, str]] = {
    "invalid_number": (422, "Numéro invalide : il faut un numéro international au format E.164, "
                            "par exemple +33612345678."),
    "not_configured": (409, "Rappel impossible : l'API de Twilio n'est pas configurée "
                            "(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_PHONE_NUMBER)."),
    "not_allowed": (403, "Ce numéro n'est pas dans la liste des adhérents (ALLOWED_CALLERS)."),
    "twilio_refused": (502, "Twilio n'a pas pu lancer l'appel. Réessayez plus tard."),
    # The review's API.
    "invalid_request": (422, "Requête invalide : il faut « to » (un numéro E.164) et, en option, « question » "
                             "(du texte), ou bien « call_id » (un appel du journal)."),
    "not_found": (404, "Appel introuvable dans le journal."),
    "number_not_kept": (409, "Le numéro de l'appelant n'a pas été conservé (STORE_CALLER_NUMBER=false) : "
                             "rappel impossible depuis le journal."),
    "log_unavailable": (503, "Le journal des appels est indisponible pour le moment. Réessayez plus tard."),
}


class CallBackRefused(Exception):
    """Why a call-back was not placed: `code`, a key of REFUSALS."""

    def __init__(self, code: str) -> None:
        self.status, self.message = REFUSALS[code]
        super().__init__(self.message)
        self.code = code


def e164(number: str) -> str:
    """`number` in E.164 (spaces, dots, dashes and brackets dropped), or CallBackRefused."""
    compact = international(number)
    if compact is None:
        raise CallBackRefused("invalid_number")
    return compact


class CallBacks:
    """Places call-backs; one instance for the service's life (and one per `octi call-out`)."""

    def __init__(self, settings: Settings, rest: TwilioRest,
                 submit: Callable[[CallRecord], None] | None = None) -> None:
        self._settings = settings
        self._rest = rest
        self._allowed = AllowedCallers(settings)
        self._submit = submit  # to the call log: the `call_back` event on the call called back

    @property
    def configured(self) -> bool:
        return self._rest.configured and bool(self._settings.twilio_phone_number)

    async def place(self, to: str, question: str = "", *, about_call_sid: str | None = None) -> str:
        """Call `to` back about `question` (and the logged call `about_call_sid`, which gets a
        `call_back` event); the new call's SID, or CallBackRefused."""
        number = e164(to)
        if not self.configured:
            raise CallBackRefused("not_configured")
        if not self._allowed.allows(number):
            raise CallBackRefused("not_allowed")
        question = " ".join(question.split())[:QUESTION_MAX_CHARS]
        url = public_url(self._settings, OUTBOUND_PATH, urlencode({"question": question}) if question else "")
        # The call called back about rides in the status callback's (signed) query: an
        # unanswered call-back is logged on it (TwilioLine.status_callback).
        status_url = public_url(self._settings, STATUS_PATH,
                                urlencode({CALLED_BACK_ABOUT: about_call_sid}) if about_call_sid else "")
        try:
            call_sid = await self._rest.place_call(number, url=url, machine_detection=True, status_callback=status_url)
        except TwilioRestError as exc:
            log.error("the call-back to %s failed: %s", mask_phone(number), exc)
            raise CallBackRefused("twilio_refused") from None
        if about_call_sid and self._submit is not None:
            self._submit(CallEvent.now(about_call_sid, "call_back",
                                   f"{call_sid} vers {mask_phone(number)}"))
        return call_sid
