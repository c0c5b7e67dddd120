"""Strict validation of OpenAI client events (Realtime GA, GPT-Live) against the openai SDK's pydantic models
(`validation`), refused with the service's error codes, messages and `param` paths (`errors`)."""

from app.simulators.realtime_schema.errors import ClientEventError
from app.simulators.realtime_schema.validation import (
    CLIENT_EVENT_TYPES,
    ParsedClientEvent,
    StrictEventParser,
    find_unknown_parameter,
    parse_client_event,
    server_event_adapter,
    unexpected_server_keys,
    validate_server_event,
)

__all__ = [
    "CLIENT_EVENT_TYPES",
    "ClientEventError",
    "ParsedClientEvent",
    "StrictEventParser",
    "find_unknown_parameter",
    "parse_client_event",
    "server_event_adapter",
    "unexpected_server_keys",
    "validate_server_event",
]
