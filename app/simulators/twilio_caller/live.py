"""A simulated call as Twilio's REST API sees it while it runs: it can be hung up or handed new
TwiML, and a registry (the REST impersonator, `app.simulators.twilio_rest`) finds it by CallSid."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class Interruption:
    """What a REST update asked of a live call: end it, or run other TwiML (inline or from a URL)."""

    kind: Literal["hang_up", "redirect"]
    twiml: str | None = None
    url: str | None = None
    method: str = "POST"


class LiveCall:
    """One call in progress. An interruption stops whatever the call is doing (a media stream, a
    <Dial>, a <Pause>) at its next step; the newest one wins, as on Twilio."""

    def __init__(self, call_sid: str, account_sid: str, *, from_number: str, to_number: str, direction: str) -> None:
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.from_number = from_number
        self.to_number = to_number
        self.direction = direction
        self.requested = asyncio.Event()
        self.completed = False
        self._interruption: Interruption | None = None

    def interrupt(self, interruption: Interruption) -> None:
        self._interruption = interruption
        self.requested.set()

    @property
    def pending(self) -> Interruption | None:
        return self._interruption

    def take(self) -> Interruption | None:
        """The pending interruption, consumed."""
        interruption, self._interruption = self._interruption, None
        self.requested.clear()
        return interruption

    async def wait(self, seconds: float) -> bool:
        """Let `seconds` pass unless interrupted first; True when interrupted."""
        try:
            async with asyncio.timeout(max(0.0, seconds)):
                await self.requested.wait()
        except TimeoutError:
            return False
        return True


class CallRegistry(Protocol):
    """Where live calls register so that REST requests reach them, with the account they belong to."""

    account_sid: str
    auth_token: str

    def attach(self, call: LiveCall) -> None: ...
