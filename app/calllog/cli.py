"""`octi calls …`: read and tidy the call log from a terminal.

    octi calls list [--limit N] [--page P] [--search TEXT] [--outcome O] [--since DATE] [--until DATE] [--json]
    octi calls show ID|CALL_SID [--json]
    octi calls export --format csv|json [--output FILE] [--details] [filters as for list]
    octi calls purge --older-than 30d|12h

The database is the configured one (DATABASE_URL, else SQLite under DATA_DIR); migrations
run first. DATE is YYYY-MM-DD (UTC) or a number of days back ("7d"), in the years 2000 to
2999; --since/--until are inclusive. Search covers the transcripts of both sides, ignoring
case and accents; every word must appear. Exit codes: 0 success, 1 call not found, 2 usage
error or database unavailable. Each command runs its own event loop: invoke it from
synchronous code only.

A cost that MODEL_PRICES could not price is unknown, never $0: "unknown" in the tables,
null in JSON, an empty cell in CSV.

The module is one unit because its commands share the filters, the argument checks, the way
to open the call log and the output formats (tables, JSON, CSV), which are most of it.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import click
from sqlalchemy.exc import SQLAlchemyError

from app.calllog.migrate import upgrade_database
from app.calllog.records import to_dict
from app.calllog.store import CallLogStore
from app.calllog.store_queries import FIRST_DAY, LAST_DAY, call_number
from app.calllog.views import CallDetail, CallQuery, CallSummary
from app.cli_support import OrderedGroup, ParsedBy, run_coroutine
from app.config import get_settings

CSV_COLUMNS = ("id", "call_sid", "started_at", "caller", "duration_s", "turns", "barge_ins", "outcome",
               "cost_usd", "flags")
EXPORT_PAGE = 500
_DURATION = re.compile(r"^\s*(\d+)\s*([dh])\s*$", re.IGNORECASE)


def parse_age(value: str) -> timedelta:
    """ "30d" → 30 days, "12h" → 12 hours; one reaching back before year 1 is refused (purge
    subtracts it from now)."""
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"expected a number of days or hours, like 30d or 12h: {value!r}")
    amount, unit = int(match.group(1)), match.group(2).lower()
    try:
        age = timedelta(days=amount) if unit == "d" else timedelta(hours=amount)
    except OverflowError:
        age = timedelta.max
    if age > datetime.now(UTC) - datetime.min.replace(tzinfo=UTC):   # purge's cutoff, now - age, is a date
        raise ValueError(f"too long ago, before the calendar's start: {value!r}")
    return age


def parse_day(value: str, *, today: date | None = None) -> date:
    """ "2025-11-20", or "7d" for seven days before today (UTC); within FIRST_DAY..LAST_DAY."""
    match = _DURATION.match(value)
    if match and match.group(2).lower() == "d":
        try:
            day = (today or datetime.now(UTC).date()) - timedelta(days=int(match.group(1)))
        except OverflowError:
            day = date.min
    else:
        try:
            day = date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"expected a date YYYY-MM-DD or a number of days like 7d: {value!r}") from None
    if not FIRST_DAY <= day <= LAST_DAY:   # far dates overflow the search's date arithmetic
        raise ValueError(f"out of range: the call log's dates are years {FIRST_DAY.year} to {LAST_DAY.year}: "
                         f"{value!r}")
    return day


def parse_call_key(value: str) -> str:
    """A call's number or CallSid, both ASCII: "²" is a digit to str.isdigit, not to int."""
    key = value.strip()
    if not key.isascii():
        raise ValueError(f"expected a call number (digits 0-9) or a CallSid: {value!r}")
    return key


def _query(search: str | None, outcome: str | None, since: date | None, until: date | None, *,
           page: int = 1, per_page: int = 25) -> CallQuery:
    if since and until and since > until:
        raise click.UsageError(f"--since {since} is after --until {until}")
    return CallQuery(text=search or None, outcome=outcome or None, date_from=since, date_to=until,
                     page=page, per_page=per_page)


# ---------------------------------------------------------------------------- formatting


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    minutes, seconds = divmod(int(round(value)), 60)
    return f"{minutes}:{seconds:02d}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _offset(value: float | None) -> str:
    return "  --.-s" if value is None else f"{value / 1000:7.1f}s"


