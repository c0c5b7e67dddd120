"""`app.json_wire.loads` must behave exactly as `json.loads` on every input."""

import json

import pytest

from app import json_wire

SAME_AS_JSON = [
    '{"event":"media","media":{"payload":"AAAA","timestamp":"20"}}',
    '[1, 2, {"a": null}]',
    '"text"',
    "12.5",
    "NaN",
    " {\"a\": 1}",  # leading whitespace: the scanner alone refuses it
    "{\"a\": 1}\n",  # trailing whitespace: the scanner alone stops short of it
    "\t[]\r\n",
    '{"a": 1} {"b": 2}',  # extra data
    '{"a": 1',  # truncated
    '{"a": 1,}',
    "",
    "   ",
    "\ufeff{}",  # a BOM
    '{"a": "\\ud800"}',  # a lone surrogate escape: valid JSON
    '{"a": "\x01"}',  # a raw control character: invalid in strict mode
    b'{"bytes": true}',
    b"\xff\xfe",
]


def outcome(decode, text):
    try:
        return "ok", decode(text)
    except ValueError as exc:
        return "error", type(exc)


@pytest.mark.parametrize("text", SAME_AS_JSON, ids=range(len(SAME_AS_JSON)))
def test_loads_gives_what_json_loads_gives(text):
    expected = outcome(json.loads, text)
    got = outcome(json_wire.loads, text)
    if expected[0] == "ok" and isinstance(expected[1], float) and expected[1] != expected[1]:
        assert got[0] == "ok" and got[1] != got[1]  # NaN is not equal to itself
    else:
        assert got == expected


def test_loads_keeps_no_state_between_messages():
    # The C scanner memoizes keys within one call; nothing may leak into the next.
    first = json_wire.loads('{"key": 1}')
    second = json_wire.loads('{"key": 2}')
    assert first == {"key": 1} and second == {"key": 2}
