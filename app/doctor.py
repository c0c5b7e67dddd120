"""`octi doctor`: check the set-up before the first call, one plain line per check.

Each check says ok, warning (works, but look at it) or problem (calls or Twilio will fail),
and what to change. The network checks (database, knowledge store, realtime service) run
concurrently, each bounded by its own timeout, so the doctor answers within seconds even
when a server is silent. Secret values are never printed: only whether they are set.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Sequence
from contextlib import aclosing
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

import click
import yaml
from pydantic import ValidationError

from app.cli_support import run_coroutine
from app.config import Settings, get_settings
from app.model_catalog import configured_models, load_installed_catalog

Status = Literal["ok", "warning", "problem"]

DATABASE_TIMEOUT_SECONDS = 5.0
KNOWLEDGE_TIMEOUT_SECONDS = 10.0
REALTIME_TIMEOUT_SECONDS = 10.0
CLOSE_TIMEOUT_SECONDS = 2.0

DEFAULT_NGROK_CONFIG = Path("ngrok.yml")
NGROK_ENDPOINT = "octi"  # the endpoint the README starts: `ngrok start --config ngrok.yml octi`
NGROK_AUTHTOKEN_PLACEHOLDER = "YOUR_NGROK_AUTHTOKEN"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    status: Status
    message: str
    fix: str = ""

    @property
    def text(self) -> str:
        return f"{self.message}. Fix: {self.fix}" if self.fix else self.message


def ok(check: str, message: str) -> Finding:
    return Finding(check, "ok", message)


def warning(check: str, message: str, fix: str = "") -> Finding:
    return Finding(check, "warning", message, fix)


def problem(check: str, message: str, fix: str = "") -> Finding:
    return Finding(check, "problem", message, fix)


def _secret_set(value: Any) -> bool:
    return bool(value is not None and value.get_secret_value())


def _reason(exc: BaseException) -> str:
    """An exception in one line: the driver's own error when SQLAlchemy wraps one."""
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__


# ---------------------------------------------------------------------- configuration checks


def check_keys(settings: Settings) -> list[Finding]:
    findings = []
    if settings.realtime_configured:
        findings.append(ok("keys", "OPENAI_API_KEY is set"))
    else:
        findings.append(problem("keys", "OPENAI_API_KEY is not set: every call gets the French apology instead of OCTI",
                                "set OPENAI_API_KEY to your OpenAI (or Azure OpenAI) key"))
    if _secret_set(settings.twilio_auth_token):
        findings.append(ok("keys", "TWILIO_AUTH_TOKEN is set: Twilio's signatures are checked"))
    elif settings.binds_loopback_only:
        findings.append(warning("keys", f"TWILIO_AUTH_TOKEN is not set: unsigned requests are accepted on "
                                f"HOST={settings.host}, fine for local tries with `octi call` only",
                                "set TWILIO_AUTH_TOKEN (Twilio console, Account info) before connecting a number"))
    else:
        findings.append(problem("keys", f"TWILIO_AUTH_TOKEN is not set and HOST={settings.host} is not loopback: "
                                "every Twilio request is refused",
                                "set TWILIO_AUTH_TOKEN (Twilio console, Account info)"))
    sid = (settings.twilio_account_sid or "").strip()
    if not sid:
        findings.append(warning("keys", "TWILIO_ACCOUNT_SID is not set: calls are answered, but call control "
                                "through Twilio's REST API will need it", "set TWILIO_ACCOUNT_SID (starts with AC)"))
    elif not sid.startswith("AC"):
        findings.append(warning("keys", "TWILIO_ACCOUNT_SID does not start with AC: it does not look like an "
                                "account SID", "copy the Account SID from the Twilio console"))
    else:
        findings.append(ok("keys", "TWILIO_ACCOUNT_SID is set"))
    findings.append(_review_access(settings))
    return findings


