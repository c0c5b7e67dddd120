"""`octi calls …` against the configured database: SQLite under a temporary DATA_DIR."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from app.calllog.cli import CSV_COLUMNS, parse_age, parse_day
from app.calllog.migrate import upgrade_database
from app.calllog.records import CallEvent, CallRecord, PassageUsed
from app.calllog.store import CallLogStore
from app.config import get_settings
from tests.cli_runner import run_octi
from tests.test_calllog_store import caller, ended, octi, started

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def calls_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Settings read afresh, DATA_DIR in tmp_path, the default (SQLite) database, no stray .env."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def seed(records: list[CallRecord]) -> None:
    async def run() -> None:
        url = get_settings().effective_database_url
        await upgrade_database(url)
        store = await CallLogStore.open(url)
        try:
            await store.apply(records)
        finally:
            await store.close()
    asyncio.run(run())


@pytest.fixture
def three_calls(calls_env: Path) -> Path:
    """An old recorded call, yesterday's call with an error, and one going on now."""
    wav = calls_env / "data" / "recordings" / "CAOLD.wav"
    wav.parent.mkdir(parents=True)
    wav.write_bytes(b"RIFF")
    old, yesterday = NOW - timedelta(days=40), NOW - timedelta(days=1)
    seed([
        started("CAOLD", old, caller_masked="+336••••••11", recorded=True),
        caller("CAOLD", 0, "Mes poussins s'entassent sous la lampe", retrieval_ms=35.0, retrieval_outcome="ok",
               passages=(PassageUsed("pous-1", "sample_pack/poussins.md", "Démarrage des poussins", 0.873),)),
        octi("CAOLD", 1, "Ils ont froid : augmentez le chauffage.", speech_end_to_model_audio_ms=512.0,
             model_audio_to_caller_ms=31.0, interrupted=True, heard_ms=1800.0),
        CallEvent("CAOLD", old + timedelta(seconds=12), "dtmf", "3"),
        ended("CAOLD", old, seconds=75.0, barge_ins=1, cost_usd=0.0123, recording_path=str(wav)),

        started("CAYDAY", yesterday, caller_masked="+336••••••22"),
        caller("CAYDAY", 0, "La litière est collée sous les abreuvoirs", retrieval_outcome="empty"),
        CallEvent("CAYDAY", yesterday + timedelta(seconds=3), "upstream_failure", "realtime closed (1011)"),
        ended("CAYDAY", yesterday, outcome="error", seconds=20.0),

        started("CANOW", NOW, caller_masked="+336••••••33"),
        caller("CANOW", 0, "Bonjour, une question sur les œufs"),
    ])
    return wav


def test_parsing_ages_and_days() -> None:
    assert parse_age("30d") == timedelta(days=30) and parse_age("12h") == timedelta(hours=12)
    assert parse_day("2025-11-20") == date(2025, 11, 20)
    assert parse_day("7d", today=date(2025, 11, 20)) == date(2025, 11, 13)


def test_list_newest_first_with_filters(three_calls: Path) -> None:
    result = run_octi("calls", "list")
    assert result.exit_code == 0
    out = result.stdout
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "STARTED", "(UTC)"]
    assert [line.split()[0] for line in lines[1:4]] == ["3", "2", "1"]
    assert "(ongoing)" in lines[1] and "error" in lines[2] and "no_knowledge,error" in lines[2]
    assert "1:15" in lines[3] and "interrupted" in lines[3] and "+336••••••11" in lines[3]
    assert lines[-1] == "calls 1-3 of 3"

    result = run_octi("calls", "list", "--limit", "1", "--page", "2")
    assert result.exit_code == 0
    out = result.stdout
    assert out.splitlines()[1].split()[0] == "2" and out.splitlines()[-1] == "calls 2-2 of 3"

    result = run_octi("calls", "list", "--search", "LITIERE")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "calls 1-1 of 1"
    result = run_octi("calls", "list", "--outcome", "caller_hung_up", "--json")
    assert result.exit_code == 0
    listing = json.loads(result.stdout)
    assert listing["total"] == 1 and listing["calls"][0]["call_sid"] == "CAOLD"
    assert listing["calls"][0]["flags"] == ["interrupted"] and listing["calls"][0]["recorded"] is True
    result = run_octi("calls", "list", "--since", "2d")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "calls 1-2 of 2"
    result = run_octi("calls", "list", "--until", (NOW - timedelta(days=30)).date().isoformat())
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "calls 1-1 of 1"
    result = run_octi("calls", "list", "--search", "tracteur")
    assert result.exit_code == 0
    assert result.stdout == "no call found\n"


def test_show_prints_the_conversation(three_calls: Path) -> None:
    result = run_octi("calls", "show", "1")
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("call 1  CAOLD\n")
    assert "outcome caller_hung_up" in out and "cost $0.0123" in out and "recorded yes" in out
    caller_line = next(line for line in out.splitlines() if "CALLER" in line)
    assert "[    0.0s] CALLER Mes poussins s'entassent sous la lampe" in caller_line
    assert "retrieval ok in 35 ms" in out
    assert "1. [0.873] Démarrage des poussins  (sample_pack/poussins.md #pous-1)" in out
    assert "[    4.0s] OCTI   Ils ont froid : augmentez le chauffage." in out
    assert "speech end -> model audio 512 ms; model audio -> caller 31 ms; interrupted, heard 1800 ms" in out
    assert out.index("CALLER") < out.index("OCTI   Ils") < out.index("events:")
    assert "  dtmf  3" in out

    result = run_octi("calls", "show", "CAYDAY")                # by CallSid too
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("call 2  CAYDAY") and "upstream_failure  realtime closed (1011)" in out
    assert "flags     no_knowledge, error" in out

    result = run_octi("calls", "show", "3", "--json")
    assert result.exit_code == 0
    detail = json.loads(result.stdout)
    assert detail["call_sid"] == "CANOW" and detail["outcome"] is None
    assert detail["turns"][0]["text"] == "Bonjour, une question sur les œufs"

    result = run_octi("calls", "show", "42")
    assert result.exit_code == 1
    assert "no call 42" in result.stderr