def _usd(value: float | None, digits: int = 4, *, dollar: bool = False) -> str:
    """A cost for the tables: "unknown" when it could not be priced."""
    if value is None:
        return "unknown"
    return f"{'$' if dollar else ''}{value:.{digits}f}"


def _round_usd(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def summary_dict(summary: CallSummary) -> dict[str, Any]:
    return {
        "id": summary.id, "call_sid": summary.call_sid, "started_at": summary.started_at.isoformat(),
        "caller": summary.caller_masked, "duration_s": summary.duration_s, "turns": summary.turns,
        "barge_ins": summary.barge_ins, "outcome": summary.outcome, "cost_usd": _round_usd(summary.cost_usd),
        "flags": list(summary.flags), "recorded": summary.recorded,
    }


def detail_dict(detail: CallDetail) -> dict[str, Any]:
    data = summary_dict(detail.summary)
    data.update({
        "stream_sid": detail.stream_sid, "channel": detail.channel, "called": detail.called,
        "caller_hash": detail.caller_hash, "codec": detail.codec, "model": detail.model,
        "rag_mode": detail.rag_mode,
        "answered_at": detail.answered_at.isoformat() if detail.answered_at else None,
        "ended_at": detail.ended_at.isoformat() if detail.ended_at else None,
        "tokens": {"input": detail.input_tokens, "output": detail.output_tokens,
                   "input_audio": detail.input_audio_tokens, "output_audio": detail.output_audio_tokens,
                   "cached": detail.cached_tokens},
        "transcription": {"model": detail.transcription_model, "seconds": detail.transcription_seconds,
                          "input_tokens": detail.transcription_input_tokens,
                          "input_audio_tokens": detail.transcription_input_audio_tokens,
                          "output_tokens": detail.transcription_output_tokens,
                          "cost_usd": _round_usd(detail.transcription_cost_usd)},
        "turns": [_without(to_dict(turn), "call_sid", "kind") for turn in detail.turns],
        "events": [_without(to_dict(event), "call_sid", "kind") for event in detail.events],
    })
    return data


def _without(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        data.pop(key, None)
    return data


def format_list(summaries: list[CallSummary], total: int, page: int, per_page: int) -> str:
    if not summaries:
        return "no call found\n" if total == 0 else f"no call on page {page} ({total} in all)\n"
    header = ("ID", "STARTED (UTC)", "CALLER", "DURATION", "TURNS", "BARGE", "OUTCOME", "COST $", "FLAGS")
    rows = [(str(s.id), _when(s.started_at), s.caller_masked or "?", _seconds(s.duration_s), str(s.turns),
             str(s.barge_ins), s.outcome or "(ongoing)", _usd(s.cost_usd), ",".join(s.flags))
            for s in summaries]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {0, 3, 4, 5, 7}
    lines = ["  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                       for i, cell in enumerate(row)).rstrip() for row in [header, *rows]]
    first = (page - 1) * per_page + 1
    lines.append(f"calls {first}-{first + len(summaries) - 1} of {total}")
    return "\n".join(lines) + "\n"


def format_detail(detail: CallDetail) -> str:
    s = detail.summary
    lines = [
        f"call {s.id}  {s.call_sid}",
        f"  started   {_when(s.started_at)} UTC   answered {_when(detail.answered_at)}   ended {_when(detail.ended_at)}",
        f"  duration  {_seconds(s.duration_s)}   outcome {s.outcome or '(ongoing)'}   "
        f"turns {s.turns}   barge-ins {s.barge_ins}",
        f"  caller    {s.caller_masked or '?'} (hash {detail.caller_hash[:12] or '-'})   called {detail.called or '-'}"
        f"   channel {detail.channel or '-'}   stream {detail.stream_sid or '-'}",
        f"  model     {detail.model or '-'}   codec {detail.codec or '-'}   rag {detail.rag_mode or '-'}",
        f"  tokens    in {detail.input_tokens} (audio {detail.input_audio_tokens}, cached {detail.cached_tokens})"
        f"   out {detail.output_tokens} (audio {detail.output_audio_tokens})   cost {_usd(s.cost_usd, dollar=True)}",
        *([_transcription_line(detail)] if detail.transcribed else []),
        f"  flags     {', '.join(s.flags) or '-'}   recorded {'yes' if s.recorded else 'no'}",
        "",
        "conversation:" if detail.turns else "conversation: (no turn)",
    ]
    for turn in detail.turns:
        who = "CALLER" if turn.role == "caller" else "OCTI  "
        lines.append(textwrap.fill(turn.text or "(nothing heard)", width=100,
                                   initial_indent=f"  [{_offset(turn.start_ms)}] {who} ",
                                   subsequent_indent=" " * 20))
        notes = []
        if turn.role == "caller" and (turn.retrieval_outcome or turn.retrieval_ms is not None):
            notes.append(f"retrieval {turn.retrieval_outcome or '?'} in {_ms(turn.retrieval_ms)}")
        if turn.speech_end_to_model_audio_ms is not None:
            notes.append(f"speech end -> model audio {_ms(turn.speech_end_to_model_audio_ms)}")
        if turn.model_audio_to_caller_ms is not None:
            notes.append(f"model audio -> caller {_ms(turn.model_audio_to_caller_ms)}")
        if turn.interrupted:
            notes.append(f"interrupted, heard {_ms(turn.heard_ms)}")
        if notes:
            lines.append(" " * 20 + "(" + "; ".join(notes) + ")")
        for rank, passage in enumerate(turn.passages, start=1):
            lines.append(" " * 20 + f"{rank}. [{passage.score:.3f}] {passage.title}  ({passage.source} #{passage.id})")
    lines.append("")
    lines.append("events:" if detail.events else "events: (none)")
    for event in detail.events:
        lines.append(f"  {_when(event.at)}  {event.type}" + (f"  {event.detail}" if event.detail else ""))
    return "\n".join(lines) + "\n"


def _transcription_line(detail: CallDetail) -> str:
    used = [f"{detail.transcription_seconds:.1f} s"] if detail.transcription_seconds else []
    if detail.transcription_input_tokens or detail.transcription_output_tokens:
        used.append(f"tokens in {detail.transcription_input_tokens} (audio {detail.transcription_input_audio_tokens})"
                    f" out {detail.transcription_output_tokens}")
    return (f"  transcription {detail.transcription_model or '-'}   {'   '.join(used) or 'nothing billed'}"
            f"   cost {_usd(detail.transcription_cost_usd, dollar=True)} (included in the call's cost)")


def csv_text(summaries: Sequence[CallSummary], *, header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    for s in summaries:
        writer.writerow([s.id, s.call_sid, s.started_at.isoformat(), s.caller_masked,
                         "" if s.duration_s is None else f"{s.duration_s:.1f}", s.turns, s.barge_ins,
                         s.outcome or "", "" if s.cost_usd is None else f"{s.cost_usd:.6f}", ";".join(s.flags)])
    return buffer.getvalue()


# ---------------------------------------------------------------------------- commands


@click.group(name="calls", cls=OrderedGroup)
def cli() -> None:
    """Read and tidy OCTI's call log."""


def _filter_options(command: Callable[..., None]) -> Callable[..., None]:
    """--search, --outcome, --since and --until, shared by list and export."""
    day = ParsedBy(parse_day, "date")
    options = [
        click.option("--search", metavar="TEXT", help="words in the transcripts (case and accents ignored)"),
        click.option("--outcome", metavar="OUTCOME", help="caller_hung_up, agent_ended, transferred, error, timeout"),
        click.option("--since", type=day, metavar="DATE", help="started on or after (YYYY-MM-DD or 7d)"),
        click.option("--until", type=day, metavar="DATE", help="started on or before (YYYY-MM-DD)"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command(name="list")
@click.option("--limit", type=click.IntRange(min=1), default=25, help="calls per page (default 25)")
@click.option("--page", type=click.IntRange(min=1), default=1, help="page number (default 1)")
@_filter_options
@click.option("--json", "as_json", is_flag=True, help="print a JSON object")
def list_calls(limit: int, page: int, search: str | None, outcome: str | None, since: date | None,
               until: date | None, as_json: bool) -> None:
    """the latest calls, newest first"""
    query = _query(search, outcome, since, until, page=page, per_page=limit)
    _run(lambda store: _list(store, query, as_json))


@cli.command()
@click.argument("call", metavar="ID", type=ParsedBy(parse_call_key, "call"))
@click.option("--json", "as_json", is_flag=True, help="print a JSON object")
def show(call: str, as_json: bool) -> None:
    """one call: header, conversation, events

    ID: the call's number in the list, or its CallSid
    """
    _run(lambda store: _show(store, call, as_json))


@cli.command()
@click.option("--format", "export_format", type=click.Choice(["csv", "json"]), required=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="write to FILE instead of standard output")
@click.option("--details", is_flag=True, help="JSON only: include turns, passages and events")
@_filter_options
def export(export_format: str, output: Path | None, details: bool, search: str | None, outcome: str | None,
           since: date | None, until: date | None) -> None:
    """every matching call, as CSV or JSON"""
    if details and export_format != "json":
        raise click.UsageError("--details goes with --format json")
    query = _query(search, outcome, since, until, per_page=EXPORT_PAGE)
    _run(lambda store: _export(store, query, export_format, output, details))


@cli.command()
@click.option("--older-than", type=ParsedBy(parse_age, "age"), required=True, metavar="AGE",
              help="age of the calls to delete: Nd (days) or Nh (hours), e.g. 30d")
def purge(older_than: timedelta) -> None:
    """delete calls (and their recordings) past retention"""
    _run(lambda store: _purge(store, older_than))


async def _list(store: CallLogStore, query: CallQuery, as_json: bool) -> int:
    summaries, total = await store.list_calls(query)
    if as_json:
        click.echo(json.dumps({"total": total, "page": query.page, "per_page": query.per_page,
                               "calls": [summary_dict(s) for s in summaries]}, ensure_ascii=False, indent=2))
    else:
        click.echo(format_list(summaries, total, query.page, query.per_page), nl=False)
    return 0


async def _show(store: CallLogStore, call: str, as_json: bool) -> int:
    key = call.strip()
    call_id = call_number(key) if key.isdigit() else await store.find_call_id(key)
    detail = await store.get_call(call_id) if call_id is not None else None
    if detail is None:
        click.echo(f"octi calls show: no call {key}", err=True)
        return 1
    if as_json:
        click.echo(json.dumps(detail_dict(detail), ensure_ascii=False, indent=2))
    else:
        click.echo(format_detail(detail), nl=False)
    return 0


async def _export(store: CallLogStore, query: CallQuery, export_format: str, output: Path | None,
                  details: bool) -> int:
    chunks: list[str] = []
    items: list[dict[str, Any]] = []
    count = 0
    while True:
        summaries, total = await store.list_calls(query)
        if export_format == "csv":
            chunks.append(csv_text(summaries, header=query.page == 1))
        else:
            for summary in summaries:
                detail = await store.get_call(summary.id) if details else None
                items.append(detail_dict(detail) if detail else summary_dict(summary))
        count += len(summaries)
        if len(summaries) < query.per_page or count >= total:
            break
        query = replace(query, page=query.page + 1)
    text = "".join(chunks) if export_format == "csv" else json.dumps(items, ensure_ascii=False, indent=2) + "\n"
    if output:
        await asyncio.to_thread(_write_file, output, text)
        click.echo(f"{count} call(s) exported to {output}", err=True)
    else:
        click.echo(text, nl=False)
    return 0


def _write_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")


async def _purge(store: CallLogStore, age: timedelta) -> int:
    now = datetime.now(UTC)
    calls, recordings = await store.purge(age, now=now, recordings_dir=get_settings().data_dir / "recordings")
    cutoff = now - age
    click.echo(f"deleted {calls} call(s) started before {_when(cutoff)} UTC "
               f"(with their turns, passages and events) and {recordings} recording file(s)")
    return 0


def _run(action: Callable[[CallLogStore], Awaitable[int]]) -> NoReturn:
    """Run `action` on the configured call log and exit with its code."""
    sys.exit(run_coroutine(_on_call_log(action)))


async def _on_call_log(action: Callable[[CallLogStore], Awaitable[int]]) -> int:
    settings = get_settings()
    url = settings.effective_database_url
    try:
        await upgrade_database(url)
    except Exception as exc:  # unreachable server, unwritable DATA_DIR, a newer schema, …
        click.echo(f"octi calls: cannot prepare the call log database: {_reason(exc)}", err=True)
        return 2
    store = await CallLogStore.open(url, prices=settings.model_prices)
    try:
        return await action(store)
    except (SQLAlchemyError, OSError) as exc:
        click.echo(f"octi calls: call log database unavailable: {_reason(exc)}", err=True)
        return 2
    finally:
        await store.close()


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


__all__ = ["cli", "parse_age", "parse_day", "format_list", "format_detail", "csv_text", "summary_dict",
           "detail_dict"]
