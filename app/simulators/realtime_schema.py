"""Strict validation of OpenAI Realtime GA client events, built on the openai SDK's pydantic models.

The SDK models accept unknown keys (``extra="allow"``) so that old SDKs survive new server
fields. The real service is strict about what clients send, so after pydantic has validated an
event we walk the result and reject every extra key, and we map pydantic's errors onto the
service's error shape (``code``, ``message``, ``param``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any, Iterator, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError

try:
    from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
    from openai.types.realtime.response_item_reference import ResponseItemReference
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "The realtime double validates events against the `openai` package's types; "
        "install it (pip install 'openai>=2', or the project's dev extra)."
    ) from exc

__all__ = [
    "CLIENT_EVENT_TYPES",
    "ClientEventError",
    "ParsedClientEvent",
    "find_unknown_parameter",
    "parse_client_event",
    "server_event_adapter",
    "unexpected_server_keys",
    "validate_server_event",
]


class ClientEventError(Exception):
    """A client event the service would reject; carries the fields of the `error` event."""

    def __init__(
        self,
        code: str | None,
        message: str,
        param: str | None = None,
        *,
        event_id: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id
        self.error_type = error_type


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


_CLIENT_MODELS: dict[str, type[BaseModel]] = {_type_literal(m): m for m in _union_members(RealtimeClientEvent)}
_CLIENT_ADAPTERS: dict[str, TypeAdapter[Any]] = {name: TypeAdapter(model) for name, model in _CLIENT_MODELS.items()}
_REFERENCE_ADAPTER: TypeAdapter[ResponseItemReference] = TypeAdapter(ResponseItemReference)
CLIENT_EVENT_TYPES: tuple[str, ...] = tuple(_CLIENT_MODELS)

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
            "invalid_type", f"Invalid type for event: expected an object, but got {_json_type(data)} instead."
        )
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None

    event_type = data.get("type")
    if "type" not in data:
        raise ClientEventError(
            "missing_required_parameter", "Missing required parameter: 'type'.", "type", event_id=event_id
        )
    if not isinstance(event_type, str) or event_type not in _CLIENT_MODELS:
        raise ClientEventError(
            "invalid_value",
            f"Invalid value: {_show(event_type)}. Supported values are: {_enumerate(CLIENT_EVENT_TYPES)}.",
            "type",
            event_id=event_id,
        )

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

    try:
        model = _CLIENT_ADAPTERS[event_type].validate_python(to_validate, strict=True)
    except ValidationError as exc:
        raise _error_from_validation(exc, to_validate, event_id) from None

    unknown = find_unknown_parameter(model)
    if unknown is not None:
        raise ClientEventError("unknown_parameter", f"Unknown parameter: '{unknown}'.", unknown, event_id=event_id)

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
                raise _error_from_validation(exc, element, event_id, prefix=prefix) from None
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
                yield _join(path, key)
        fields = type(value).model_fields
        for name in value.model_fields_set:
            child = getattr(value, name)
            if isinstance(child, _CONTAINERS):
                info = fields.get(name)
                yield from _iter_unknown(child, _join(path, (info.alias if info and info.alias else name)))
    elif isinstance(value, (list, tuple)):
        for index, element in enumerate(value):
            if isinstance(element, _CONTAINERS):
                yield from _iter_unknown(element, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, element in value.items():
            if isinstance(element, _CONTAINERS):
                yield from _iter_unknown(element, _join(path, str(key)))


_CONTAINERS = (BaseModel, list, tuple, dict)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


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


# ---------------------------------------------------------------------------------------------
# Pydantic errors -> service errors

_EXPECTED_TYPE = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a decimal",
    "float_parsing": "a decimal",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "list_type": "an array",
    "tuple_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}
_PRIMITIVE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}
_DISCRIMINATORS = {"type", "role"}


@dataclass(slots=True)
class _Located:
    path: tuple[str | int, ...]  # keys and indexes that exist in the client's JSON
    branch: tuple[str, ...]  # union members pydantic tried on the way (class names, ...)
    error: dict[str, Any]


def _locate(loc: tuple[str | int, ...], data: Any) -> _Located:
    path: list[str | int] = []
    branch: list[str] = []
    current = data
    for element in loc:
        if isinstance(element, int) and isinstance(current, list) and 0 <= element < len(current):
            path.append(element)
            current = current[element]
        elif isinstance(current, dict) and element in current:
            path.append(element)
            current = current[element]
        elif isinstance(element, str) and _is_union_tag(element):
            branch.append(element)
        else:
            path.append(element)  # a missing key
            current = None
    return _Located(tuple(path), tuple(branch), {})


def _is_union_tag(element: str) -> bool:
    # Field names in the SDK are snake_case; pydantic names union members after their class
    # ("RealtimeConversationItemUserMessage") or type ("literal['a']", "str").
    return element in _PRIMITIVE_TAGS or any(c.isupper() or c in "[](-'," for c in element)


def _format_path(path: tuple[str | int, ...], prefix: str = "") -> str:
    text = prefix
    for element in path:
        if isinstance(element, int):
            text += f"[{element}]"
        else:
            text = _join(text, element)
    return text


def _error_from_validation(
    exc: ValidationError, data: Any, event_id: str | None, prefix: str = ""
) -> ClientEventError:
    located: list[_Located] = []
    for error in exc.errors(include_url=False):
        item = _locate(tuple(error["loc"]), data)
        item.error = error
        located.append(item)

    # A union member whose `type`/`role` literal failed is simply the wrong member; its other
    # complaints are noise. Report an error from a member that matched, when there is one.
    wrong_members = {
        item.branch
        for item in located
        if item.error["type"] == "literal_error" and item.path and item.path[-1] in _DISCRIMINATORS and item.branch
    }

    def in_wrong_member(item: _Located) -> bool:
        return any(item.branch[: len(member)] == member for member in wrong_members)

    relevant = [item for item in located if not in_wrong_member(item)]
    if relevant:
        return _to_client_error(relevant[0], prefix, event_id)

    # Every member was the wrong one: report the discriminator of the closest member, listing
    # what every member would have accepted there.
    per_member: dict[tuple[str, ...], int] = {}
    for item in located:
        per_member[item.branch] = per_member.get(item.branch, 0) + 1
    discriminator_errors = [
        item
        for item in located
        if item.error["type"] == "literal_error" and item.path and item.path[-1] in _DISCRIMINATORS
    ]
    if not discriminator_errors:
        return _to_client_error(located[0], prefix, event_id)
    best = min(discriminator_errors, key=lambda item: (per_member[item.branch], -len(item.path)))
    expected: list[str] = []
    for item in discriminator_errors:
        if item.path == best.path:
            for value in _literal_values(item.error):
                if value not in expected:
                    expected.append(value)
    param = _format_path(best.path, prefix)
    return ClientEventError(
        "invalid_value",
        f"Invalid value: {_show(best.error['input'])}. Supported values are: {_enumerate(expected, quote=False)}.",
        param,
        event_id=event_id,
    )


def _literal_values(error: dict[str, Any]) -> list[str]:
    expected = str((error.get("ctx") or {}).get("expected", ""))
    # pydantic renders them as "'a', 'b' or 3"; keep each value's own quoting.
    return [part.strip() for part in expected.replace(" or ", ", ").split(",") if part.strip()]


def _to_client_error(item: _Located, prefix: str, event_id: str | None) -> ClientEventError:
    error = item.error
    kind = error["type"]
    param = _format_path(item.path, prefix) or None
    shown = param or "event"
    if kind == "missing":
        return ClientEventError(
            "missing_required_parameter", f"Missing required parameter: '{shown}'.", param, event_id=event_id
        )
    if kind == "literal_error":
        values = _literal_values(error)
        return ClientEventError(
            "invalid_value",
            f"Invalid value: {_show(error['input'])}. Supported values are: {_enumerate(values, quote=False)}.",
            param,
            event_id=event_id,
        )
    if kind in _EXPECTED_TYPE:
        return ClientEventError(
            "invalid_type",
            f"Invalid type for '{shown}': expected {_EXPECTED_TYPE[kind]}, "
            f"but got {_json_type(error['input'])} instead.",
            param,
            event_id=event_id,
        )
    return ClientEventError("invalid_value", f"Invalid value for '{shown}': {error['msg']}.", param, event_id=event_id)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    return json.dumps(value, ensure_ascii=False, default=str)


def _enumerate(values: tuple[str, ...] | list[str], *, quote: bool = True) -> str:
    quoted = [f"'{value}'" if quote else value for value in values]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + f" and {quoted[-1]}"
