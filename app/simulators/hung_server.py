"""A server that is hung, not gone: it takes connections and never answers (a knowledge store
or a database stuck mid-request). A refused connection fails at once; this one only fails
when the client's own budget runs out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def hung_server(host: str = "127.0.0.1") -> AsyncIterator[int]:
    """Listens on a free port (yielded) for the block; reads whatever comes and answers nothing."""
    connections: set[asyncio.StreamWriter] = set()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.add(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        connections.discard(writer)
        writer.close()

    server = await asyncio.start_server(swallow, host, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in list(connections):
            writer.close()
        await server.wait_closed()