def _review_access(settings: Settings) -> Finding:
    from app.review.passwords import ARGON2_PREFIX, PBKDF2_PREFIX, is_password_hash

    username = (settings.review_username or "").strip()
    password = settings.review_password.get_secret_value() if settings.review_password else ""
    if password.startswith((PBKDF2_PREFIX, ARGON2_PREFIX)) and not is_password_hash(password):
        return problem("keys", "REVIEW_PASSWORD looks like a password hash but is malformed: the service "
                       "does not start", "paste the whole output of `octi review hash-password`")
    signin = [name for name, present in (("REVIEW_USERNAME/REVIEW_PASSWORD", bool(username and password)),
                                         ("REVIEW_TOKEN", _secret_set(settings.review_token))) if present]
    if bool(username) != bool(password):
        missing = "REVIEW_PASSWORD" if username else "REVIEW_USERNAME"
        return warning("keys", f"{missing} is missing: reviewer password sign-in is off "
                       f"({'REVIEW_TOKEN still works' if signin else 'review pages disabled off loopback'})",
                       "set REVIEW_USERNAME and REVIEW_PASSWORD together")
    if signin:
        return ok("keys", f"review pages: sign-in with {' and '.join(signin)}")
    where = ("open without sign-in on this loopback-only bind" if settings.binds_loopback_only
             else f"disabled, HOST={settings.host} is not loopback")
    return warning("keys", f"no REVIEW_USERNAME/REVIEW_PASSWORD or REVIEW_TOKEN: the review pages (/calls) are {where}",
                   "set REVIEW_USERNAME and REVIEW_PASSWORD (`octi review hash-password`) or REVIEW_TOKEN")


async def check_models(settings: Settings, today: date | None = None) -> list[Finding]:
    catalog = await load_installed_catalog()
    if not catalog.available:
        reason = "; ".join(catalog.errors) or "nothing parsed"
        return [warning("models", f"could not check the models against the openai package ({reason})",
                        "reinstall OCTI's dependencies (`pip install -e .`)")]
    findings = []
    for entry in configured_models(settings, today=today, catalog=catalog):
        subject = f"{entry.variable}={entry.model}"
        if entry.notice is not None:
            findings.append(problem("models", f"{subject}: {entry.notice.message}", entry.notice.fix))
        elif entry.known is None:
            findings.append(warning("models", f"{subject}: could not check it ({catalog.source} does not "
                                    "describe this setting's models)"))
        elif not entry.known:
            findings.append(warning("models", f"{subject}: not a model {catalog.source} knows; fine for an Azure "
                                    "deployment name or a newer model, otherwise check the spelling"))
        else:
            findings.append(ok("models", f"{subject}: current, no shutdown announced ({catalog.source})"))
    return findings


def check_public_url(settings: Settings) -> list[Finding]:
    fallback = f"http://{settings.host}:{settings.port}"
    url = settings.public_base_url
    local = settings.binds_loopback_only
    if not url:
        if local:
            return [warning("public url", f"PUBLIC_BASE_URL is not set: URLs are built on {fallback}, fine for "
                            "local tries only (real Twilio needs https)",
                            "set PUBLIC_BASE_URL=https://<your ngrok domain> to take real calls")]
        return [problem("public url", f"PUBLIC_BASE_URL is not set and HOST={settings.host} is not loopback: "
                        f"signatures are checked against {fallback} and the stream URL is ws://, which Twilio refuses",
                        "set PUBLIC_BASE_URL to the https URL Twilio calls")]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [problem("public url", f"PUBLIC_BASE_URL={url} is not an http(s) URL",
                        "set PUBLIC_BASE_URL=https://<your domain>")]
    if parts.scheme == "http":
        finding = warning if local else problem
        return [finding("public url", f"PUBLIC_BASE_URL={url} is http: the stream URL becomes ws://, which "
                        "real Twilio refuses" + (" (fine for local tries)" if local else ""),
                        f"use https://{parts.netloc}{parts.path}")]
    return [ok("public url", f"PUBLIC_BASE_URL={url}: Twilio calls {url}/voice/incoming")]


# ---------------------------------------------------------------------- ngrok.yml


def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as file:
        return yaml.safe_load(file)


def _upstream_port(address: Any) -> int | None:
    """The port of an ngrok upstream: 8000, "8000", "localhost:8000" or "http://localhost:8000"."""
    if isinstance(address, bool):
        return None
    if isinstance(address, int):
        return address
    text = str(address or "").strip()
    if text.isdigit():
        return int(text)
    parts = urlsplit(text if "://" in text else f"//{text}")
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None:
        return {"http": 80, "https": 443}.get(parts.scheme)
    return port


