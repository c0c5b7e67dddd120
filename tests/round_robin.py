"""A tiny TCP load balancer for tests: each new connection goes to the next backend in turn (or,
once a test pins one, to that backend), and it notes which backend carried which HTTP requests
(the request lines it saw go by)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field

REQUEST_LINE = re.compile(rb"(GET|POST) (/[^ ?\r\n]*)\S* HTTP/1\.[01]\r\n")


@dataclass
class Carried:
    backend: int
    requests: list[str] = field(default_factory=list)  # "POST /voice/incoming", in order


class RoundRobinProxy:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self._backends = backends
        self.connections: list[Carried] = []
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._pinned: int | None = None

    async def __aenter__(self) -> RoundRobinProxy:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for relay in self._relays:
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def pin(self, backend: int) -> None:
        """Send every new connection from now on to `backend`."""
        self._pinned = backend

    def backends_of(self, request: str) -> list[int]:
        """The backends that received `request` ("POST /voice/incoming"), in order."""
        return [carried.backend for carried in self.connections for seen in carried.requests if seen == request]

    async def _accepted(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        relay = asyncio.current_task()
        assert relay is not None
        self._relays.add(relay)
        carried = Carried(len(self.connections) % len(self._backends) if self._pinned is None else self._pinned)
        self.connections.append(carried)
        try:
            backend_reader, backend_writer = await asyncio.open_connection(*self._backends[carried.backend])
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(_pipe(client_reader, backend_writer, carried), _pipe(backend_reader, client_writer))
        finally:
            for writer in (backend_writer, client_writer):
                writer.close()
            self._relays.discard(relay)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, carried: Carried | None = None) -> None:
    """Copy one direction until it ends, then half-close it, so the other one can finish."""
    with contextlib.suppress(OSError):
        while data := await source.read(65536):
            if carried is not None:
                carried.requests.extend(f"{method.decode()} {path.decode()}"
                                        for method, path in REQUEST_LINE.findall(data))
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
