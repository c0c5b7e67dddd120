"""The dashboard's periods: days, ISO weeks and months of the Paris calendar, ending with a
chosen day, and the query parameters that choose them (``end``, ``days``, ``weeks``,
``months``; problems are reported in French)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from app.calllog.store_queries import FIRST_DAY, LAST_DAY
from app.review.formatting import PARIS
from app.review.queries import positive_int

DEFAULT_DAYS, MAX_DAYS = 30, 366
DEFAULT_WEEKS, MAX_WEEKS = 12, 104
DEFAULT_MONTHS, MAX_MONTHS = 12, 36
FIRST_YEAR, LAST_YEAR = FIRST_DAY.year, LAST_DAY.year     # those of the call filters
MONTHS_FR = ("janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.", "nov.", "déc.")


@dataclass(frozen=True, slots=True)
class Period:
    key: str            # "2025-11-24", "2025-W48", "2025-11"
    label: str          # short, for an axis: "24/11", "S48", "nov. 25"
    title: str          # for a table: "lun. 24/11/2025", "semaine 48 de 2025 (24/11 – 30/11)", "novembre 2025"
    first_day: date
    end_day: date       # the day after the period (exclusive)

    @property
    def last_day(self) -> date:
        return self.end_day - timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Window:
    """The dashboard's range: `days` days, `weeks` ISO weeks and `months` months ending with `end`."""

    end: date
    days: int = DEFAULT_DAYS
    weeks: int = DEFAULT_WEEKS
    months: int = DEFAULT_MONTHS

    def day_periods(self) -> list[Period]:
        return [day_period(self.end - timedelta(days=back)) for back in range(self.days - 1, -1, -1)]

    def week_periods(self) -> list[Period]:
        monday = self.end - timedelta(days=self.end.weekday())
        return [week_period(monday - timedelta(weeks=back)) for back in range(self.weeks - 1, -1, -1)]

    def month_periods(self) -> list[Period]:
        index = self.end.year * 12 + self.end.month - 1
        return [month_period(date((index - back) // 12, (index - back) % 12 + 1, 1))
                for back in range(self.months - 1, -1, -1)]


WEEKDAYS_FR = ("lun.", "mar.", "mer.", "jeu.", "ven.", "sam.", "dim.")
MONTH_NAMES_FR = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
                  "novembre", "décembre")


def day_period(day: date) -> Period:
    return Period(day.isoformat(), f"{day:%d/%m}", f"{WEEKDAYS_FR[day.weekday()]} {day:%d/%m/%Y}", day,
                  day + timedelta(days=1))


def week_period(monday: date) -> Period:
    year, week, _ = monday.isocalendar()
    sunday = monday + timedelta(days=6)
    return Period(f"{year}-W{week:02d}", f"S{week}", f"semaine {week} de {year} ({monday:%d/%m} – {sunday:%d/%m})",
                  monday, monday + timedelta(days=7))


def month_period(first: date) -> Period:
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return Period(f"{first:%Y-%m}", f"{MONTHS_FR[first.month - 1]} {first:%y}",
                  f"{MONTH_NAMES_FR[first.month - 1]} {first.year}", first, following)


def spanning(periods: list[Period]) -> Period:
    """Contiguous periods as one."""
    first, last = periods[0], periods[-1]
    return Period(f"{first.key}/{last.key}", "période", f"du {first.first_day:%d/%m/%Y} au {last.last_day:%d/%m/%Y}",
                  first.first_day, last.end_day)


def paris_midnight(day: date) -> datetime:
    """The UTC instant a Paris day begins (midnight always exists there: clocks change at 2 or 3 am)."""
    return datetime.combine(day, time.min, tzinfo=PARIS).astimezone(UTC)


def boundaries(periods: list[Period]) -> list[datetime]:
    """The UTC instants that delimit contiguous periods: each one's start, then the last one's end."""
    return [paris_midnight(period.first_day) for period in periods] + [paris_midnight(periods[-1].end_day)]


def paris_today() -> date:
    return datetime.now(PARIS).date()


def parse_window(params: Any) -> tuple[Window, list[str], dict[str, str]]:
    """The window asked for, the French problems found, and the form's values to show back."""
    problems: list[str] = []
    end = paris_today()
    chosen_end = ""
    raw_end = (params.get("end") or "").strip()
    if raw_end:
        try:
            asked = date.fromisoformat(raw_end)
        except ValueError:
            problems.append("date de fin invalide (attendu AAAA-MM-JJ)")
        else:
            if FIRST_YEAR <= asked.year <= LAST_YEAR:
                end, chosen_end = asked, asked.isoformat()
            else:   # far years would overflow the date arithmetic
                problems.append(f"date de fin hors limites (années {FIRST_YEAR} à {LAST_YEAR})")
    counts: dict[str, int] = {}
    form = {"end": chosen_end}
    for name, default, limit, label in (("days", DEFAULT_DAYS, MAX_DAYS, "nombre de jours"),
                                        ("weeks", DEFAULT_WEEKS, MAX_WEEKS, "nombre de semaines"),
                                        ("months", DEFAULT_MONTHS, MAX_MONTHS, "nombre de mois")):
        counts[name] = positive_int(params.get(name), default, label, problems, limit=limit)
        form[name] = str(counts[name]) if counts[name] != default else ""   # defaults stay out of links
    return Window(end=end, **counts), problems, form
