"""Logging: the call on every line, phone numbers masked; readable text, or one JSON object a
line (LOG_FORMAT=json) for a log collector."""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

import orjson

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


def mask_phones(text: str) -> str:
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text) if _PHONE.search(text) else text


class CallContextFilter(logging.Filter):
    """Adds the current call to each record and masks any phone number that slipped into a
    message or an exception's text."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.call = current_call.get()
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if isinstance(record.msg, str):
            record.msg = mask_phones(record.msg)
        if record.exc_info and not record.exc_text:  # formatters print exc_text when it is set
            record.exc_text = mask_phones(logging.Formatter().formatException(record.exc_info))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, process id, logger, call, message,
    and the exception's traceback when there is one. Runs after CallContextFilter (the call,
    masking)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "pid": record.process,
            "logger": record.name,
            "call": getattr(record, "call", current_call.get()),
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return orjson.dumps(entry).decode()


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(call)s] %(message)s"
# With several worker processes on one output, each line says whose it is.
WORKERS_TEXT_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s [%(call)s] %(message)s"


def configure_logging(level: str = "INFO", log_format: Literal["text", "json"] = "text", *,
                      workers: bool = False) -> None:
    """`workers`: this process is one of several (or their supervisor): text lines carry its id."""
    handler = logging.StreamHandler()
    text_format = WORKERS_TEXT_FORMAT if workers else TEXT_FORMAT
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(text_format))
    handler.addFilter(CallContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
