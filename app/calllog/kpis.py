"""The call log's key figures per period and per channel, for the reviewers' dashboard.

The caller gives the periods as their boundaries: n + 1 increasing UTC instants for n
contiguous periods (days, weeks or months of a calendar the caller chose). A call belongs to
the period its start falls in, and everything about it (its turns, its cost) counts there.

The grouping is SQL that SQLite and PostgreSQL both run: a CASE over the boundaries gives each
call its period, then one GROUP BY counts. The two databases have no common percentile
function, so the latency percentiles (by nearest rank) are window functions (ROW_NUMBER and
COUNT over each period and channel group; SQLite 3.25 or later): only a few figures per period
come back, never the answers' latencies themselves, which with 100k answers took the event
loop over 100 ms to fetch and sort.

Channels are grouped as the review shows them: "web" is a browser conversation, any other
channel (Twilio, or a call whose start was never logged) a phone call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, distinct, func, literal, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.calllog.models import CallRow, TurnRow

PHONE = "phone"
WEB = "web"
ALL = "all"                 # both channel groups together, for the latency figures
CHANNEL_GROUPS = (PHONE, WEB)


@dataclass(frozen=True, slots=True)
class PeriodCounts:
    """What the calls of one channel group started in one period add up to."""

    period: int                 # index of the period in the boundaries asked for
    channel: str                # PHONE or WEB
    calls: int
    interrupted_calls: int      # calls with at least one barge-in
    error_calls: int            # calls whose outcome is "error"
    caller_turns: int           # the caller's turns (calls.turns counts OCTI's as well)
    priced_calls: int           # calls with a known cost
    cost_usd: float             # the priced calls' cost
    users: int                  # distinct callers: phone numbers (by hash), browser users (by name)


@dataclass(frozen=True, slots=True)
class LatencyFigures:
    """The answers of one channel group (or ALL) in one period: how many, and their latency in
    ms from the caller's end of speech to OCTI's first audio sent, P50 and P95 by nearest rank."""

    answers: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None


NO_ANSWERS = LatencyFigures()


@dataclass(frozen=True, slots=True)
class KpiRows:
    counts: list[PeriodCounts]
    # (period, PHONE, WEB or ALL) -> the latency figures; no entry for a group without answers
    latencies: dict[tuple[int, str], LatencyFigures]


def _channel_group() -> Any:
    return case((CallRow.channel == WEB, literal(WEB)), else_=literal(PHONE))


def _period_of(boundaries: Sequence[datetime]) -> Any:
    """The index of the period a call started in; the CASE tests the ends in order, so the
    first end past the start is its period's (calls outside are filtered out beforehand)."""
    # The indexes are written into the SQL (ours, integers): no parameters to type, fewer to send.
    return case(*[(CallRow.started_at < end, literal_column(str(index))) for index, end in enumerate(boundaries[1:])])


def _in_range(boundaries: Sequence[datetime]) -> Any:
    return and_(CallRow.started_at >= boundaries[0], CallRow.started_at < boundaries[-1])


def _caller_identity() -> Any:
    """Who called: the number's salted hash on the phone, the user's name in a browser ("" is nobody)."""
    return case((CallRow.channel == WEB, func.nullif(CallRow.caller_masked, "")),
                else_=func.nullif(CallRow.caller_hash, ""))


def _check(boundaries: Sequence[datetime]) -> None:
    if len(boundaries) < 2:
        raise ValueError("at least one period (two boundaries) is needed")
    if any(later <= earlier for earlier, later in zip(boundaries, boundaries[1:])):
        raise ValueError("period boundaries must increase")


