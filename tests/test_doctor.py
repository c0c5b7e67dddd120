"""`octi doctor` end to end: real settings, the realtime double, real databases, real files."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings, get_settings
from app.doctor import (check_database, check_knowledge, check_ngrok, check_realtime, check_redis,
                        check_stream_listener, run_doctor)
from app.doctor_config_checks import check_keys
from app.knowledge.store import Chunk
from app.knowledge.stores import open_store
from app.simulators.realtime_double import RealtimeDouble
from tests.cli_runner import run_octi
from tests.harness import free_loopback_port

REPO = Path(__file__).resolve().parents[1]
OCTI = Path(sys.executable).with_name("octi")  # the console script of the environment running the tests
DOMAIN = "octi-doctor.ngrok-free.app"
SECRETS = {"openai_api_key": "sk-test", "twilio_auth_token": "twilio-secret-0123456789",
           "review_token": "review-secret-token-0123456789abcdef"}
UNREACHABLE_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:9/test"
BEFORE_SHUTDOWNS = date(2026, 12, 1)


def ngrok_yml(path: Path, *, domain: str = DOMAIN, port: object = 8000, authtoken: str = "2abcDEFtoken") -> Path:
    path.write_text("version: 3\n"
                    f"agent:\n  authtoken: {authtoken}\n"
                    "endpoints:\n  - name: octi\n"
                    f"    url: https://{domain}\n"
                    f"    upstream:\n      url: {port}\n", encoding="utf-8")
    return path


def complete_settings(tmp_path: Path, realtime_url: str, **overrides: Any) -> Settings:
    """A set-up with nothing to complain about, on the realtime double."""
    values: dict[str, Any] = {
        **SECRETS,
        "openai_realtime_url": realtime_url,
        "twilio_account_sid": "AC" + "0" * 32,
        "public_base_url": f"https://{DOMAIN}",
        "host": "127.0.0.1",
        "port": 8000,
        "data_dir": tmp_path / "data",
        "rag_mode": "off",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


async def doctor_json(settings: Settings, ngrok_config: Path) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = await run_doctor(settings, out, ngrok_config=ngrok_config, as_json=True, today=BEFORE_SHUTDOWNS)
    return code, json.loads(out.getvalue())


def statuses(report: dict[str, Any], check: str) -> list[str]:
    return [entry["status"] for entry in report["checks"] if entry["check"] == check]


def clean_environment(**extra: str) -> dict[str, str]:
    """The test process's environment without any OCTI setting, plus `extra`."""
    prefixes = ("OPENAI_", "TWILIO_", "RAG_", "REVIEW_", "KNOWLEDGE_", "WEAVIATE_", "DATABASE_", "PUBLIC_BASE_",
                "HOST", "PORT", "DATA_DIR")
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    return {**env, **extra}


# ---------------------------------------------------------------------- the whole run


async def test_a_complete_set_up_is_all_ok_and_the_probe_socket_is_closed(tmp_path: Path,
                                                                        double: RealtimeDouble) -> None:
    settings = complete_settings(tmp_path, double.url, rag_mode="inject")
    code, report = await doctor_json(settings, ngrok_yml(tmp_path / "ngrok.yml"))
    assert code == 0, report
    assert report["status"] == "ok"
    for check in ("keys", "models", "public url", "database", "knowledge", "realtime", "ngrok"):
        assert statuses(report, check) and set(statuses(report, check)) == {"ok"}, (check, report)
    [connection] = double.connections
    assert connection.session["model"] == settings.openai_realtime_model  # the call's own session.update
    closed = await connection.wait_closed()
    assert closed.initiated_by == "client"


