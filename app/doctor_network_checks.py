"""`octi doctor`'s network checks: the call-log database, the knowledge store, the realtime
service and Redis, each bounded by its own timeout so that a silent server cannot hold the
doctor up."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from app.config import Settings
from app.doctor_findings import Finding, ok, problem, warning

if TYPE_CHECKING:
    from app.engines.openai_realtime.connection import RealtimeUnavailable

DATABASE_TIMEOUT_SECONDS = 5.0
KNOWLEDGE_TIMEOUT_SECONDS = 10.0
REALTIME_TIMEOUT_SECONDS = 10.0
REDIS_TIMEOUT_SECONDS = 5.0
CLOSE_TIMEOUT_SECONDS = 2.0


def _reason(exc: BaseException) -> str:
    """An exception in one line: the driver's own error when SQLAlchemy wraps one."""
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__


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


async def check_redis(settings: Settings, timeout: float = REDIS_TIMEOUT_SECONDS) -> list[Finding]:
    """What several workers or hosts share (stream claims, outcomes, rate limits): Redis down is a
    warning, not a problem, since calls are still taken with that state kept per instance."""
    import coredis

    fix = "set REDIS_URL to a Redis every worker and host reaches (README, \"Several workers and hosts\")"
    if not settings.redis_url:
        if settings.workers > 1:
            return [warning("redis", f"WORKERS={settings.workers} without REDIS_URL: a call whose stream reaches "
                                     "another worker than its webhook loses its shared state", fix)]
        return []
    where = urlsplit(settings.redis_url).hostname or "socket"  # never the credentials
    redis = coredis.Redis.from_url(settings.redis_url, connect_timeout=timeout, stream_timeout=timeout)
    try:
        async with asyncio.timeout(timeout):
            await redis.ping()
    except Exception as exc:  # a refused connection, a timeout, a wrong password: the answer either way
        return [warning("redis", f"Redis at {where} is unreachable ({type(exc).__name__}): calls are still taken, "
                                 "but each instance keeps its own rate limits and stream claims", fix)]
    finally:
        redis.connection_pool.disconnect()
    return [ok("redis", f"Redis at {where} answers: workers and hosts share calls' state")]


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
    """Open the realtime websocket as a call does and wait for the session to be accepted
    (with ENGINE=gpt-live, a GPT-Live session)."""
    if settings.engine == "gpt-live":
        return await _check_live(settings, timeout)
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
        explanation = b""
        if exc.http_status is not None:
            try:
                async with asyncio.timeout_at(deadline):
                    explanation = await _refusal_body(settings)
            except TimeoutError:
                pass  # the status alone still says what to fix
        return [_refused(service, exc, explanation)]
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


async def _check_live(settings: Settings, timeout: float) -> list[Finding]:
    """Start a GPT-Live session as a call does (`session.started`), then close it."""
    from app.engines.contract import EngineUnavailable
    from app.engines.gpt_live.engine import GptLiveEngine

    service = f"live service {_shown_url(settings.gpt_live_url)}"
    if not settings.realtime_configured:
        return [warning("realtime", f"{service}: not checked, OPENAI_API_KEY is not set")]
    try:
        async with asyncio.timeout(timeout):
            engine = await GptLiveEngine.open(settings)
    except TimeoutError:
        return [problem("realtime", f"{service}: no session within {timeout:g} s", "check GPT_LIVE_URL")]
    except EngineUnavailable as exc:
        return [problem("realtime", f"{service}: {exc}", "check GPT_LIVE_URL, GPT_LIVE_MODEL and OPENAI_API_KEY")]
    await _bounded(engine.close())
    return [ok("realtime", f"{service} started a session ({settings.gpt_live_model})")]


def _shown_url(url: str) -> str:
    """A URL without what may carry a secret (user info, query)."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    host = parts.hostname or ""
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}{port}{parts.path}"


async def _refusal_body(settings: Settings) -> bytes:
    """The service's JSON explanation of a refused handshake.

    The call's websocket client (picows) reports a refusal's status but not its body, so the
    doctor asks once more with the `websockets` client, which keeps it."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus, WebSocketException

    from app.engines.openai_realtime.connection import auth_headers, realtime_url

    try:
        async with connect(realtime_url(settings), additional_headers=auth_headers(settings), open_timeout=None):
            return b""  # accepted this time: nothing to explain
    except InvalidStatus as exc:
        return bytes(exc.response.body or b"")
    except (OSError, WebSocketException):
        return b""


def _refused(service: str, exc: RealtimeUnavailable, explanation: bytes) -> Finding:
    """Why the handshake failed, in the operator's terms; `explanation` is the service's answer."""
    if exc.http_status is not None:
        code = message = ""
        try:
            error = json.loads(explanation or b"{}").get("error") or {}
            code, message = str(error.get("code") or error.get("type") or ""), str(error.get("message") or "")
        except (ValueError, AttributeError):
            pass
        label = f"HTTP {exc.http_status}" + (f" {code}" if code else "")
        if exc.http_status in (401, 403):
            # The service's message quotes part of the key: not printed.
            return problem("realtime", f"{service} refused OPENAI_API_KEY ({label})",
                           "check OPENAI_API_KEY (and that it belongs to a project with Realtime access)")
        return problem("realtime", f"{service} refused the connection ({label})" + (f": {message}" if message else ""),
                       "check OPENAI_REALTIME_URL and OPENAI_REALTIME_MODEL")
    if exc.bad_url:
        return problem("realtime", f"{service}: OPENAI_REALTIME_URL is not a websocket URL",
                       "use wss://api.openai.com/v1/realtime (or your Azure …/openai/v1/realtime)")
    cause = exc.__cause__
    reason = _reason(cause) if cause is not None else str(exc)
    return problem("realtime", f"{service} is unreachable: {reason}", "check OPENAI_REALTIME_URL and the network")


async def _bounded(closing: Awaitable[Any]) -> None:
    """Close something without letting a dead peer hold the doctor up."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
            await closing
    except Exception:  # closing is best effort: the verdict is already known
        pass
