"""`octi calls …` on inputs past the calendar or the ids, and `purge` run from another working
directory than the service's: through the real command group, on SQLite under a temporary
DATA_DIR."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.audio.formats import TELEPHONE_ULAW
from app.calllog.journals import CallJournals
from app.calllog.records import CallEnded, CallRecord, CallStarted
from app.channels.contract import CallIdentity
from app.config import Settings
from tests.cli_runner import run_octi
from tests.test_calllog_cli import calls_env, seed  # noqa: F401  (calls_env: a fixture)
from tests.test_calllog_store import ended, started

OLD = datetime.now(UTC).replace(microsecond=0) - timedelta(days=40)


@pytest.fixture
def service_dir(calls_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The service's working directory (calls_env's), whose DATA_DIR is the default relative
    "data"; the commands run from another directory, with DATA_DIR set to that one, absolute."""
    (calls_env / "data").mkdir()
    elsewhere = calls_env / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return calls_env


# ---------------------------------------------------------------- usage errors, not tracebacks

@pytest.mark.parametrize("arguments, option, says", [
    (("list", "--since", "9999999d"), "'--since'", "out of range"),
    (("list", "--since", "10000000000000d"), "'--since'", "out of range"),
    (("list", "--until", "9999-12-31"), "'--until'", "years 2000 to 2999"),
    (("export", "--format", "csv", "--since", "0001-01-01"), "'--since'", "years 2000 to 2999"),
    (("purge", "--older-than", "99999999d"), "'--older-than'", "too long ago"),
    (("purge", "--older-than", "99999999999d"), "'--older-than'", "too long ago"),
    (("show", "²"), "'ID'", "expected a call number (digits 0-9) or a CallSid"),
])
def test_values_past_the_calendar_or_not_numbers_are_usage_errors(service_dir: Path, arguments: tuple[str, ...],
                                                                  option: str, says: str) -> None:
    result = run_octi("calls", *arguments)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for {option}" in result.stderr and says in result.stderr
    assert "Traceback" not in result.output


def test_a_number_past_the_ids_is_no_call(service_dir: Path) -> None:
    seed([started("CA1", OLD), ended("CA1", OLD)])
    for key in (str(2**31), "9" * 40):
        result = run_octi("calls", "show", key)
        assert result.exit_code == 1 and result.stderr == f"octi calls show: no call {key}\n"
    assert run_octi("calls", "show", "1").exit_code == 0
    assert run_octi("calls", "list", "--since", "2000-01-01", "--until", "2999-12-31").exit_code == 0


# ---------------------------------------------------------------- recordings from another directory

async def journaled_call(data_dir: Path) -> list[CallRecord]:
    """A recorded call as the service journals it with DATA_DIR="data", 40 days ago."""
    records: list[CallRecord] = []
    settings = Settings(_env_file=None, data_dir=data_dir, record_calls=True)
    journal = CallJournals(settings, records.append).open(
        CallIdentity("CAREC", caller="+33612345678"), stream_sid="MZREC", audio_format=TELEPHONE_ULAW)
    journal.recorder.caller_audio(b"\xff" * 1600)
    await journal.ended("caller_hung_up", [], turns=0, barge_ins=0)
    return [dataclasses.replace(r, started_at=OLD) if isinstance(r, CallStarted) else r for r in records]


def test_a_recording_is_stored_absolute_and_purged_from_anywhere(service_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(service_dir)                  # the service runs here, DATA_DIR relative
    records = asyncio.run(journaled_call(Path("data")))
    monkeypatch.chdir(service_dir / "elsewhere")
    stored = next(r.recording_path for r in records if isinstance(r, CallEnded))
    wav = service_dir / "data" / "recordings" / "CAREC.wav"
    assert stored == str(wav) and wav.is_file()
    seed(records)

    result = run_octi("calls", "purge", "--older-than", "30d")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("deleted 1 call(s)") and result.stdout.endswith("and 1 recording file(s)\n")
    assert not wav.exists()


def test_a_recording_stored_relative_is_found_under_data_dir(service_dir: Path) -> None:
    """Rows written before paths were absolute hold "data/recordings/…", relative to the
    service's working directory, not the command's."""
    wav = service_dir / "data" / "recordings" / "CAREL.wav"
    wav.parent.mkdir(parents=True)
    wav.write_bytes(b"RIFF")
    kept = service_dir / "data" / "recordings" / "CANEW.wav"
    kept.write_bytes(b"RIFF")
    now = datetime.now(UTC).replace(microsecond=0)
    seed([started("CAREL", OLD, recorded=True), ended("CAREL", OLD, recording_path="data/recordings/CAREL.wav"),
          started("CANEW", now, recorded=True), ended("CANEW", now, recording_path="data/recordings/CANEW.wav")])

    result = run_octi("calls", "purge", "--older-than", "30d")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("deleted 1 call(s)") and result.stdout.endswith("and 1 recording file(s)\n")
    assert not wav.exists() and kept.exists()       # the recent call's file stays, as its row does
