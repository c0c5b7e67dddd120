"""How much of each assistant item the caller has actually heard.

Audio is sent to the caller in chunks, each followed by a uniquely named mark. The far
end echoes a mark once the audio before it has played, so acknowledged chunks are heard
for sure; the chunk at the head of the queue is partly heard, in proportion to the time
since it started playing. A `clear` flushes the queue: the marks echoed for it mean
"discarded", so they are forgotten before they come back.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class _Chunk:
    mark: str
    item_id: str
    ms: float
    sent_at: float
    audio: bytes  # kept until played: an interruption that proves to be noise replays it


@dataclass(frozen=True, slots=True)
class Unplayed:
    """Audio the far end held when it was cleared; `heard_ms` of it had already played."""

    item_id: str
    audio: bytes
    heard_ms: float


class PlaybackTracker:
    def __init__(self) -> None:
        self._queue: deque[_Chunk] = deque()
        self._heard: dict[str, float] = {}
        self._names = itertools.count(1)
        self._last_ack_at = 0.0

    @property
    def audio_queued(self) -> bool:
        """True while the far end still holds audio of ours that has not been played."""
        return bool(self._queue)

    @property
    def playing_item(self) -> str | None:
        return self._queue[0].item_id if self._queue else None

    def queued_items(self) -> list[str]:
        return list(dict.fromkeys(chunk.item_id for chunk in self._queue))

    def sent(self, item_id: str, ms: float, now: float, audio: bytes = b"") -> str:
        """Register a chunk sent to the far end; returns the name of the mark to send after it."""
        name = f"a{next(self._names)}"
        self._queue.append(_Chunk(name, item_id, ms, now, audio))
        self._heard.setdefault(item_id, 0.0)
        return name

    def acknowledged(self, name: str, now: float) -> None:
        """A mark came back. Marks are echoed in order, so everything up to it was played."""
        if not any(chunk.mark == name for chunk in self._queue):
            return  # flushed by a clear, or not ours
        while self._queue:
            chunk = self._queue.popleft()
            self._heard[chunk.item_id] = self._heard.get(chunk.item_id, 0.0) + chunk.ms
            if chunk.mark == name:
                break
        self._last_ack_at = now

    def heard_ms(self, item_id: str, now: float) -> float:
        heard = self._heard.get(item_id, 0.0)
        if self._queue and self._queue[0].item_id == item_id:
            heard += self._head_heard_ms(now)
        return heard

    def _head_heard_ms(self, now: float) -> float:
        head = self._queue[0]
        playing_since = max(head.sent_at, self._last_ack_at)
        return min(max(now - playing_since, 0.0) * 1000.0, head.ms)

    def unplayed(self, now: float) -> list[Unplayed]:
        """What the far end still holds, in order; the head chunk is partly heard."""
        return [Unplayed(chunk.item_id, chunk.audio, self._head_heard_ms(now) if index == 0 else 0.0)
                for index, chunk in enumerate(self._queue)]

    def flush(self) -> None:
        """The far end's queue was cleared: pending chunks were not played."""
        self._queue.clear()

    def forget(self, item_id: str) -> None:
        self._heard.pop(item_id, None)
