"""Which calls the line takes: an optional allow-list of caller numbers (a cooperative's
members), calls per caller per hour, and this instance's capacity.

A refused call is answered with French TwiML that says why, and logged with its outcome
(`not_allowed`, `rate_limited`, `busy`). The per-caller count lives in Redis when REDIS_URL is
set (shared by every instance), in memory otherwise; capacity is per instance: the calls in
conversation plus those admitted whose stream has not started yet. A call-back OCTI placed
meets capacity only: its number met the allow-list when it was placed, and it is not the
farmer calling again.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from app.channels.contract import CallOutcome
from app.channels.twilio.numbers import digits, withheld
from app.config import Settings
from app.ratelimit import MovingWindowLimit


class AllowedCallers:
    """ALLOWED_CALLERS: the numbers the line talks with; empty, everyone."""

    def __init__(self, settings: Settings) -> None:
        self._numbers = {digits(n) for n in settings.allowed_callers.split(",") if digits(n)}

    def allows(self, number: str) -> bool:
        return not self._numbers or digits(number) in self._numbers


class CallAdmission:
    def __init__(self, settings: Settings, active_calls: Callable[[], int]) -> None:
        self.allowed = AllowedCallers(settings)
        self._per_hour = settings.calls_per_caller_per_hour
        self._capacity = settings.max_concurrent_calls
        self._active_calls = active_calls
        self._waiting_ttl = settings.stream_token_ttl_seconds
        self._waiting: OrderedDict[str, float] = OrderedDict()  # admitted, stream not started yet
        self._calls_per_caller = MovingWindowLimit(
            settings.redis_url, limit=max(self._per_hour, 1), window_seconds=3600,
            key="octi-calls-per-caller", counted="calls per caller")

    async def refusal(self, call_sid: str, caller: str) -> CallOutcome | None:
        """None when the call may go ahead (it is then counted), else why not."""
        if not self.allowed.allows(caller):
            return CallOutcome.NOT_ALLOWED
        if self._full():
            return CallOutcome.BUSY
        # Held before the count per caller, which may wait on Redis: the webhooks answered
        # meanwhile must see this place taken.
        self._waiting[call_sid] = time.monotonic()
        try:
            # Withheld numbers all look alike: counted together, one farmer's calls would turn
            # every other farmer who hides their number away.
            if self._per_hour > 0 and not withheld(caller) and not await self._calls_per_caller.hit(digits(caller)):
                self._waiting.pop(call_sid, None)
                return CallOutcome.RATE_LIMITED
        except BaseException:  # the webhook's request went away meanwhile
            self._waiting.pop(call_sid, None)
            raise
        return None

    def call_back_refusal(self, call_sid: str) -> CallOutcome | None:
        """For a call-back OCTI placed, once answered: None when there is room (it is then counted)."""
        if self._full():
            return CallOutcome.BUSY
        self._waiting[call_sid] = time.monotonic()
        return None

    def _full(self) -> bool:
        return self._capacity > 0 and self.calls_held() >= self._capacity

    def calls_held(self) -> int:
        """Calls in conversation, and those admitted whose stream has not started yet."""
        return self._active_calls() + self._waiting_count()

    def stream_arrived(self, call_sid: str) -> None:
        """Its stream came to this instance (admitted here or by another): held as waiting
        until `stream_started`, when the conversation counts it."""
        self._waiting.pop(call_sid, None)
        self._waiting[call_sid] = time.monotonic()  # last: the waiting stay in order of age

    def stream_started(self, call_sid: str) -> None:
        self._waiting.pop(call_sid, None)

    def call_over(self, call_sid: str) -> bool:
        """The call ended: its place, if it was still waiting for its stream, is free again.
        True when it was waiting (its stream never came)."""
        return self._waiting.pop(call_sid, None) is not None

    def _waiting_count(self) -> int:
        expired = time.monotonic() - self._waiting_ttl
        while self._waiting and next(iter(self._waiting.values())) < expired:
            self._waiting.popitem(last=False)
        return len(self._waiting)

    def close(self) -> None:
        self._calls_per_caller.close()