async def test_problems_make_exit_code_1_and_secrets_are_never_printed(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, openai_api_key=None, twilio_auth_token=None, host="0.0.0.0",
                        public_base_url="http://octi.example.test", openai_realtime_model="gpt-realtime",
                        review_username="agronome", review_password="review-password-secret",
                        weaviate_api_key="weaviate-secret", database_url=UNREACHABLE_POSTGRES.replace(
                            "postgres@", "postgres:db-password-secret@"),
                        data_dir=tmp_path / "data", rag_mode="off")
    out = io.StringIO()
    code = await run_doctor(settings, out, ngrok_config=tmp_path / "absent.yml", today=BEFORE_SHUTDOWNS)
    text = out.getvalue()
    assert code == 1
    lines = text.splitlines()
    assert "problem  OPENAI_API_KEY is not set: every call goes to voicemail instead of OCTI. Fix: set " \
           "OPENAI_API_KEY to your OpenAI (or Azure OpenAI) key" in lines
    assert "problem  OPENAI_REALTIME_MODEL=gpt-realtime: the service shuts this model down on 2027-01-20. " \
           "Fix: set OPENAI_REALTIME_MODEL=gpt-realtime-2.1" in lines
    assert any(line.startswith("problem  TWILIO_AUTH_TOKEN is not set and HOST=0.0.0.0") for line in lines)
    assert any(line.startswith("problem  PUBLIC_BASE_URL=http://octi.example.test is http") for line in lines)
    assert any(line.startswith("warning  TWILIO_ACCOUNT_SID is not set") for line in lines)
    assert any(line.startswith("ok       review pages: sign-in with REVIEW_USERNAME/REVIEW_PASSWORD")
               for line in lines)
    assert any(line.startswith("warning  realtime service") and "not checked" in line for line in lines)
    assert any(line.startswith("warning") and "absent.yml not found" in line for line in lines)
    assert "secret" not in text


async def test_warnings_alone_exit_0(tmp_path: Path, double: RealtimeDouble) -> None:
    """A loopback set-up for local tries: no auth token, no public URL, no ngrok file."""
    settings = complete_settings(tmp_path, double.url, twilio_auth_token=None, public_base_url=None,
                                 twilio_account_sid=None, review_token=None)
    code, report = await doctor_json(settings, tmp_path / "no-ngrok.yml")
    assert code == 0
    assert report["status"] == "warning"
    assert "problem" not in {entry["status"] for entry in report["checks"]}
    assert statuses(report, "public url") == ["warning"] and statuses(report, "ngrok") == ["warning"]


async def test_a_shut_down_model_and_an_unknown_one_are_told_apart(tmp_path: Path) -> None:
    settings = complete_settings(tmp_path, "ws://127.0.0.1:9/v1/realtime", openai_realtime_model="octi-deployment",
                                 openai_transcribe_model="whisper-1")
    out = io.StringIO()
    await run_doctor(settings, out, ngrok_config=tmp_path / "none.yml", today=date(2027, 3, 1))
    lines = out.getvalue().splitlines()
    assert any(line.startswith("warning  OPENAI_REALTIME_MODEL=octi-deployment: not a model openai") for line in lines)
    assert "problem  OPENAI_TRANSCRIBE_MODEL=whisper-1: this model was shut down on 2027-02-26, calls fail " \
           "with it. Fix: set OPENAI_TRANSCRIBE_MODEL=gpt-realtime-whisper" in lines


# ---------------------------------------------------------------------- realtime service


async def test_a_key_the_service_refuses_is_a_problem(tmp_path: Path) -> None:
    async with RealtimeDouble(port=0, api_key="sk-the-right-one") as double:
        settings = complete_settings(tmp_path, double.url, openai_api_key="sk-a-wrong-key-1234")
        [finding] = await check_realtime(settings)
    assert finding.status == "problem"
    assert "refused OPENAI_API_KEY (HTTP 401 invalid_api_key)" in finding.message
    assert "1234" not in finding.text  # the service's message quotes the key's end: not repeated


async def test_a_session_the_service_refuses_reports_its_error_code_and_message(tmp_path: Path,
                                                                               double: RealtimeDouble) -> None:
    # The URL pins the session to one model, the session update asks for another.
    settings = complete_settings(tmp_path, double.url + "?model=gpt-realtime-2.1",
                                 openai_realtime_model="gpt-realtime-2.1-mini")
    [finding] = await check_realtime(settings)
    assert finding.status == "problem"
    assert "refused the session: invalid_value: The model of a session cannot be changed" in finding.message
    assert "(session.model)" in finding.message


