"""`octi doctor`: check the set-up before the first call, one plain line per check.

Each check says ok, warning (works, but look at it) or problem (calls or Twilio will fail),
and what to change. The network checks (database, knowledge store, realtime service, Redis) run
concurrently, each bounded by its own timeout, so the doctor answers within seconds even
when a server is silent. Secret values are never printed: only whether they are set.

The checks live in `doctor_config_checks.py` (settings and local files) and
`doctor_network_checks.py` (the servers); this module runs them, renders the findings and is
the command.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Sequence
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import TextIO

import click
from pydantic import ValidationError

from app.cli_support import run_coroutine
from app.config import Settings, get_settings
from app.doctor_config_checks import check_keys, check_models, check_ngrok, check_public_url, check_stream_listener
from app.doctor_findings import Finding, Status, problem
from app.doctor_network_checks import check_database, check_knowledge, check_realtime, check_redis

DEFAULT_NGROK_CONFIG = Path("ngrok.yml")


async def diagnose(settings: Settings, *, ngrok_config: Path = DEFAULT_NGROK_CONFIG,
                   today: date | None = None) -> list[Finding]:
    """Every check, in a fixed order; the slow ones run concurrently."""
    checks: list[Awaitable[list[Finding]]] = [
        check_models(settings, today),
        asyncio.to_thread(check_ngrok, settings, ngrok_config),
        check_database(settings),
        check_knowledge(settings),
        check_realtime(settings),
        check_redis(settings),
    ]
    models, ngrok, database, knowledge, realtime, redis = await asyncio.gather(*checks)
    return [*check_keys(settings), *models, *check_public_url(settings), *check_stream_listener(settings), *database,
            *knowledge, *realtime, *redis, *ngrok]


def worst(findings: Sequence[Finding]) -> Status:
    statuses = {finding.status for finding in findings}
    return "problem" if "problem" in statuses else "warning" if "warning" in statuses else "ok"


def render_text(findings: Sequence[Finding]) -> str:
    lines = [f"{finding.status:<9}{finding.text}" for finding in findings]
    counts = {status: sum(1 for f in findings if f.status == status) for status in ("problem", "warning")}
    lines.append(f"\n{counts['problem']} problem(s), {counts['warning']} warning(s)")
    return "\n".join(lines) + "\n"


def render_json(findings: Sequence[Finding]) -> str:
    return json.dumps({"status": worst(findings), "checks": [asdict(finding) for finding in findings]},
                      ensure_ascii=False, indent=2) + "\n"


async def run_doctor(settings: Settings, out: TextIO, *, ngrok_config: Path = DEFAULT_NGROK_CONFIG,
                     as_json: bool = False, today: date | None = None) -> int:
    """Check `settings`, print the findings; 1 when any is a problem, else 0."""
    findings = await diagnose(settings, ngrok_config=ngrok_config, today=today)
    out.write(render_json(findings) if as_json else render_text(findings))
    return 1 if worst(findings) == "problem" else 0


def _configuration_problem(exc: ValidationError) -> Finding:
    # Locations and messages only: the rejected input may be a secret.
    errors = "; ".join(f"{'.'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
                       for error in exc.errors())
    return problem("configuration", f"the settings do not load: {errors}", "fix these environment variables")


@click.command(name="doctor")
@click.option("--ngrok-config", type=click.Path(path_type=Path), default=DEFAULT_NGROK_CONFIG,
              help="the ngrok agent configuration to check (default: ./ngrok.yml)")
@click.option("--json", "as_json", is_flag=True, help="print the checks as JSON")
def cli(ngrok_config: Path, as_json: bool) -> None:
    """Check the set-up: keys, models, public URL, database, knowledge base, realtime service, ngrok.yml."""
    try:
        settings = get_settings()
    except ValidationError as exc:
        findings = [_configuration_problem(exc)]
        click.echo(render_json(findings) if as_json else render_text(findings), nl=False)
        sys.exit(1)
    sys.exit(run_coroutine(run_doctor(settings, sys.stdout, ngrok_config=ngrok_config, as_json=as_json)))


__all__ = ["Finding", "check_database", "check_keys", "check_knowledge", "check_models", "check_ngrok",
           "check_public_url", "check_realtime", "check_stream_listener", "cli", "diagnose", "render_json", "render_text",
           "run_doctor"]
