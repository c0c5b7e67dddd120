"""Strict validation of OpenAI Realtime GA events, built on the openai SDK's pydantic models.

The SDK models accept unknown keys (``extra="allow"``) so that old SDKs survive new server
fields. The real service is strict about what clients send, so after pydantic has validated an
event we walk the result and reject every extra key; the numeric bounds the models do not
encode are checked last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any, Iterator, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError

from app.simulators.realtime_schema.errors import (
    ClientEventError,
    enumerate_values,
    error_from_validation,
    join_path,
    json_type,
    show_value,
)

try:
    from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
    from openai.types.realtime.response_item_reference import ResponseItemReference
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "The realtime double validates events against the `openai` package's types; "
        "install it (pip install 'openai>=2', or the project's dev extra)."
    ) from exc


@dataclass(frozen=True, slots=True)
class ParsedClientEvent:
    data: dict[str, Any]
    """The event as the client sent it (plain JSON values), known to be valid."""
    model: BaseModel
    """The validated SDK model of the event."""
    item_references: dict[int, str]
    """`response.create` only: positions in `response.input` holding `item_reference` ids."""

    @property
    def type(self) -> str:
        return self.data["type"]

    @property
    def event_id(self) -> str | None:
        event_id = self.data.get("event_id")
        return event_id if isinstance(event_id, str) else None


def _union_members(alias: Any) -> tuple[type[BaseModel], ...]:
    # The SDK aliases are Annotated[Union[...], PropertyInfo(...)]; PropertyInfo is not a
    # pydantic discriminator, so we dispatch on `type` ourselves (cheaper, clearer errors).
    args = get_args(alias)
    union = args[0] if args else alias
    return tuple(get_args(union))


def _type_literal(model: type[BaseModel]) -> str:
    return get_args(model.model_fields["type"].annotation)[0]


class StrictEventParser:
    """Strict parsing of the client events of one SDK union (Realtime's, GPT-Live's): the JSON
    envelope, the `type` dispatch, pydantic in strict mode, then every key the models did not
    declare refused, each failure worded as the service words it (`ClientEventError`)."""

    def __init__(self, union: Any) -> None:
        self.models: dict[str, type[BaseModel]] = {_type_literal(m): m for m in _union_members(union)}
        self._adapters: dict[str, TypeAdapter[Any]] = {name: TypeAdapter(m) for name, m in self.models.items()}
        self.types: tuple[str, ...] = tuple(self.models)

    def envelope(self, raw: str | bytes) -> tuple[dict[str, Any], str, str | None]:
        """The event as JSON, its known `type` and its `event_id` (None when absent)."""
        if isinstance(raw, (bytes, bytearray, memoryview)):
            raise ClientEventError(
                "invalid_json",
                "We could not parse the JSON body of your request: binary frames are not supported, "
                "send each event as a JSON text frame.",
            )
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ClientEventError(
                "invalid_json",
                f"We could not parse the JSON body of your request: {exc.msg} "
                f"(line {exc.lineno}, column {exc.colno}).",
            ) from None
        if not isinstance(data, dict):
            raise ClientEventError(
                "invalid_type", f"Invalid type for event: expected an object, but got {json_type(data)} instead."
            )
        event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
        event_type = data.get("type")
        if "type" not in data:
            raise ClientEventError(
                "missing_required_parameter", "Missing required parameter: 'type'.", "type", event_id=event_id
            )
        if not isinstance(event_type, str) or event_type not in self.models:
            raise ClientEventError(
                "invalid_value",
                f"Invalid value: {show_value(event_type)}. Supported values are: {enumerate_values(self.types)}.",
                "type",
                event_id=event_id,
            )
        return data, event_type, event_id

    def validate(self, event_type: str, data: dict[str, Any], event_id: str | None) -> BaseModel:
        """The validated model of an event of `event_type`, no unknown key anywhere."""
        try:
            model = self._adapters[event_type].validate_python(data, strict=True)
        except ValidationError as exc:
            raise error_from_validation(exc, data, event_id) from None
        unknown = find_unknown_parameter(model)
        if unknown is not None:
            raise ClientEventError("unknown_parameter", f"Unknown parameter: '{unknown}'.", unknown, event_id=event_id)
        return model


_REALTIME = StrictEventParser(RealtimeClientEvent)
_REFERENCE_ADAPTER: TypeAdapter[ResponseItemReference] = TypeAdapter(ResponseItemReference)
CLIENT_EVENT_TYPES: tuple[str, ...] = _REALTIME.types

# Stand-in for an `item_reference` while the rest of `response.input` is validated: the GA
# union has no reference type although the service (and the SDK's send()) accept one.
_REFERENCE_PLACEHOLDER = {"type": "message", "role": "system", "content": []}


@cache
def server_event_adapter() -> TypeAdapter[Any]:
    """TypeAdapter over the SDK's `RealtimeServerEvent` union (built lazily: it is large)."""
    return TypeAdapter(RealtimeServerEvent)