async def test_a_closed_port_is_unreachable_and_a_silent_server_times_out(tmp_path: Path) -> None:
    [refused] = await check_realtime(complete_settings(tmp_path, f"ws://127.0.0.1:{free_loopback_port()}/v1/realtime"))
    assert refused.status == "problem" and "is unreachable" in refused.message

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts the TCP connection, never answers the handshake
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        [silence] = await check_realtime(complete_settings(tmp_path, f"ws://127.0.0.1:{port}/v1/realtime"),
                                         timeout=0.5)
        assert loop.time() - started < 3
    finally:
        server.close()
    assert silence.status == "problem" and "no handshake within 0.5 s" in silence.message


# ---------------------------------------------------------------------- database and knowledge base


async def test_an_unreachable_postgresql_is_a_problem(tmp_path: Path) -> None:
    [finding] = await check_database(complete_settings(tmp_path, "ws://unused", database_url=UNREACHABLE_POSTGRES))
    assert finding.status == "problem"
    assert finding.message.startswith(f"call log {UNREACHABLE_POSTGRES} is unreachable: ")


async def test_redis_answering_is_ok_and_down_or_missing_with_several_workers_is_a_warning(tmp_path: Path,
                                                                                          redis_url: str) -> None:
    def settings(**values: Any) -> Settings:
        return Settings(_env_file=None, data_dir=tmp_path, **values)

    [answering] = await check_redis(settings(redis_url=redis_url))
    assert answering.status == "ok" and "answers" in answering.message
    [down] = await check_redis(settings(redis_url=f"redis://:redis-secret@127.0.0.1:{free_loopback_port()}/0"))
    assert down.status == "warning" and "still taken" in down.message and "redis-secret" not in down.text
    [missing] = await check_redis(settings(workers=4))
    assert missing.status == "warning" and "WORKERS=4 without REDIS_URL" in missing.message
    assert await check_redis(settings()) == []  # one process keeps its state in memory


async def test_the_default_sqlite_call_log_is_ok_created_or_not(tmp_path: Path) -> None:
    settings = complete_settings(tmp_path, "ws://unused")
    [fresh] = await check_database(settings)
    assert fresh.status == "ok" and "not created yet" in fresh.message
    assert not (tmp_path / "data").exists()  # the doctor does not create it
    (tmp_path / "data").mkdir()
    sqlite3.connect(tmp_path / "data" / "calls.sqlite3").close()
    [existing] = await check_database(settings)
    assert existing.status == "ok" and existing.message.endswith("answers")


async def test_a_database_url_without_an_async_driver_is_a_problem(tmp_path: Path) -> None:
    [finding] = await check_database(complete_settings(tmp_path, "ws://unused", database_url="mysql://u@127.0.0.1/x"))
    assert finding.status == "problem" and "mysql" in finding.message


async def test_the_knowledge_check_counts_chunks_and_is_skipped_when_rag_is_off(tmp_path: Path) -> None:
    settings = complete_settings(tmp_path, "ws://unused", rag_mode="inject")
    store = open_store(settings)
    await store.replace_document("fiche.md", "sum-1", [
        Chunk("fiche-0", "fiche.md", "Poussins", "Les poussins ont froid sous 32 degrés.", 0)])
    await store.close()
    [finding] = await check_knowledge(settings)
    assert finding.status == "ok" and finding.message == "knowledge base (embedded): 1 chunk, vectors on"
    [skipped] = await check_knowledge(complete_settings(tmp_path, "ws://unused", rag_mode="off"))
    assert skipped.status == "ok" and "RAG_MODE=off" in skipped.message
    [unset] = await check_knowledge(complete_settings(tmp_path, "ws://unused", rag_mode="inject",
                                                      knowledge_backend="weaviate"))
    assert unset.status == "problem" and "WEAVIATE_URL" in unset.message


# ---------------------------------------------------------------------- ngrok.yml


def test_the_shipped_ngrok_yml_is_still_a_placeholder(tmp_path: Path) -> None:
    findings = check_ngrok(complete_settings(tmp_path, "ws://unused"), REPO / "ngrok.yml")
    assert [finding.status for finding in findings] == ["problem", "problem"]
    assert "authtoken is still the placeholder" in findings[0].message
    assert "still the placeholder (your-domain.ngrok-free.app)" in findings[1].message


