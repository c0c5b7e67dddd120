"""What a connection records for tests to inspect or await, and what a test scripts for one."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class ResponseRecord:
    """One response, as the double generated it."""

    id: str
    trigger: str  # "client" (response.create) or "turn_detection"
    conversation: str  # "auto" or "none"
    instructions: str  # effective: response.instructions if given (it replaces the session's)
    input_items: list[dict[str, Any]]  # what the model was given (response.input, else the conversation)
    conversation_items: list[dict[str, Any]]  # the default conversation when the response was created
    output_modalities: list[str]
    voice: Any
    output_format: dict[str, Any]
    metadata: dict[str, str] | None
    kind: str  # "greeting" (the connection's first response) or "answer"
    planned_ms: int
    item_id: str
    status: str = "in_progress"  # then completed, cancelled or incomplete
    status_reason: str | None = None  # turn_detected, client_cancelled, max_output_tokens, connection_closed
    audio_ms: int = 0  # audio generated (sent) so far
    transcript: str = ""  # what the client received as transcript/text
    usage: dict[str, Any] | None = None
    function_call: dict[str, Any] | None = None  # {call_id, name, arguments} when the model called a tool


@dataclass(frozen=True)
class TruncationRecord:
    item_id: str
    content_index: int
    audio_end_ms: int
    item_audio_ms: int  # the item's audio length when the truncate arrived
    response_id: str | None


@dataclass(frozen=True)
class ClosedInfo:
    code: int | None
    reason: str
    initiated_by: str  # "client", "server" or "network" (no closing handshake)


@dataclass(frozen=True)
class RejectedHandshake:
    path: str
    status: int
    reason: str


@dataclass
class ConnectionScript:
    """Settings for one connection that override the double's (None: the double's)."""

    transcripts: list[str] | None = None
    answer_seconds: float | None = None
    greeting_seconds: float | None = None
    transcription_seconds: float | None = None


class EventLog:
    """Bounded history of events plus one-shot waiters on a predicate."""

    __slots__ = ("events", "times", "counts", "_waiters")

    def __init__(self, limit: int | None) -> None:
        self.events: deque[dict[str, Any]] = deque(maxlen=limit)
        self.times: deque[float] = deque(maxlen=limit)  # time.monotonic() of each event
        self.counts: Counter[str] = Counter()
        self._waiters: list[tuple[Callable[[dict[str, Any]], Any], asyncio.Future[dict[str, Any]]]] = []

    def add(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.times.append(time.monotonic())
        self.counts[event["type"]] += 1
        for predicate, future in self._waiters:
            if future.done():
                continue
            try:
                if predicate(event):
                    future.set_result(event)
            except Exception as exc:  # a broken predicate should fail the waiting test, not us
                future.set_exception(exc)

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], Any], timeout: float, what: str, new_only: bool
    ) -> dict[str, Any]:
        if not new_only:
            for event in self.events:
                if predicate(event):
                    return event
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            recent = [event["type"] for event in list(self.events)[-12:]]
            raise TimeoutError(f"no matching {what} within {timeout}s; most recent: {recent}") from None
        finally:
            self._waiters.remove(entry)