def _ngrok_endpoint(config: dict[str, Any]) -> tuple[str, str, Any] | None:
    """(where in the file, public host, upstream address) of OCTI's endpoint; v3 `endpoints`
    first, then v2 `tunnels`."""
    endpoints = config.get("endpoints")
    if isinstance(endpoints, list) and endpoints:
        chosen = next((e for e in endpoints if isinstance(e, dict) and e.get("name") == NGROK_ENDPOINT), endpoints[0])
        if isinstance(chosen, dict):
            upstream = chosen.get("upstream")
            address = upstream.get("url") if isinstance(upstream, dict) else None
            return (f"endpoint {chosen.get('name', '#1')}", urlsplit(str(chosen.get("url") or "")).hostname or "",
                    address)
    tunnels = config.get("tunnels")
    if isinstance(tunnels, dict) and tunnels:
        name = NGROK_ENDPOINT if NGROK_ENDPOINT in tunnels else next(iter(tunnels))
        tunnel = tunnels[name]
        if isinstance(tunnel, dict):
            domain = str(tunnel.get("domain") or tunnel.get("hostname") or tunnel.get("url") or "")
            host = urlsplit(domain if "://" in domain else f"//{domain}").hostname or ""
            return f"tunnel {name}", host, tunnel.get("addr")
    return None


def _placeholder(host: str) -> bool:
    return host.startswith("your-") or "<" in host or ">" in host