@pytest.mark.parametrize(("upstream", "port", "expected"), [
    (8000, 8000, "ok"), ('"localhost:8000"', 8000, "ok"), ("http://127.0.0.1:8000", 8000, "ok"),
    (8000, 9000, "problem"), ("http://localhost", 8000, "problem"),
])
def test_the_ngrok_upstream_must_be_octis_port(tmp_path: Path, upstream: object, port: int, expected: str) -> None:
    findings = check_ngrok(complete_settings(tmp_path, "ws://unused", port=port),
                           ngrok_yml(tmp_path / "ngrok.yml", port=upstream))
    assert [finding.status for finding in findings] == [expected]


def test_the_ngrok_domain_must_be_public_base_url(tmp_path: Path) -> None:
    config = ngrok_yml(tmp_path / "ngrok.yml", domain="other-name.ngrok-free.app")
    [finding] = check_ngrok(complete_settings(tmp_path, "ws://unused"), config)
    assert finding.status == "problem"
    assert finding.fix == "set PUBLIC_BASE_URL=https://other-name.ngrok-free.app"


@pytest.mark.parametrize("stream, host, expected", [
    ({}, "127.0.0.1", []),
    ({"stream_port": 8001, "stream_public_url": "wss://media.example.test"}, "0.0.0.0", ["ok"]),
    ({"stream_port": 8001}, "127.0.0.1", ["warning"]),  # ws://127.0.0.1:8001: local tries only
    ({"stream_port": 8001}, "0.0.0.0", ["problem"]),
    ({"stream_port": 8001, "stream_public_url": "https://media.example.test"}, "0.0.0.0", ["problem"]),
    ({"stream_port": 8000, "stream_public_url": "wss://media.example.test"}, "0.0.0.0", ["problem"]),  # PORT
])
def test_the_stream_listener_needs_a_port_of_its_own_and_a_wss_url(tmp_path: Path, stream: dict, host: str,
                                                                   expected: list[str]) -> None:
    settings = complete_settings(tmp_path, "ws://unused", port=8000, host=host, **stream)
    assert [finding.status for finding in check_stream_listener(settings)] == expected


def test_a_v2_tunnel_and_a_missing_or_broken_file(tmp_path: Path) -> None:
    v2 = tmp_path / "v2.yml"
    v2.write_text(f"version: 2\ntunnels:\n  octi:\n    proto: http\n    addr: 8000\n    domain: {DOMAIN}\n")
    assert [f.status for f in check_ngrok(complete_settings(tmp_path, "ws://unused"), v2)] == ["ok"]
    assert [f.status for f in check_ngrok(complete_settings(tmp_path, "ws://unused"), tmp_path / "x.yml")] == [
        "warning"]
    broken = tmp_path / "broken.yml"
    broken.write_text("endpoints: [\n")
    assert [f.status for f in check_ngrok(complete_settings(tmp_path, "ws://unused"), broken)] == ["problem"]


# ---------------------------------------------------------------------- the command


