"""When advisors answer the phone: TRANSFER_HOURS, e.g. "mon-fri 08:00-12:00 14:00-18:00;
sat 09:00-12:00", in the advisors' time zone. Empty: always."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


@dataclass(frozen=True, slots=True)
class OpeningHours:
    # Per weekday (0 = Monday), the (start, end) spans when someone answers.
    spans: tuple[tuple[tuple[time, time], ...], ...]
    zone: ZoneInfo
    always: bool = False

    @classmethod
    def parse(cls, setting: str, zone: str = "Europe/Paris") -> OpeningHours:
        """ValueError, naming the part, when the setting is malformed."""
        tz = ZoneInfo(zone)
        if not setting.strip():
            return cls(tuple(() for _ in DAYS), tz, always=True)
        spans: list[list[tuple[time, time]]] = [[] for _ in DAYS]
        for rule in filter(None, (part.strip() for part in setting.split(";"))):
            days, *hours = rule.split()
            if not hours:
                raise ValueError(f"TRANSFER_HOURS: {rule!r} has days but no hours")
            for day in _days(days):
                spans[day].extend(_span(text) for text in hours)
        return cls(tuple(tuple(day) for day in spans), tz)

    def open_at(self, moment: datetime) -> bool:
        if self.always:
            return True
        local = moment.astimezone(self.zone)
        now = local.time()
        return any(start <= now < end for start, end in self.spans[local.weekday()])


def _days(text: str) -> list[int]:
    first, _, last = text.lower().partition("-")
    if first not in DAYS or (last and last not in DAYS):
        raise ValueError(f"TRANSFER_HOURS: unknown day in {text!r} (use {', '.join(DAYS)})")
    start, end = DAYS.index(first), DAYS.index(last or first)
    if end < start:
        raise ValueError(f"TRANSFER_HOURS: {text!r} runs backwards")
    return list(range(start, end + 1))


def _span(text: str) -> tuple[time, time]:
    match = _SPAN.match(text)
    if not match:
        raise ValueError(f"TRANSFER_HOURS: {text!r} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = map(int, match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59:
        raise ValueError(f"TRANSFER_HOURS: {text!r} is not a time of day")
    start, end = time(h1, m1), time(23, 59, 59, 999999) if (h2, m2) == (24, 0) else time(h2, m2)
    if end <= start:
        raise ValueError(f"TRANSFER_HOURS: {text!r} ends before it starts")
    return start, end
