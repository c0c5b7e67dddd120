"""Calls whose stream is over but that still need one of our webhooks: the recording of a
voicemail (the farmer is leaving their question), or a transfer's whisper and dial outcome.

A drain waits for them too (`Service.calls_held`): a server that stopped as soon as the last
stream ended would leave Twilio no one to post the recording to, and the call-back the farmer
was promised would never be logged. Each is held until its webhook arrives, or for at most
the seconds it was expected for (Twilio may never post it: the caller hung up).
"""

from __future__ import annotations

import time


class AwaitedWebhooks:
    def __init__(self) -> None:
        self._until: dict[str, float] = {}  # call sid -> monotonic deadline

    def expect(self, call_sid: str, seconds: float) -> None:
        if call_sid:
            self._until[call_sid] = max(self._until.get(call_sid, 0.0), time.monotonic() + seconds)

    def arrived(self, call_sid: str) -> None:
        self._until.pop(call_sid, None)

    def count(self) -> int:
        now = time.monotonic()
        for call_sid in [sid for sid, until in self._until.items() if until <= now]:
            del self._until[call_sid]
        return len(self._until)
