"""JSON decoding for the machine-written messages of the relay's hot paths.

`json.loads` wraps the C scanner in three Python calls and two whitespace regexes, which
cost as much as the scanning itself for a 400-byte Twilio media message, 50 times a second
per call. Messages from Twilio and the realtime service carry no surrounding whitespace, so
the scanner is called directly; anything else goes through `json.loads` for its exact
semantics and error messages.
"""

from __future__ import annotations

import json
import json.scanner
from typing import Any

_scan_once = json.scanner.make_scanner(json.JSONDecoder())


def loads(text: str | bytes) -> Any:
    """Same result (or ValueError) as `json.loads(text)`."""
    if type(text) is str:
        try:
            value, end = _scan_once(text, 0)
        except (StopIteration, ValueError):
            return json.loads(text)
        if end == len(text):
            return value
    return json.loads(text)
