"""The call's clock and what is recorded against it: the timeline of messages and Twilio's warnings."""

from __future__ import annotations

import asyncio
from typing import Any

from app.simulators.twilio_caller.records import CallResult
from app.simulators.twilio_wire import Violation

MAX_VIOLATIONS = 1000  # keep a misbehaving server from growing the result without bound


class CallTimeline:
    """Times are seconds since the stream started: on the loop clock in real time, else on the
    media clock (20 ms ticks). Entries made before the start carry loop times until `start`
    rebases them."""

    def __init__(self, result: CallResult, *, realtime: bool) -> None:
        self.result = result
        self.realtime = realtime
        self.loop = asyncio.get_running_loop()
        self.origin = self.loop.time()
        self.t0: float | None = None  # loop time of the `start` message
        self.media_ms = 0  # media clock (virtual time when not realtime)
        self.stopped: tuple[float, float] | None = None  # (media t, loop time) when the stream ended
        self.violation_count = 0

    def now(self) -> float:
        if self.t0 is None:
            return self.loop.time()  # rebased once the stream starts (see start)
        if self.stopped is not None:
            return self.stopped[0] + (self.loop.time() - self.stopped[1])
        if self.realtime:
            return self.loop.time() - self.t0
        return self.media_ms / 1000

    def start(self, origin: float) -> None:
        """The stream started at loop time `origin`: from now on times count from it."""
        self.rebase(origin)
        self.t0 = self.result.started_at = origin

    def start_stream(self, **details: Any) -> None:
        """The `start` message just went out: it is the origin, at 0 exactly (a `log` after `start`
        would read the clock again and could show it a fraction of a millisecond late)."""
        self.start(self.loop.time())
        self.result.timeline.append({"t": 0.0, "direction": "sent", "event": "start", **details})

    def stop(self) -> None:
        """The stream ended: times go on from its last media time, on the loop clock."""
        self.stopped = (self.now(), self.loop.time())

    def rebase(self, origin: float) -> None:
        for entry in self.result.timeline:
            entry["t"] = round(entry["t"] - origin, 4)
        for v in self.result.violations:
            v["t"] = round(v["t"] - origin, 4)

    def log(self, direction: str, event: str, **details: Any) -> None:
        t = self.now()
        self.result.timeline.append({"t": round(t, 4) if self.t0 is not None else t, "direction": direction,
                                     "event": event, **details})

    def violation(self, v: Violation, event: str | None = None) -> None:
        self.violation_count += 1
        if len(self.result.violations) < MAX_VIOLATIONS:
            t = self.now()
            self.result.violations.append({**v.as_dict(), "event": event,
                                           "t": round(t, 4) if self.t0 is not None else t})
