"""What every line checks before a conversation, whatever carries it: that the model can be
reached, and that this instance has room for one more (MAX_CONCURRENT_CALLS).

One per instance, shared by the phone and the browser lines. Room is counted across both: the
conversations under way, those whose engine is being readied, and the calls admitted whose
conversation has not started yet (a phone call between its webhook and its media stream, a
browser conversation while its user's count is checked). Each line says no in its own way:
the phone with French TwiML (a voicemail when the model cannot be reached), the browser with
an `error` and a close (1008).
"""

from __future__ import annotations

import time
from collections import OrderedDict

from app.channels.contract import Conversations
from app.config import Settings
from app.metrics import Metrics


class Admission:
    def __init__(self, settings: Settings, metrics: Metrics, agent: Conversations) -> None:
        self._settings = settings
        self._metrics = metrics
        self._agent = agent
        self._capacity = settings.max_concurrent_calls
        # A phone call's place is kept until its stream could have come (its token's lifetime).
        self._waiting_ttl = settings.stream_token_ttl_seconds
        self._waiting: OrderedDict[str, float] = OrderedDict()  # admitted, conversation not started yet

    def unreachable(self) -> str | None:
        """Why no conversation can be held now (for the log), or None when one can."""
        if not self._settings.realtime_configured:
            return "OPENAI_API_KEY is not set"
        if not self._agent.reachable():
            return "the model cannot be reached"
        return None

    def full(self) -> bool:
        return self._capacity > 0 and self.calls_held() >= self._capacity

    def calls_held(self) -> int:
        """Calls in conversation or being connected, and those admitted whose conversation has not
        started yet."""
        return self._metrics.active_calls + self._agent.connecting + self._waiting_count()

    def hold(self, call_id: str) -> None:
        """Admitted: its place is kept until `started` (or `over`)."""
        self._waiting.pop(call_id, None)
        self._waiting[call_id] = time.monotonic()  # last: the waiting stay in order of age

    def started(self, call_id: str) -> None:
        """Its conversation counts it from now on (the agent's first step)."""
        self._waiting.pop(call_id, None)

    def over(self, call_id: str) -> bool:
        """The call ended before its conversation: its place is free again. True when it was
        still held."""
        return self._waiting.pop(call_id, None) is not None

    def _waiting_count(self) -> int:
        expired = time.monotonic() - self._waiting_ttl
        while self._waiting and next(iter(self._waiting.values())) < expired:
            self._waiting.popitem(last=False)
        return len(self._waiting)
