import json
import logging
import os
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.logs import CallContextFilter, configure_logging, current_call, mask_phone
from tests.harness import running_line
from tests.test_call_path import ask_once, call


def test_mask_phone_keeps_prefix_and_last_digits_only():
    assert mask_phone("+33612345678") == "+336••••••78"
    assert mask_phone("") == "?"
    assert "12345" not in mask_phone("+33 6 12 34 56 78")


def test_log_records_carry_the_call_and_never_a_full_number():
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "call from %s to +33198765432", ("+33612345678",), None)
    token = current_call.set("CA0123456789abcdef0123456789abcdef")
    try:
        assert CallContextFilter().filter(record)
    finally:
        current_call.reset(token)
    assert record.call == "CA0123456789abcdef0123456789abcdef"
    assert "612345678" not in record.msg and "198765432" not in record.msg
    assert "+336" in record.msg


def test_sids_with_long_digit_runs_are_not_mistaken_for_numbers():
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "stream MZ12345678901234 for CA99999999aa", (), None)
    CallContextFilter().filter(record)
    assert record.msg == "stream MZ12345678901234 for CA99999999aa"


# ------------------------------------------------------------------ the output: text, or JSON lines

@pytest.fixture
def restored_root_logger():
    """configure_logging replaces the root logger's handlers: put them back after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line]


def test_json_logs_are_one_object_a_line_with_the_call_and_masked_numbers(restored_root_logger, capsys):
    configure_logging("INFO", "json")
    log = logging.getLogger("app.test")
    log.info("outside any call")
    token = current_call.set("CA0123456789abcdef0123456789abcdef")
    try:
        log.warning("call from %s", "+33612345678")
        try:
            raise ValueError("no route to +33198765432")
        except ValueError:
            log.exception("it failed\nover two lines")
    finally:
        current_call.reset(token)
    log.debug("below the level")

    output = capsys.readouterr().err
    outside, warned, failed = json_lines(output)
    assert len(output.splitlines()) == 3, "one line per record, newlines escaped"
    assert outside["call"] == "-" and outside["message"] == "outside any call" and "exception" not in outside
    assert set(warned) == {"time", "level", "pid", "logger", "call", "message"}
    assert warned["pid"] == os.getpid()
    assert warned["level"] == "WARNING" and warned["logger"] == "app.test"
    assert warned["call"] == failed["call"] == "CA0123456789abcdef0123456789abcdef"
    assert warned["message"] == "call from +336••••••78"
    stamped = datetime.fromisoformat(warned["time"])
    assert stamped.utcoffset() == timedelta(0) and abs(datetime.now(UTC) - stamped) < timedelta(minutes=1)
    assert failed["level"] == "ERROR" and failed["message"] == "it failed\nover two lines"
    assert failed["exception"].startswith("Traceback")
    assert failed["exception"].endswith(f"ValueError: no route to {mask_phone('+33198765432')}")
    assert "612345678" not in output and "198765432" not in output


def test_text_logs_stay_the_default(restored_root_logger, capsys):
    configure_logging("INFO")
    token = current_call.set("CA42")
    try:
        logging.getLogger("app.test").warning("call from %s", "+33612345678")
    finally:
        current_call.reset(token)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(" WARNING app.test [CA42] call from +336••••••78")


def test_log_format_comes_from_the_environment(monkeypatch):
    assert Settings(_env_file=None).log_format == "text"
    monkeypatch.setenv("LOG_FORMAT", "json")
    assert Settings(_env_file=None).log_format == "json"
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


async def test_every_json_line_of_a_call_names_it_and_no_number_is_whole(double, restored_root_logger, capsys):
    double.script_next_connection(["Mes poules ne pondent plus."], answer_seconds=1.0)
    configure_logging("INFO", "json")
    async with running_line(openai_realtime_url=double.url) as line:
        result = await call(line, ask_once(dtmf=[(0.5, "5")]))
    output = capsys.readouterr().err
    assert result.status == "completed", result.summary()

    entries = json_lines(output)  # every line is a whole JSON object
    incoming = [e for e in entries if e["message"].startswith("incoming call")]
    pressed = [e for e in entries if e["message"] == "caller pressed 5"]
    ended = [e for e in entries if e["message"].startswith("call ended")]
    assert len(incoming) == len(pressed) == len(ended) == 1
    assert {e["call"] for e in incoming + pressed + ended} == {result.call_sid}
    assert "+336••••••78" in incoming[0]["message"]
    assert "612345678" not in output and "198765432" not in output
