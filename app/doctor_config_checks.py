"""`octi doctor`'s checks of the configuration itself: the keys, the models, the public URL and
ngrok.yml. They read the settings and local files only, never the network."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from app.config import Settings
from app.doctor_findings import Finding, ok, problem, warning
from app.model_catalog import configured_models, load_installed_catalog

NGROK_ENDPOINT = "octi"  # the endpoint the README starts: `ngrok start --config ngrok.yml octi`
NGROK_AUTHTOKEN_PLACEHOLDER = "YOUR_NGROK_AUTHTOKEN"


def _secret_set(value: Any) -> bool:
    return bool(value is not None and value.get_secret_value())


# ---------------------------------------------------------------------- the settings


def check_keys(settings: Settings) -> list[Finding]:
    findings = []
    if settings.realtime_configured:
        findings.append(ok("keys", "OPENAI_API_KEY is set"))
    else:
        findings.append(problem("keys", "OPENAI_API_KEY is not set: every call goes to voicemail instead of OCTI",
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
    from app.accounts.passwords import ARGON2_PREFIX, PBKDF2_PREFIX, is_password_hash
    from app.review.auth import cookies_keyed_by_a_hash_alone, mode_without_credentials

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
    if cookies_keyed_by_a_hash_alone(settings):
        return warning("keys", "review pages: REVIEW_PASSWORD is given hashed with neither REVIEW_TOKEN nor "
                       "REVIEW_SESSION_SECRET: whoever reads that hash can sign reviewers' cookies",
                       "set REVIEW_SESSION_SECRET to a long random value, the same on every host")
    if signin:
        return ok("keys", f"review pages: sign-in with {' and '.join(signin)}")
    where = {"open": "open without sign-in on this loopback-only bind",
             "closed": "closed (403): PUBLIC_BASE_URL says the service is reachable, through a tunnel or a proxy",
             "disabled": f"disabled, HOST={settings.host} is not loopback"}[mode_without_credentials(settings)]
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


def check_stream_listener(settings: Settings) -> list[Finding]:
    """STREAM_PORT: the media stream on a listener of its own, which Twilio must reach over wss://."""
    port, url = settings.stream_port, settings.stream_public_url
    if not port:
        return []
    if port == settings.port:
        return [problem("stream listener", f"STREAM_PORT={port} is PORT too: the service cannot start",
                        "choose another STREAM_PORT (e.g. PORT + 1)")]
    if url and urlsplit(url).scheme == "wss" and urlsplit(url).hostname:
        return [ok("stream listener", f"media streams on port {port}: Twilio connects to {url}/voice/stream")]
    shown = f"STREAM_PUBLIC_URL={url}" if url else f"STREAM_PUBLIC_URL is not set (ws://{settings.host}:{port})"
    finding = warning if settings.binds_loopback_only else problem
    return [finding("stream listener", f"{shown}: the stream URL is not wss://, which real Twilio refuses"
                    + (" (fine for local tries)" if settings.binds_loopback_only else ""),
                    f"expose port {port} through a tunnel of its own and set STREAM_PUBLIC_URL=wss://<its domain>")]


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
