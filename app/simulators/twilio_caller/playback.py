"""Twilio's outbound audio buffer: what the caller hears of the server's audio, tick by tick,
with Twilio's mark and clear semantics."""

from __future__ import annotations

from collections import deque

from app.simulators import twilio_wire as wire
from app.simulators.twilio_caller.records import Burst, Clear
from app.simulators.twilio_wire import BYTES_PER_MS, FRAME_BYTES, SILENCE_FRAME

# A burst survives underruns shorter than this: a server pacing audio in real time leaves
# the queue empty for a frame or two now and then, and that is still the same answer.
BURST_GAP_MS = 200


class Playback:
    """Twilio's outbound audio buffer, advanced one 20 ms tick at a time.

    Payloads queue up; each tick plays up to 160 bytes (silence pads a short frame). A mark
    is due once every byte queued before it has been played (immediately if nothing is
    queued); `clear` drops the queue and releases every pending mark.
    """

    def __init__(self, gap_ms: float = BURST_GAP_MS) -> None:
        self._buf = bytearray()
        self._head = 0
        self.queued_total = 0
        self.played_total = 0
        self._marks: deque[tuple[int, str]] = deque()
        self.bursts: list[Burst] = []
        self.clears: list[Clear] = []
        self.current: Burst | None = None
        self.last_audio_end_ms: float | None = None
        self.discarded_bytes = 0
        self._gap_ms = gap_ms
        self._ran_dry = False

    @property
    def backlog(self) -> int:
        return self.queued_total - self.played_total

    @property
    def idle(self) -> bool:
        return self.backlog == 0

    def append(self, payload: bytes) -> int:
        """Queue audio; returns how many bytes were refused for exceeding Twilio's ~10 min buffer."""
        room = max(0, wire.PLAYBACK_LIMIT_BYTES - self.backlog)
        accepted = payload[:room]
        self._buf += accepted
        self.queued_total += len(accepted)
        refused = len(payload) - len(accepted)
        self.discarded_bytes += refused
        return refused

    def add_mark(self, name: str) -> bool:
        """Queue a mark; True when it is due right away (nothing left to play)."""
        if self.idle:
            return True
        self._marks.append((self.queued_total, name))
        return False

    def due_marks(self) -> list[str]:
        due = []
        while self._marks and self._marks[0][0] <= self.played_total:
            due.append(self._marks.popleft()[1])
        return due

    def play(self, tick_ms: int) -> bytes:
        """The 160 bytes heard during the tick starting at `tick_ms`."""
        n = min(FRAME_BYTES, self.backlog)
        chunk = bytes(self._buf[self._head:self._head + n])
        self._head += n
        if self._head > 65536 and self._head * 2 > len(self._buf):
            del self._buf[:self._head]  # compact now and then rather than on every tick
            self._head = 0
        self.played_total += n
        if n:
            if self.current is None:
                self.current = Burst(index=len(self.bursts), start_t=tick_ms / 1000)
                self.bursts.append(self.current)
            elif self._ran_dry:
                self.current.underruns += 1
            self.current.played_ms += n / BYTES_PER_MS
            self.last_audio_end_ms = tick_ms + n / BYTES_PER_MS
        elif self.current is not None and tick_ms - (self.last_audio_end_ms or 0) >= self._gap_ms:
            self._end_burst("drained")
        self._ran_dry = n < FRAME_BYTES
        return chunk + SILENCE_FRAME[n:]

    def clear(self, t: float) -> Clear:
        flushed = self.backlog
        self._buf.clear()
        self._head = 0
        self.queued_total = self.played_total
        marks = [name for _, name in self._marks]
        self._marks.clear()
        burst = self.current
        record = Clear(t=t, burst=burst.index if burst else None,
                       played_ms=burst.played_ms if burst else 0.0,
                       flushed_ms=flushed / BYTES_PER_MS, marks=marks)
        if burst is not None:
            self._end_burst("clear")
        self.clears.append(record)
        return record

    def finish(self, reason: str) -> None:
        """The stream ended: close the burst in progress."""
        if self.current is not None:
            self._end_burst(reason if self.backlog else "drained")

    def _end_burst(self, reason: str) -> None:
        assert self.current is not None
        self.current.end_t = (self.last_audio_end_ms or 0) / 1000
        self.current.ended_by = reason
        self.current = None
        self._ran_dry = False