async def period_counts(session: AsyncSession, boundaries: Sequence[datetime]) -> list[PeriodCounts]:
    """One row per period and channel group that had calls (periods without calls have none)."""
    _check(boundaries)
    in_range = _in_range(boundaries)
    caller_turns = (
        select(TurnRow.call_id, func.count(TurnRow.id).label("turns"))
        .where(TurnRow.role == "caller", TurnRow.call_id.in_(select(CallRow.id).where(in_range)))
        .group_by(TurnRow.call_id)
        .subquery()
    )
    # One row per call first, then a GROUP BY on its columns: grouping on the CASE expressions
    # themselves would not do on PostgreSQL, which sees their parameters as different expressions.
    per_call = (
        select(
            _period_of(boundaries).label("period"),
            _channel_group().label("channel"),
            _caller_identity().label("identity"),
            case((CallRow.barge_ins > 0, 1), else_=0).label("interrupted"),
            case((CallRow.outcome == "error", 1), else_=0).label("error"),
            func.coalesce(caller_turns.c.turns, 0).label("caller_turns"),
            CallRow.cost_usd.label("cost_usd"),
        )
        .select_from(CallRow)
        .outerjoin(caller_turns, caller_turns.c.call_id == CallRow.id)
        .where(in_range)
        .subquery()
    )
    rows = await session.execute(
        select(
            per_call.c.period, per_call.c.channel, func.count(),
            func.sum(per_call.c.interrupted), func.sum(per_call.c.error), func.sum(per_call.c.caller_turns),
            func.count(per_call.c.cost_usd), func.sum(per_call.c.cost_usd),
            func.count(distinct(per_call.c.identity)),
        )
        .group_by(per_call.c.period, per_call.c.channel)
        .order_by(per_call.c.period, per_call.c.channel)
    )
    return [
        PeriodCounts(period=int(period), channel=channel, calls=int(calls), interrupted_calls=int(interrupted or 0),
                     error_calls=int(errors or 0), caller_turns=int(turns or 0), priced_calls=int(priced),
                     cost_usd=float(cost or 0.0), users=int(users))
        for period, channel, calls, interrupted, errors, turns, priced, cost, users in rows
    ]


async def answer_latencies(session: AsyncSession,
                           boundaries: Sequence[datetime]) -> dict[tuple[int, str], LatencyFigures]:
    """Per period and channel group, and per period for both groups (ALL), the answers' count
    and latency percentiles. An answer's latency is the caller's end of speech to the model's
    first audio, plus from there to the first frame sent to the caller when known.

    The percentile at p % is the value at rank ceil(n × p / 100) of the sorted latencies
    (kpi_figures.nearest_rank): the smallest value whose rank r has r × 100 >= n × p, in
    integers, so the figures are those of sorting the values in Python."""
    _check(boundaries)
    latency = TurnRow.speech_end_to_model_audio_ms + func.coalesce(TurnRow.model_audio_to_caller_ms, 0.0)
    answers = (
        select(_period_of(boundaries).label("period"), _channel_group().label("channel"), latency.label("ms"))
        .select_from(TurnRow)
        .join(CallRow, CallRow.id == TurnRow.call_id)
        .where(_in_range(boundaries), TurnRow.role == "assistant",
               TurnRow.speech_end_to_model_audio_ms.is_not(None))
        .subquery("answers")
    )
    # Each answer's rank among its channel group's in its period, and among the whole period's.
    group, period = (answers.c.period, answers.c.channel), (answers.c.period,)
    ranked = select(
        *group, answers.c.ms,
        func.row_number().over(partition_by=group, order_by=answers.c.ms).label("position"),
        func.count().over(partition_by=group).label("answers"),
        func.row_number().over(partition_by=period, order_by=answers.c.ms).label("position_all"),
        func.count().over(partition_by=period).label("answers_all"),
    ).subquery("ranked")

    def at_rank(percent: int, position: Any, count: Any) -> Any:
        return func.min(case((position * 100 >= count * percent, ranked.c.ms)))

    rows = await session.execute(
        select(
            ranked.c.period, ranked.c.channel, func.count(),
            at_rank(50, ranked.c.position, ranked.c.answers), at_rank(95, ranked.c.position, ranked.c.answers),
            # Both groups' percentile is the smaller of what each group holds at or past its rank.
            at_rank(50, ranked.c.position_all, ranked.c.answers_all),
            at_rank(95, ranked.c.position_all, ranked.c.answers_all),
        )
        .group_by(ranked.c.period, ranked.c.channel)
    )
    found: dict[tuple[int, str], LatencyFigures] = {}
    for period_index, channel, count, p50, p95, p50_all, p95_all in rows:
        key = int(period_index)
        found[(key, channel)] = LatencyFigures(int(count), _ms(p50), _ms(p95))
        both = found.get((key, ALL), NO_ANSWERS)
        found[(key, ALL)] = LatencyFigures(both.answers + int(count), _least(both.p50_ms, _ms(p50_all)),
                                           _least(both.p95_ms, _ms(p95_all)))
    return found


def _ms(value: Any) -> float | None:
    return None if value is None else float(value)


def _least(first: float | None, second: float | None) -> float | None:
    return second if first is None else first if second is None else min(first, second)
