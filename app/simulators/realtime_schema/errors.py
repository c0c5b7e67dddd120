"""Client event errors as the service words them: its codes, messages and `param` paths, also
for what pydantic finds wrong in an event."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError


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


# pydantic's error types, as the service words what it expected.
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


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _format_path(path: tuple[str | int, ...], prefix: str = "") -> str:
    text = prefix
    for element in path:
        if isinstance(element, int):
            text += f"[{element}]"
        else:
            text = join_path(text, element)
    return text


def error_from_validation(
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
        f"Invalid value: {show_value(best.error['input'])}. "
        f"Supported values are: {enumerate_values(expected, quote=False)}.",
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
            f"Invalid value: {show_value(error['input'])}. "
            f"Supported values are: {enumerate_values(values, quote=False)}.",
            param,
            event_id=event_id,
        )
    if kind in _EXPECTED_TYPE:
        return ClientEventError(
            "invalid_type",
            f"Invalid type for '{shown}': expected {_EXPECTED_TYPE[kind]}, "
            f"but got {json_type(error['input'])} instead.",
            param,
            event_id=event_id,
        )
    return ClientEventError("invalid_value", f"Invalid value for '{shown}': {error['msg']}.", param, event_id=event_id)


def json_type(value: Any) -> str:
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


def show_value(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    return json.dumps(value, ensure_ascii=False, default=str)


def enumerate_values(values: tuple[str, ...] | list[str], *, quote: bool = True) -> str:
    quoted = [f"'{value}'" if quote else value for value in values]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + f" and {quoted[-1]}"
