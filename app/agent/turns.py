"""RAG_MODE=inject: the model answers when we ask, with the passages for what the caller said.

While the caller speaks, their streamed words are searched as they come (`TurnRetrieval`).
When they stop, the answer is released within RAG_HOLD_MS: with the search of all their
words if it finished by then, else the newest one that did (none yet: the one under way, which
RAG_TIMEOUT_MS bounds). With no words at all (a transcription that only comes after the turn),
the answer goes at once with the search tool: the model heard the question and searches itself. A barge-in before the answer went out
cancels that turn's work; a sound that may be noise leaves it alone until it proves to be speech.
A sound shorter than BARGE_IN_MIN_MS whose transcript comes complete without a word (within
NOISE_VERDICT_SECONDS) is the barn, not the caller: it is not answered (`on_noise`), as a noise
over OCTI is not (barge_in.py). Otherwise every clang in a silence would get « Pardon ? ».

A typed question waits for its search (`answer_typed`): the session answers typed questions so
for engines that take their own turns too, whose model delegates only what it heard.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from time import perf_counter

from app.agent.rag import (
    SEARCH_TOOL,
    TurnRetrieval,
    instructions_with_search_tool,
    knowledge_context,
    retrieval_query,
)
from app.knowledge.retrieval import Retrieval, Retriever
from app.agent.state import KnowledgeTurnState, Turn
from app.agent.tools import call_tools, with_call_tools
from app.config import Settings
from app.engines.contract import Engine
from app.metrics import Metrics

# How long a short sound's release waits for its complete transcript to tell a noise from a word.
NOISE_VERDICT_SECONDS = 0.5


class KnowledgeTurns:
    def __init__(self, engine: Engine, retriever: Retriever, settings: Settings, metrics: Metrics,
                 record: Callable[[Turn], None], on_noise: Callable[[Turn], Awaitable[None]]) -> None:
        self._engine = engine
        self._retriever = retriever
        self._settings = settings
        self._metrics = metrics
        self._record = record  # the caller turn changed: log it
        self._on_noise = on_noise  # the turn was a noise: left unanswered
        self._state = KnowledgeTurnState()

    @property
    def releasing(self) -> bool:
        """An answer is on its way out (its passages being awaited, or asked for)."""
        return self._state.release is not None and not self._state.release.done()

    def speech_started(self, turn: Turn, previous_question: str | None) -> None:
        """The caller took the floor: the previous turn's work goes, this turn's words are followed."""
        self.cancel()
        self.follow(turn, previous_question)

    def follow(self, turn: Turn, previous_question: str | None) -> None:
        """Search this turn's words as they come, leaving the answer on its way alone."""
        state = self._state
        if state.following is not None:
            state.following.close()
        state.following = TurnRetrieval(self._retriever, previous_question)
        state.following_turn = turn.item_id

    def dismiss(self, turn: Turn) -> None:
        """The turn was a noise: its words are not followed any more."""
        state = self._state
        if state.following is not None and state.following_turn == turn.item_id:
            state.following.close()
            state.following, state.following_turn = None, ""

    def words(self, turn: Turn, *, final: bool) -> None:
        state = self._state
        following = state.following if state.following_turn == turn.item_id else state.releasing.get(turn.item_id)
        if following is not None:
            following.heard(turn.text, final=final)

    def speech_stopped(self, turn: Turn, spoken_ms: float) -> None:
        stopped_at = perf_counter()
        state = self._state
        following = state.following if state.following_turn == turn.item_id else None
        state.following, state.following_turn = None, ""
        self.cancel()
        if following is not None:  # words still coming in go to the turn being released
            state.releasing[turn.item_id] = following
        state.release = asyncio.create_task(self._release(turn, following, spoken_ms, stopped_at), name="rag-answer")

    def typed(self, turn: Turn, previous_question: str | None) -> None:
        """A typed question: no hold to keep short, so the answer waits for its search."""
        self.cancel()
        self._state.release = asyncio.create_task(self._answer_typed(turn, previous_question), name="rag-typed")

    async def _answer_typed(self, turn: Turn, previous_question: str | None) -> None:
        await answer_typed(self._engine, self._retriever, turn, previous_question, self._record)

    def cancel_release(self) -> None:
        """A barge-in before the answer went out: the caller is still talking, that answer goes."""
        state = self._state
        if state.release is not None and not state.release.done():
            state.release.cancel()
        state.release = None

    def cancel(self) -> None:
        """Drop the work of the turn being answered and of the turn being followed."""
        state = self._state
        self.cancel_release()
        if state.following is not None:
            state.following.close()
            state.following = None

    async def close(self) -> None:
        release = self._state.release
        self.cancel()
        if release is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(release, return_exceptions=True)

    async def _release(self, turn: Turn, following: TurnRetrieval | None, spoken_ms: float, stopped_at: float) -> None:
        retrieval: Retrieval | None = None
        if following is not None:
            try:
                retrieval = await following.settle(self._settings.rag_hold_ms / 1000)
                if (retrieval is None and spoken_ms < self._settings.barge_in_min_ms
                        and await following.wordless(NOISE_VERDICT_SECONDS)):
                    await self._on_noise(turn)
                    return
            finally:
                following.close()
                self._state.releasing.pop(turn.item_id, None)
        if retrieval is None and self._settings.rag_fallback == "tool":
            self._metrics.turns_searched_by_the_model.inc()
            # Tools given with a response replace the session's: the call tools come too.
            instructions = with_call_tools(instructions_with_search_tool(self._settings.agent_instructions),
                                           self._settings)
            await self._engine.answer(instructions=instructions, tools=[SEARCH_TOOL, *call_tools(self._settings)])
        else:
            turn.retrieval = retrieval or Retrieval(following.query if following else "", "timeout",
                                                    error="no words before the hold ended")
            self._record(turn)
            await self._engine.answer(context=knowledge_context(turn.retrieval))
        self._metrics.turn_hold.observe(perf_counter() - stopped_at)


async def answer_typed(engine: Engine, retriever: Retriever, turn: Turn, previous_question: str | None,
                       record: Callable[[Turn], None]) -> None:
    """A typed question answered with its passages, recorded on its turn: no hold to keep short,
    the answer waits for its search."""
    turn.retrieval = await retriever.retrieve(retrieval_query(previous_question, turn.text))
    record(turn)
    await engine.answer(context=knowledge_context(turn.retrieval))
