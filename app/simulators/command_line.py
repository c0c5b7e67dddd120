"""What the doubles' commands (`octi realtime-double`, `octi live-double`) share: serve until
Ctrl-C, saying where the double listens and how to point the phone line at it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol


class Double(AbstractAsyncContextManager[Any], Protocol):
    @property
    def url(self) -> str: ...


def serve_until_interrupted(double: Double, name: str, exports: Callable[[str], list[str]]) -> None:
    """Run `double` until Ctrl-C; `exports(url)`: the settings that point the phone line at it.
    A port already taken (or another socket error) exits 1 with the reason."""
    try:
        asyncio.run(_serve(double, name, exports))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a double is meant to stop
    except OSError as exc:
        print(f"{name} double: {exc}", flush=True)
        sys.exit(1)


async def _serve(double: Double, name: str, exports: Callable[[str], list[str]]) -> None:
    async with double:
        print(f"OpenAI {name} double listening on {double.url}", flush=True)
        print("Point the phone line at it:", flush=True)
        for line in exports(double.url):
            print(f"  export {line}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        await asyncio.Event().wait()
