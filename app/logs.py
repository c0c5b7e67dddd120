"""Logging: one format for the service, the call on every line, phone numbers masked."""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar

current_call: ContextVar[str] = ContextVar("current_call", default="-")

_PHONE = re.compile(r"(?<![\w+])\+?\d[\d ]{6,}\d(?!\w)")


def mask_phone(number: str | None) -> str:
    """Keep the country prefix and the last two digits: enough to recognise, not to dial."""
    if not number:
        return "?"
    digits = re.sub(r"\D", "", number)
    if len(digits) < 6:
        return "•" * len(digits)
    prefix = "+" if number.strip().startswith("+") else ""
    return f"{prefix}{digits[:3]}{'•' * (len(digits) - 5)}{digits[-2:]}"


class CallContextFilter(logging.Filter):
    """Adds the current call to each record and masks any phone number that slipped into a message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.call = current_call.get()
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if isinstance(record.msg, str) and _PHONE.search(record.msg):
            record.msg = _PHONE.sub(lambda m: mask_phone(m.group(0)), record.msg)
        return True


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(call)s] %(message)s"))
    handler.addFilter(CallContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
