"""Announced model shutdowns, read from the installed openai package, in settings, logs and /health."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.model_catalog import (ModelField, configured_models, deprecations_in, installed_catalog,
                               model_notices, read_catalog)
from tests.harness import running_line

BEFORE_SHUTDOWNS = date(2026, 12, 1)
AFTER_SHUTDOWNS = date(2027, 3, 1)


def defaults() -> tuple[str, str]:
    fields = Settings.model_fields
    return fields["openai_realtime_model"].default, fields["openai_transcribe_model"].default


def test_the_installed_package_announces_the_shutdowns_of_the_previous_models() -> None:
    catalog = read_catalog()
    assert catalog.available and not catalog.errors
    realtime, transcription = catalog.fields["realtime"], catalog.fields["transcription"]
    assert realtime.deprecated["gpt-realtime"].shutdown == date(2027, 1, 20)
    assert realtime.deprecated["gpt-realtime-mini"].shutdown == date(2027, 1, 20)
    assert transcription.deprecated["gpt-4o-mini-transcribe"].shutdown == date(2027, 2, 26)
    assert transcription.deprecated["whisper-1"].shutdown == date(2027, 2, 26)
    realtime_default, transcription_default = defaults()
    assert realtime_default in realtime.known and realtime_default not in realtime.deprecated
    assert transcription_default in transcription.known and transcription_default not in transcription.deprecated
    # The GPT-Live session field is read too (its models, no shutdown announced in this package).
    assert "gpt-live-1" in catalog.fields["live"].known


def test_a_deprecated_model_gets_a_notice_naming_the_variable_the_date_and_the_default() -> None:
    settings = Settings(_env_file=None, openai_realtime_model="gpt-realtime",
                        openai_transcribe_model="gpt-4o-mini-transcribe")
    notices = model_notices(settings, today=BEFORE_SHUTDOWNS)
    assert [notice.text for notice in notices] == [
        "OPENAI_REALTIME_MODEL=gpt-realtime: the service shuts this model down on 2027-01-20. "
        "Fix: set OPENAI_REALTIME_MODEL=gpt-realtime-2.1",
        "OPENAI_TRANSCRIBE_MODEL=gpt-4o-mini-transcribe: the service shuts this model down on 2027-02-26. "
        "Fix: set OPENAI_TRANSCRIBE_MODEL=gpt-realtime-whisper",
    ]
    assert not any(notice.shut_down for notice in notices)


def test_a_model_past_its_shutdown_date_is_said_to_be_shut_down() -> None:
    settings = Settings(_env_file=None, openai_realtime_model="gpt-realtime")
    [notice] = model_notices(settings, today=AFTER_SHUTDOWNS)
    assert notice.shut_down
    assert notice.message == "this model was shut down on 2027-01-20, calls fail with it"


def test_the_defaults_are_current_and_an_unknown_name_is_no_notice() -> None:
    assert model_notices(Settings(_env_file=None), today=AFTER_SHUTDOWNS) == []
    entries = configured_models(Settings(_env_file=None, openai_realtime_model="octi-azure-deployment"))
    assert [(entry.model, entry.known, entry.notice) for entry in entries] == [
        ("octi-azure-deployment", False, None), (defaults()[1], True, None)]


def test_the_block_parser_reads_bullets_continuations_and_stops_after_the_block() -> None:
    docstring = '''The model.

    Deprecated values:

    - "model-a", "model-a-2025",
      "model-a-mini": Announced
      shutdown date: 2027-04-01. See the deprecations page.
    - "model-b": Not a supported model ID. Retained for SDK compatibility.

    A paragraph about "model-c": Announced shutdown date: 2030-01-01.
    '''
    found = deprecations_in(docstring)
    assert sorted(found) == ["model-a", "model-a-2025", "model-a-mini", "model-b"]
    assert found["model-a-mini"].shutdown == date(2027, 4, 1)
    assert found["model-b"].shutdown is None and found["model-b"].note.startswith("Not a supported model ID")
    assert deprecations_in("The model to use.") == {}


def test_a_layout_that_does_not_parse_degrades_to_no_notices() -> None:
    catalog = read_catalog((ModelField("realtime", "openai.types.realtime.no_such_module", "Nothing"),
                            ModelField("transcription", "openai.types.realtime.audio_transcription", "Renamed")))
    assert not catalog.available
    assert len(catalog.errors) == 2 and "Renamed" in catalog.errors[1]
    settings = Settings(_env_file=None, openai_realtime_model="gpt-realtime")
    assert model_notices(settings, catalog=catalog) == []
    assert [entry.known for entry in configured_models(settings, catalog=catalog)] == [None, None]


def test_the_installed_catalog_is_parsed_once() -> None:
    assert installed_catalog() is installed_catalog()


async def test_health_flags_a_deprecated_model_and_the_start_logs_it(
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.WARNING, logger="app.service")
    # RAG off and an empty DATA_DIR: the knowledge base has nothing to do with this.
    async with running_line(openai_realtime_model="gpt-realtime", rag_mode="off", data_dir=tmp_path / "data") as line:
        async with httpx.AsyncClient() as http:
            health = (await http.get(line.url + "/health")).json()
    assert health["status"] == "degraded"
    assert health["models"]["realtime"] == "gpt-realtime"
    assert health["models"]["transcription"] == defaults()[1]
    [deprecated] = health["models"]["deprecated"]
    assert deprecated["variable"] == "OPENAI_REALTIME_MODEL"
    assert deprecated["shutdown_date"] == "2027-01-20"
    assert any(problem.startswith("OPENAI_REALTIME_MODEL=gpt-realtime:") and "2027-01-20" in problem
               for problem in health["problems"])
    assert health["realtime"]["model"] == "gpt-realtime"  # the existing fields stay
    warnings = [record.getMessage() for record in caplog.records
                if record.name == "app.service" and record.levelno == logging.WARNING]
    assert any(message.startswith("OPENAI_REALTIME_MODEL=gpt-realtime:") for message in warnings)


async def test_health_shows_no_deprecated_model_with_the_defaults(tmp_path: Path) -> None:
    async with running_line(rag_mode="off", data_dir=tmp_path / "data") as line:
        async with httpx.AsyncClient() as http:
            health = (await http.get(line.url + "/health")).json()
    assert health["models"]["deprecated"] == []
    assert (health["models"]["realtime"], health["models"]["transcription"]) == defaults()
    assert health["models"]["checked_against"].startswith("openai ")
    assert not any("_MODEL=" in problem for problem in health["problems"])
    assert health["status"] == "ok", health["problems"]