def validate_server_event(event: dict[str, Any]) -> BaseModel:
    """Validate one server event against `RealtimeServerEvent`; raises pydantic's ValidationError."""
    return server_event_adapter().validate_python(event)


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_client_event(raw: str | bytes) -> ParsedClientEvent:
    """Parse and strictly validate one websocket message; raise ClientEventError like the service."""
    data, event_type, event_id = _REALTIME.envelope(raw)

    if event_type == "session.update":
        session = data.get("session")
        if isinstance(session, dict) and "type" not in session:
            # GA made session.type mandatory; beta-era clients omit it.
            raise ClientEventError(
                "missing_required_parameter",
                "Missing required parameter: 'session.type'.",
                "session.type",
                event_id=event_id,
            )

    to_validate, references = data, {}
    if event_type == "response.create":
        to_validate, references = _split_item_references(data, event_id)

    model = _REALTIME.validate(event_type, to_validate, event_id)
    _check_bounds(event_type, data, event_id)
    return ParsedClientEvent(data=data, model=model, item_references=references)


def _split_item_references(data: dict[str, Any], event_id: str | None) -> tuple[dict[str, Any], dict[int, str]]:
    response = data.get("response")
    items = response.get("input") if isinstance(response, dict) else None
    if not isinstance(items, list):
        return data, {}
    references: dict[int, str] = {}
    replaced = list(items)
    for index, element in enumerate(items):
        if isinstance(element, dict) and element.get("type") == "item_reference":
            prefix = f"response.input[{index}]"
            try:
                reference = _REFERENCE_ADAPTER.validate_python(element, strict=True)
            except ValidationError as exc:
                raise error_from_validation(exc, element, event_id, prefix=prefix) from None
            unknown = find_unknown_parameter(reference, prefix)
            if unknown is not None:
                raise ClientEventError(
                    "unknown_parameter", f"Unknown parameter: '{unknown}'.", unknown, event_id=event_id
                )
            references[index] = reference.id
            replaced[index] = _REFERENCE_PLACEHOLDER
    if not references:
        return data, {}
    return {**data, "response": {**response, "input": replaced}}, references


# ---------------------------------------------------------------------------------------------
# Unknown parameters


def find_unknown_parameter(model: BaseModel, prefix: str = "") -> str | None:
    """Dotted path of the first key the models did not declare, or None."""
    return next(_iter_unknown(model, prefix), None)


# The service's session object carries these on top of the request model's fields.
_SERVICE_SESSION_EXTRAS = frozenset({"session.object", "session.id", "session.expires_at"})


def unexpected_server_keys(model: BaseModel) -> set[str]:
    """Dotted paths of the keys in a validated server event that the models do not declare,
    beyond those the service itself sends: what a simulated server must never add."""
    return set(_iter_unknown(model, "")) - _SERVICE_SESSION_EXTRAS


def _iter_unknown(value: Any, path: str) -> Iterator[str]:
    # Called for every client event (50 appends a second per call): recurse only into values
    # that can hold models.
    if isinstance(value, BaseModel):
        extra = value.__pydantic_extra__
        if extra:
            for key in extra:
                yield join_path(path, key)
        fields = type(value).model_fields
        for name in value.model_fields_set:
            child = getattr(value, name)
            if isinstance(child, _CONTAINERS):
                info = fields.get(name)
                yield from _iter_unknown(child, join_path(path, (info.alias if info and info.alias else name)))
    elif isinstance(value, (list, tuple)):
        for index, element in enumerate(value):
            if isinstance(element, _CONTAINERS):
                yield from _iter_unknown(element, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, element in value.items():
            if isinstance(element, _CONTAINERS):
                yield from _iter_unknown(element, join_path(path, str(key)))


_CONTAINERS = (BaseModel, list, tuple, dict)


# ---------------------------------------------------------------------------------------------
# Numeric bounds the models do not encode but the service enforces

_INTEGER, _DECIMAL = "integer", "decimal"
_BOUNDS: dict[str, tuple[tuple[tuple[str, ...], str, float | None, float | None], ...]] = {
    "conversation.item.truncate": (
        (("audio_end_ms",), _INTEGER, 0, None),
        (("content_index",), _INTEGER, 0, None),
    ),
    "session.update": (
        (("session", "max_output_tokens"), _INTEGER, 1, 4096),
        (("session", "audio", "output", "speed"), _DECIMAL, 0.25, 1.5),
        (("session", "audio", "input", "turn_detection", "threshold"), _DECIMAL, 0.0, 1.0),
        (("session", "audio", "input", "turn_detection", "prefix_padding_ms"), _INTEGER, 0, None),
        (("session", "audio", "input", "turn_detection", "silence_duration_ms"), _INTEGER, 0, None),
    ),
    "response.create": ((("response", "max_output_tokens"), _INTEGER, 1, 4096),),
}


def _check_bounds(event_type: str, data: dict[str, Any], event_id: str | None) -> None:
    for path, kind, low, high in _BOUNDS.get(event_type, ()):
        value: Any = data
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # absent, null, or a string such as "inf": the models already judged it
        param = ".".join(path)
        if low is not None and value < low:
            raise ClientEventError(
                f"{kind}_below_min_value",
                f"Invalid '{param}': {kind} below minimum value. "
                f"Expected a value >= {_num(low)}, but got {_num(value)} instead.",
                param,
                event_id=event_id,
            )
        if high is not None and value > high:
            raise ClientEventError(
                f"{kind}_above_max_value",
                f"Invalid '{param}': {kind} above maximum value. "
                f"Expected a value <= {_num(high)}, but got {_num(value)} instead.",
                param,
                event_id=event_id,
            )


def _num(value: float) -> str:
    return str(value)

