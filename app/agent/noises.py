"""Sounds on the line that were not the caller speaking, left unanswered and out of the
conversation: a noise over OCTI (judged by `barge_in.py`: OCTI resumes where it was cut), and
a short sound without words while OCTI was silent (found by `turns.py`: no « Pardon ? »).
"""

from __future__ import annotations

import logging

from app.agent.barge_in import BargeInJudge
from app.agent.speaker import Speaker
from app.agent.state import CallState, Turn
from app.calllog.journal import CallJournal
from app.engines.contract import CallerWords, Engine
from app.metrics import Metrics

log = logging.getLogger(__name__)


class Noises:
    def __init__(self, *, state: CallState, judge: BargeInJudge, speaker: Speaker, engine: Engine,
                 metrics: Metrics, journal: CallJournal) -> None:
        self._state = state
        self._judge = judge
        self._speaker = speaker
        self._engine = engine
        self._metrics = metrics
        self._journal = journal

    async def over_octi(self, turn: Turn, spoken_ms: float) -> None:
        """The sound over OCTI was a noise: OCTI carries on where it was cut."""
        self._judge.noise(turn.item_id)
        self._state.forget_caller_turn(turn)
        await self._speaker.resume()
        await self._engine.discard(turn.item_id)
        log.info("a %.0f ms sound without words over OCTI was a noise: OCTI resumed", spoken_ms)
        self._metrics.false_barge_ins.inc()
        self._journal.event("false_barge_in", f"{spoken_ms:.0f} ms sans paroles", turn.start_ms)

    async def in_silence(self, turn: Turn) -> None:
        """A short sound without words while OCTI was silent: the barn, not answered."""
        await self._engine.discard(turn.item_id)
        log.info("a short sound without words was a noise: not answered")
        self._journal.event("noise_unanswered", "son bref sans paroles", turn.start_ms)

    def heard_after(self, event: CallerWords) -> None:
        """A noise's transcription is billed all the same; its words do not reopen it (barge_in.py)."""
        if event.final and event.usage:
            self._state.transcription_usage.append(event.usage)
        if event.final and event.text.strip():
            log.info("words came for a sound judged a noise; OCTI carried on")
