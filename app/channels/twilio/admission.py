"""Which callers the phone line takes: an optional allow-list of caller numbers (a cooperative's
members) and calls per caller per hour, beside what every line checks (`app/channels/admission.py`:
the model reachable, this instance's capacity).

A refused call is answered with French TwiML that says why, and logged with its outcome
(`not_allowed`, `rate_limited`, `busy`). The per-caller count lives in Redis when REDIS_URL is
set (shared by every instance), in memory otherwise. A call-back OCTI placed meets capacity
only: its number met the allow-list when it was placed, and it is not the farmer calling again.
An admitted call keeps its place until its media stream starts.
"""

from __future__ import annotations

from app.channels.admission import Admission
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
    def __init__(self, settings: Settings, admission: Admission) -> None:
        self.allowed = AllowedCallers(settings)
        self._per_hour = settings.calls_per_caller_per_hour
        self._admission = admission
        self._calls_per_caller = MovingWindowLimit(
            settings.redis_url, limit=max(self._per_hour, 1), window_seconds=3600,
            key="octi-calls-per-caller", counted="calls per caller")

    async def refusal(self, call_sid: str, caller: str) -> CallOutcome | None:
        """None when the call may go ahead (its place is then held), else why not."""
        if not self.allowed.allows(caller):
            return CallOutcome.NOT_ALLOWED
        if self._admission.full():
            return CallOutcome.BUSY
        # Held before the count per caller, which may wait on Redis: the webhooks answered
        # meanwhile must see this place taken.
        self._admission.hold(call_sid)
        try:
            # Withheld numbers all look alike: counted together, one farmer's calls would turn
            # every other farmer who hides their number away.
            if self._per_hour > 0 and not withheld(caller) and not await self._calls_per_caller.hit(digits(caller)):
                self._admission.over(call_sid)
                return CallOutcome.RATE_LIMITED
        except BaseException:  # the webhook's request went away meanwhile
            self._admission.over(call_sid)
            raise
        return None

    def call_back_refusal(self, call_sid: str) -> CallOutcome | None:
        """For a call-back OCTI placed, once answered: None when there is room (its place is then held)."""
        if self._admission.full():
            return CallOutcome.BUSY
        self._admission.hold(call_sid)
        return None

    def close(self) -> None:
        self._calls_per_caller.close()