def test_export_csv_and_json(three_calls: Path, calls_env: Path) -> None:
    result = run_octi("calls", "export", "--format", "csv")
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert [row["call_sid"] for row in rows] == ["CANOW", "CAYDAY", "CAOLD"]
    assert rows[1] == {"id": "2", "call_sid": "CAYDAY", "started_at": (NOW - timedelta(days=1)).isoformat(),
                       "caller": "+336••••••22", "duration_s": "20.0", "turns": "2", "barge_ins": "0",
                       "outcome": "error", "cost_usd": "0.010000", "flags": "no_knowledge;error"}
    assert rows[0]["duration_s"] == "" and rows[0]["outcome"] == ""

    target = calls_env / "out" / "calls.json"
    result = run_octi("calls", "export", "--format", "json", "--details", "--output", str(target), "--outcome", "error")
    assert result.exit_code == 0
    assert "1 call(s) exported to" in result.stderr
    [call] = json.loads(target.read_text(encoding="utf-8"))
    assert call["call_sid"] == "CAYDAY" and call["events"][0]["type"] == "upstream_failure"
    assert call["turns"][0]["retrieval_outcome"] == "empty"

    result = run_octi("calls", "export", "--format", "csv", "--details")
    assert result.exit_code == 2
    assert "--details goes with --format json" in result.stderr


def test_purge_deletes_old_calls_and_their_recordings(three_calls: Path) -> None:
    result = run_octi("calls", "purge", "--older-than", "30d")
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("deleted 1 call(s) started before ") and out.endswith("and 1 recording file(s)\n")
    assert not three_calls.exists()
    result = run_octi("calls", "list", "--json")
    assert result.exit_code == 0
    assert [c["call_sid"] for c in json.loads(result.stdout)["calls"]] == ["CANOW", "CAYDAY"]

    result = run_octi("calls", "purge", "--older-than", "12h")
    assert result.exit_code == 0
    assert result.stdout.startswith("deleted 1 call(s)")

    result = run_octi("calls", "purge", "--older-than", "30")
    assert result.exit_code == 2
    assert "like 30d or 12h" in result.stderr


def test_a_fresh_data_dir_gets_its_database(calls_env: Path) -> None:
    assert not (calls_env / "data").exists()
    result = run_octi("calls", "list")
    assert result.exit_code == 0
    assert result.stdout == "no call found\n"
    assert (calls_env / "data" / "calls.sqlite3").exists()


def test_an_unreachable_database_is_reported(calls_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:9/octi")
    get_settings.cache_clear()
    result = run_octi("calls", "list")
    assert result.exit_code == 2
    err = result.stderr
    assert err.startswith("octi calls: cannot prepare the call log database:") and "9" in err


def test_usage_errors(calls_env: Path) -> None:
    assert run_octi("calls").exit_code == 2
    assert run_octi("calls", "list", "--since", "yesterday").exit_code == 2
    result = run_octi("calls", "list", "--since", "2025-11-20", "--until", "2025-11-01")
    assert result.exit_code == 2
    assert "is after --until" in result.stderr
    assert run_octi("calls", "--help").exit_code == 0


def test_an_unknown_cost_shows_as_unknown_never_zero(calls_env: Path) -> None:
    yesterday = NOW - timedelta(days=1)
    seed([
        started("CAPRICED", yesterday, transcription_model="gpt-realtime-whisper"),
        ended("CAPRICED", yesterday, cost_usd=0.0421, transcription_seconds=75.0, transcription_cost_usd=0.02125),
        started("CAAZURE", NOW, model="my-azure-deployment", transcription_model="gpt-realtime-whisper"),
        ended("CAAZURE", NOW, cost_usd=None, input_tokens=900, output_tokens=400, transcription_seconds=12.0,
              transcription_cost_usd=0.0034),
    ])
    result = run_octi("calls", "list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[1].split()[0] == "2" and "unknown" in lines[1]
    assert lines[2].split()[0] == "1" and "0.0421" in lines[2] and "unknown" not in lines[2]

    result = run_octi("calls", "show", "CAAZURE")
    assert result.exit_code == 0
    out = result.stdout
    assert "cost unknown" in out and "$0.0000" not in out
    assert "transcription gpt-realtime-whisper   12.0 s   cost $0.0034" in out
    result = run_octi("calls", "show", "CAPRICED")
    assert result.exit_code == 0
    out = result.stdout
    assert "cost $0.0421" in out and "75.0 s   cost $0.0213" in out

    result = run_octi("calls", "list", "--json")
    assert result.exit_code == 0
    costs = {c["call_sid"]: c["cost_usd"] for c in json.loads(result.stdout)["calls"]}
    assert costs == {"CAAZURE": None, "CAPRICED": 0.0421}
    result = run_octi("calls", "show", "CAAZURE", "--json")
    assert result.exit_code == 0
    detail = json.loads(result.stdout)
    assert detail["cost_usd"] is None
    assert detail["transcription"] == {"model": "gpt-realtime-whisper", "seconds": 12.0, "input_tokens": 0,
                                       "input_audio_tokens": 0, "output_tokens": 0, "cost_usd": 0.0034}

    result = run_octi("calls", "export", "--format", "csv")
    assert result.exit_code == 0
    rows = {row["call_sid"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    assert rows["CAAZURE"]["cost_usd"] == "" and rows["CAPRICED"]["cost_usd"] == "0.042100"
