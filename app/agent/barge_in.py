"""Whether a sound over OCTI is the caller taking the floor, or a noise of the barn.

With BARGE_IN_MIN_MS above 0, a sound while OCTI speaks (or is about to) only pauses OCTI:
the caller's playback is cleared at once, and the speaker holds what they did not hear. The
sound is a barge-in as soon as words of it are recognised, or once it has lasted
BARGE_IN_MIN_MS: told by the engine's end of speech, or by the lack of one when that long
plus the silence the engine waits before reporting it have passed. A sound that ends shorter,
without words, was a noise: OCTI resumes where it was cut, and the noise's turn leaves the
conversation unanswered.

Words transcribed after a turn was judged a noise do not reopen it: OCTI has resumed, and a
short « oui » over OCTI is the caller listening, not taking the floor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Interruption:
    """A sound over OCTI being judged: its caller turn and the timer that confirms it."""

    turn: str
    timer: asyncio.Task[None]


class BargeInJudge:
    """One call's interruptions under judgement; the engine reports one caller turn at a time."""

    def __init__(self, min_ms: int, end_wait_ms: float, confirm: Callable[[], Awaitable[None]]) -> None:
        self.min_ms = min_ms
        self._lasted_s = (min_ms + end_wait_ms) / 1000
        self._confirm = confirm  # the session's: the interruption is a barge-in
        self._pending: Interruption | None = None
        self._confirming: asyncio.Task[None] | None = None
        self._noises: set[str] = set()  # turns judged noise

    @property
    def active(self) -> bool:
        """0 ms: every interruption is a barge-in at once, nothing is judged."""
        return self.min_ms > 0

    def judging(self, turn: str) -> bool:
        return self._pending is not None and self._pending.turn == turn

    def was_noise(self, turn: str) -> bool:
        return turn in self._noises

    def is_speech(self, spoken_ms: float, words: str) -> bool:
        return spoken_ms >= self.min_ms or bool(words.strip())

    def start(self, turn: str) -> None:
        self.settle()
        self._pending = Interruption(turn, asyncio.create_task(self._lasted(), name="barge-in-timer"))
        self._confirming = self._pending.timer

    async def _lasted(self) -> None:
        """Not over by now: the sound lasted BARGE_IN_MIN_MS at least."""
        await asyncio.sleep(self._lasted_s)
        self._pending = None  # judged: nothing may cancel the confirmation now
        await self._confirm()

    def settle(self) -> None:
        """The verdict is in, or moot: the timer stops."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.timer.cancel()

    def noise(self, turn: str) -> None:
        self.settle()
        self._noises.add(turn)

    async def close(self) -> None:
        self.settle()
        if self._confirming is not None:
            self._confirming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(self._confirming, return_exceptions=True)