def test_the_cli_entry_prints_json_and_fails_on_the_placeholder(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name, value in {**SECRETS, "openai_realtime_url": f"ws://127.0.0.1:{free_loopback_port()}/v1/realtime",
                        "twilio_account_sid": "AC" + "0" * 32, "public_base_url": f"https://{DOMAIN}",
                        "host": "127.0.0.1", "port": "8000", "data_dir": str(tmp_path / "data"),
                        "rag_mode": "off"}.items():
        monkeypatch.setenv(name.upper(), value)
    get_settings.cache_clear()
    try:
        result = run_octi("doctor", "--json", "--ngrok-config", str(REPO / "ngrok.yml"))
    finally:
        get_settings.cache_clear()
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and report["status"] == "problem"
    assert statuses(report, "ngrok") == ["problem", "problem"]


def test_octi_doctor_as_a_process_exits_1_on_problems(tmp_path: Path) -> None:
    env = clean_environment(HOST="0.0.0.0", DATA_DIR=str(tmp_path / "data"), RAG_MODE="off",
                            OPENAI_TRANSCRIBE_MODEL="gpt-4o-mini-transcribe")
    result = subprocess.run([str(OCTI), "doctor", "--ngrok-config", str(REPO / "ngrok.yml")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("problem  OPENAI_API_KEY is not set") for line in lines)
    assert any(line.startswith("problem  TWILIO_AUTH_TOKEN is not set and HOST=0.0.0.0") for line in lines)
    assert any(line.startswith("problem  OPENAI_TRANSCRIBE_MODEL=gpt-4o-mini-transcribe: the service shuts "
                               "this model down on 2027-02-26") or "was shut down on 2027-02-26" in line
               for line in lines)
    assert "Traceback" not in result.stderr


async def test_octi_doctor_as_a_process_exits_0_on_a_complete_set_up(tmp_path: Path, double: RealtimeDouble) -> None:
    env = clean_environment(
        OPENAI_API_KEY=SECRETS["openai_api_key"], OPENAI_REALTIME_URL=double.url,
        TWILIO_AUTH_TOKEN=SECRETS["twilio_auth_token"], TWILIO_ACCOUNT_SID="AC" + "0" * 32,
        REVIEW_TOKEN=SECRETS["review_token"], PUBLIC_BASE_URL=f"https://{DOMAIN}", PORT="8000",
        DATA_DIR=str(tmp_path / "data"), RAG_MODE="off")
    ngrok_yml(tmp_path / "ngrok.yml")  # the default --ngrok-config, in the working directory
    process = await asyncio.create_subprocess_exec(str(OCTI), "doctor", cwd=tmp_path, env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    text = stdout.decode()
    assert process.returncode == 0, text + stderr.decode()
    assert text.endswith("\n0 problem(s), 0 warning(s)\n")
    assert f"realtime service {double.url} accepted the key and the session" in text
    assert not any(secret in text for secret in SECRETS.values())


def test_octi_lists_doctor_among_its_commands() -> None:
    result = subprocess.run([sys.executable, "-m", "app", "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert any(line.split()[:1] == ["doctor"] for line in result.stdout.splitlines())


NO_OPENAI = """
import sys
from importlib.abc import MetaPathFinder

class WithoutOpenAI(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "openai":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, WithoutOpenAI())
from app.cli import main
main(["doctor", *sys.argv[1:]])
"""


def test_without_the_openai_package_the_doctor_says_it_could_not_check_the_models(tmp_path: Path) -> None:
    env = clean_environment(DATA_DIR=str(tmp_path / "data"), RAG_MODE="off", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", NO_OPENAI, "--ngrok-config", str(tmp_path / "none.yml")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    assert ("warning  could not check the models against the openai package (the openai package is not "
            "installed)") in result.stdout
    assert "_MODEL=" not in result.stdout


@pytest.mark.parametrize(("host", "public_url", "says"), [
    ("127.0.0.1", "", "open without sign-in"),
    ("127.0.0.1", "https://octi.example.ngrok.app", "closed (403)"),
    ("0.0.0.0", "https://octi.example.org", "disabled, HOST=0.0.0.0"),
])
def test_doctor_says_what_the_review_pages_do_without_credentials(tmp_path, host, public_url, says):
    settings = Settings(_env_file=None, host=host, public_base_url=public_url, data_dir=tmp_path)
    [review] = [f for f in check_keys(settings) if "review pages" in f.message]
    assert says in review.message, review.message


@pytest.mark.parametrize(("extra", "says"), [
    ({}, "whoever reads that hash can sign"),
    ({"review_session_secret": "s" * 32}, "sign-in with REVIEW_USERNAME/REVIEW_PASSWORD"),
    ({"review_token": "t" * 32}, "sign-in with REVIEW_USERNAME/REVIEW_PASSWORD and REVIEW_TOKEN"),
])
def test_doctor_warns_when_a_hashed_review_password_is_all_a_cookie_needs(tmp_path, extra, says):
    hashed = "pbkdf2_sha256$30000$seasalt$VrX+V8drCGo68wlvy6rfu8i1d1pfkdeXA4LJkRGJodY="
    settings = Settings(_env_file=None, host="0.0.0.0", data_dir=tmp_path, review_username="agronome",
                        review_password=hashed, **extra)
    [review] = [f for f in check_keys(settings) if "review pages" in f.message]
    assert says in review.message, review.message
    assert review.status == ("warning" if not extra else "ok")
