"""What Twilio's REST API answers: call and message resources shaped as twilio-python reads them,
its JSON error body, and its checks of required parameters (with Twilio's error codes)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

API_VERSION = "2010-04-01"
TWIML_MAX_CHARS = 4000  # the `Twiml` parameter's limit (error 32018)

# Twilio's error codes for what the impersonator refuses.
AUTHENTICATION_FAILED = 20003
NOT_FOUND = 20404
BAD_REQUEST = 20001
CALL_TO_REQUIRED = 21201
CALL_FROM_REQUIRED = 21213
CALL_URL_REQUIRED = 21205
MESSAGE_BODY_REQUIRED = 21602
MESSAGE_FROM_REQUIRED = 21603
MESSAGE_TO_REQUIRED = 21604
INVALID_TO_NUMBER = 21211
TWIML_TOO_LONG = 32018
TWIML_AND_URL = 32019  # a warning: Twilio uses the URL
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


class RestRefusal(Exception):
    """An error answer: HTTP status, Twilio code, message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message,
                "more_info": f"https://www.twilio.com/docs/errors/{self.code}", "status": self.status}


def _now() -> str:
    return format_datetime(datetime.now(UTC))  # RFC 2822, as Twilio dates are


def call_resource(account_sid: str, call_sid: str, *, to: str, from_: str, status: str, direction: str,
                  answered_by: str | None = None) -> dict[str, Any]:
    now = _now()
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Calls/{call_sid}"
    return {
        "sid": call_sid, "account_sid": account_sid, "api_version": API_VERSION,
        "to": to, "to_formatted": to, "from": from_, "from_formatted": from_,
        "status": status, "direction": direction, "answered_by": answered_by,
        "parent_call_sid": None, "phone_number_sid": None, "caller_name": None, "forwarded_from": None,
        "group_sid": None, "trunk_sid": None, "queue_time": "0",
        "date_created": now, "date_updated": now, "start_time": now if status != "queued" else None,
        "end_time": now if status == "completed" else None, "duration": None, "price": None, "price_unit": "USD",
        "uri": uri + ".json",
        "subresource_uris": {name: f"{uri}/{name.title().replace('_', '')}.json"
                             for name in ("notifications", "recordings", "payments", "events", "siprec", "streams")},
    }


def message_resource(account_sid: str, message_sid: str, *, to: str, from_: str | None, body: str,
                     messaging_service_sid: str | None) -> dict[str, Any]:
    now = _now()
    return {
        "sid": message_sid, "account_sid": account_sid, "api_version": API_VERSION,
        "to": to, "from": from_, "messaging_service_sid": messaging_service_sid, "body": body,
        "status": "queued", "direction": "outbound-api", "num_segments": "1", "num_media": "0",
        "date_created": now, "date_updated": now, "date_sent": None, "error_code": None, "error_message": None,
        "price": None, "price_unit": "USD",
        "uri": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{message_sid}.json",
        "subresource_uris": {"media": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{message_sid}/Media.json"},
    }


def check_call_create(form: dict[str, str]) -> None:
    if not form.get("To"):
        raise RestRefusal(400, CALL_TO_REQUIRED, "No 'To' number is specified")
    if not form.get("From"):
        raise RestRefusal(400, CALL_FROM_REQUIRED, "No 'From' number is specified")
    if not form.get("Url"):
        # Twilio also takes `Twiml` or `ApplicationSid` here; the impersonator runs calls from a URL only.
        raise RestRefusal(400, CALL_URL_REQUIRED, "Url parameter is required (the impersonator runs no inline Twiml "
                                                  "or ApplicationSid on calls.create)")


def check_call_update(form: dict[str, str]) -> None:
    status = form.get("Status")
    if status is not None and status not in ("completed", "canceled"):
        raise RestRefusal(400, BAD_REQUEST, f"Status {status!r} is not one of completed, canceled")
    twiml = form.get("Twiml")
    if twiml is not None and len(twiml) > TWIML_MAX_CHARS:
        raise RestRefusal(400, TWIML_TOO_LONG, f"Twiml of {len(twiml)} characters is over {TWIML_MAX_CHARS}")


def check_message_create(form: dict[str, str]) -> None:
    if not form.get("To"):
        raise RestRefusal(400, MESSAGE_TO_REQUIRED, "A 'To' phone number is required.")
    if not _E164.fullmatch(form["To"]):  # Twilio's refusal quotes the number
        raise RestRefusal(400, INVALID_TO_NUMBER, f"The 'To' number {form['To']} is not a valid phone number.")
    if not form.get("From") and not form.get("MessagingServiceSid"):
        raise RestRefusal(400, MESSAGE_FROM_REQUIRED, "A 'From' phone number is required.")
    if not form.get("Body") and not form.get("MediaUrl"):
        raise RestRefusal(400, MESSAGE_BODY_REQUIRED, "Message body is required.")