def check_ngrok(settings: Settings, path: Path) -> list[Finding]:
    """ngrok.yml against the settings (synchronous file read: run it in a thread)."""
    subject = str(path)
    if not path.exists():
        return [warning("ngrok", f"{subject} not found: fine if Twilio reaches OCTI another way",
                        "fill in ngrok.yml to expose OCTI through ngrok (README, Connecting a real Twilio number)")]
    try:
        config = _load_yaml(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return [problem("ngrok", f"{subject} cannot be read: {' '.join(str(exc).split())}",
                        "fix the file (ngrok config check --config ngrok.yml says where)")]
    endpoint = _ngrok_endpoint(config) if isinstance(config, dict) else None
    if endpoint is None:
        return [problem("ngrok", f"{subject} defines no endpoint", f"add an endpoint named {NGROK_ENDPOINT} "
                        "(see the comments of the shipped ngrok.yml)")]
    where, host, address = endpoint
    findings = []
    agent = config.get("agent") if isinstance(config.get("agent"), dict) else {}
    if str(agent.get("authtoken") or config.get("authtoken") or "") == NGROK_AUTHTOKEN_PLACEHOLDER:
        findings.append(problem("ngrok", f"{subject}: the authtoken is still the placeholder, ngrok refuses to start",
                                "put your authtoken there (ngrok dashboard) or delete the line to use your global "
                                "ngrok configuration"))
    if not host or _placeholder(host):
        findings.append(problem("ngrok", f"{subject}: the domain of {where} is still the placeholder "
                                f"({host or 'empty'})", "put your reserved ngrok domain there"))
    elif not settings.public_base_url or urlsplit(settings.public_base_url).hostname != host:
        shown = settings.public_base_url or "not set"
        findings.append(problem("ngrok", f"{subject} exposes {host} but PUBLIC_BASE_URL is {shown}: Twilio's "
                                "signatures would not validate", f"set PUBLIC_BASE_URL=https://{host}"))
    port = _upstream_port(address)
    if port is None:
        findings.append(problem("ngrok", f"{subject}: {where} has no upstream port (upstream url: {address})",
                                f"set its upstream url to {settings.port}, the PORT OCTI listens on"))
    elif port != settings.port:
        findings.append(problem("ngrok", f"{subject}: {where} forwards to port {port} but OCTI listens on "
                                f"PORT={settings.port}", f"set its upstream url to {settings.port}, or PORT={port}"))
    if not findings:
        findings.append(ok("ngrok", f"{subject}: {host} forwards to port {port}"))
    return findings


# ---------------------------------------------------------------------- network checks


async def check_database(settings: Settings, timeout: float = DATABASE_TIMEOUT_SECONDS) -> list[Finding]:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from app.calllog.models import make_engine, sqlite_path

    url = settings.effective_database_url
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL: show only its scheme
        shown = url.split("://", 1)[0] + "://…"
    fix = "check DATABASE_URL (e.g. postgresql+asyncpg://user@host/db) and that the server is up"
    try:
        file = sqlite_path(url)
    except Exception as exc:
        return [problem("database", f"DATABASE_URL cannot be parsed: {_reason(exc)}", fix)]
    if file and not await asyncio.to_thread(Path(file).exists):
        # Not created here: the service creates and migrates it on start.
        writable = await asyncio.to_thread(_creatable, Path(file))
        if writable:
            return [ok("database", f"call log {shown}: not created yet, the service creates it on start")]
        return [problem("database", f"call log {shown}: cannot create it (directory not writable)",
                        "make DATA_DIR writable, or set DATABASE_URL")]
    try:
        engine = make_engine(url, pooled=False)
    except Exception as exc:  # unknown dialect, a driver that is not installed or not async
        return [problem("database", f"call log {shown}: {_reason(exc)}", fix)]
    try:
        async with asyncio.timeout(timeout):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except TimeoutError:
        return [problem("database", f"call log {shown}: no answer within {timeout:g} s", fix)]
    except Exception as exc:  # whatever the driver raises, it is the answer
        return [problem("database", f"call log {shown} is unreachable: {_reason(exc)}", fix)]
    finally:
        await _bounded(engine.dispose())
    return [ok("database", f"call log {shown} answers")]


def _creatable(path: Path) -> bool:
    """Whether the file could be created: its nearest existing directory is writable."""
    directory = path.parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    return os.access(directory, os.W_OK | os.X_OK)


async def check_knowledge(settings: Settings, timeout: float = KNOWLEDGE_TIMEOUT_SECONDS) -> list[Finding]:
    if settings.rag_mode == "off":
        return [ok("knowledge", "knowledge base: skipped (RAG_MODE=off)")]
    from app.knowledge.stores import open_store

    try:
        store = await asyncio.to_thread(open_store, settings)  # creates DATA_DIR: file system work
    except (ValueError, OSError) as exc:
        return [problem("knowledge", f"knowledge base cannot be opened: {exc}",
                        "check KNOWLEDGE_BACKEND, WEAVIATE_URL or DATA_DIR")]
    try:
        async with asyncio.timeout(timeout):
            health = await store.health()
    except TimeoutError:
        return [problem("knowledge", f"knowledge base ({settings.knowledge_backend}): no answer within {timeout:g} s",
                        "check that the store's server is up")]
    except Exception as exc:
        return [problem("knowledge", f"knowledge base ({settings.knowledge_backend}) is unavailable: {_reason(exc)}",
                        "check that the store's server is up")]
    finally:
        await _bounded(store.close())
    detail = f": {health.detail}" if health.detail else ""
    if not health.ok:
        return [problem("knowledge", f"knowledge base ({health.backend}) is unavailable{detail}; answers go "
                        "without context", "check KNOWLEDGE_BACKEND and the store's server")]
    contents = (f"{health.chunks} chunk{'' if health.chunks == 1 else 's'}" if health.chunks
                else "empty (the sample pack is seeded when the service starts)")
    if not health.vectors:
        return [warning("knowledge", f"knowledge base ({health.backend}): {contents}, vectors off, keyword "
                        f"search only{detail}", "see `octi kb stats` for why the embedding model is unavailable")]
    return [ok("knowledge", f"knowledge base ({health.backend}): {contents}, vectors on")]


async def check_realtime(settings: Settings, timeout: float = REALTIME_TIMEOUT_SECONDS) -> list[Finding]:
    """Open the realtime websocket as a call does and wait for the session to be accepted."""
    from app.engines.openai_realtime.connection import RealtimeConnection, RealtimeUnavailable
    from app.engines.openai_realtime.engine import session_update
    from app.service import engine_options

    service = f"realtime service {_shown_url(settings.openai_realtime_url)}"
    if not settings.realtime_configured:
        return [warning("realtime", f"{service}: not checked, OPENAI_API_KEY is not set")]
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        async with asyncio.timeout_at(deadline):
            connection = await RealtimeConnection.open(settings, session_update(settings, engine_options(settings)))
    except TimeoutError:
        return [problem("realtime", f"{service}: no handshake within {timeout:g} s", "check OPENAI_REALTIME_URL")]
    except RealtimeUnavailable as exc:
        return [_refused(service, exc)]
    try:
        async with asyncio.timeout_at(deadline), aclosing(connection.events()) as events:
            async for event in events:
                if event["type"] == "session.updated":
                    return [ok("realtime", f"{service} accepted the key and the session "
                               f"({settings.openai_realtime_model}, {settings.openai_transcribe_model})")]
                if event["type"] == "error":
                    error = event.get("error") or {}
                    param = f" ({error['param']})" if error.get("param") else ""
                    return [problem("realtime", f"{service} refused the session: {error.get('code') or 'error'}: "
                                    f"{error.get('message', '')}{param}",
                                    "fix the setting it names (OPENAI_REALTIME_MODEL, OPENAI_TRANSCRIBE_MODEL, …)")]
        return [problem("realtime", f"{service} closed the websocket (code {connection.close_code}) before "
                        "accepting the session", "check OPENAI_REALTIME_URL and OPENAI_REALTIME_MODEL")]
    except TimeoutError:
        return [problem("realtime", f"{service}: the session was not confirmed within {timeout:g} s",
                        "check OPENAI_REALTIME_URL")]
    finally:
        await _bounded(connection.close())


def _shown_url(url: str) -> str:
    """A URL without what may carry a secret (user info, query)."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    host = parts.hostname or ""
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}{port}{parts.path}"


def _refused(service: str, exc: BaseException) -> Finding:
    """Why the handshake failed, in the operator's terms."""
    from websockets.exceptions import InvalidStatus, InvalidURI

    cause = exc.__cause__
    if isinstance(cause, InvalidStatus):
        status = cause.response.status_code
        code = message = ""
        try:
            error = json.loads(cause.response.body or b"{}").get("error") or {}
            code, message = str(error.get("code") or error.get("type") or ""), str(error.get("message") or "")
        except (ValueError, AttributeError):
            pass
        label = f"HTTP {status}" + (f" {code}" if code else "")
        if status in (401, 403):
            # The service's message quotes part of the key: not printed.
            return problem("realtime", f"{service} refused OPENAI_API_KEY ({label})",
                           "check OPENAI_API_KEY (and that it belongs to a project with Realtime access)")
        return problem("realtime", f"{service} refused the connection ({label})" + (f": {message}" if message else ""),
                       "check OPENAI_REALTIME_URL and OPENAI_REALTIME_MODEL")
    if isinstance(cause, InvalidURI):
        return problem("realtime", f"{service}: OPENAI_REALTIME_URL is not a websocket URL",
                       "use wss://api.openai.com/v1/realtime (or your Azure …/openai/v1/realtime)")
    reason = _reason(cause) if cause is not None else str(exc)
    return problem("realtime", f"{service} is unreachable: {reason}", "check OPENAI_REALTIME_URL and the network")


async def _bounded(closing: Awaitable[Any]) -> None:
    """Close something without letting a dead peer hold the doctor up."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
            await closing
    except Exception:  # closing is best effort: the verdict is already known
        pass


# ---------------------------------------------------------------------- the run


async def diagnose(settings: Settings, *, ngrok_config: Path = DEFAULT_NGROK_CONFIG,
                   today: date | None = None) -> list[Finding]:
    """Every check, in a fixed order; the slow ones run concurrently."""
    checks: list[Awaitable[list[Finding]]] = [
        check_models(settings, today),
        asyncio.to_thread(check_ngrok, settings, ngrok_config),
        check_database(settings),
        check_knowledge(settings),
        check_realtime(settings),
    ]
    models, ngrok, database, knowledge, realtime = await asyncio.gather(*checks)
    return [*check_keys(settings), *models, *check_public_url(settings), *database, *knowledge, *realtime, *ngrok]


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
           "check_public_url", "check_realtime", "cli", "diagnose", "render_json", "render_text", "run_doctor"]
