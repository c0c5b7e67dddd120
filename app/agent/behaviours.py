"""How a conversation is steered or ended besides talking, whatever the channel: its time
limit, the keypad, and the caller's silence.

Each way out ends the same way: OCTI stops what it is saying, says goodbye, and the
conversation ends once the caller has heard the goodbye (`finished` is set, with the outcome
in the call state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from time import perf_counter

from app.agent import phrases
from app.agent.background import BackgroundTasks
from app.agent.speaker import Speaker
from app.agent.state import CallState
from app.calllog.journal import CallJournal
from app.channels.contract import CallChannel, CallOutcome, Notice
from app.config import Settings
from app.engines.contract import Engine

log = logging.getLogger(__name__)

# OCTI says the end is this near (a quarter of the limit for limits under four minutes).
LIMIT_WARNING_SECONDS = 60.0
GOODBYE_TIMEOUT_SECONDS = 10.0
TRANSFER_SETTLE_SECONDS = 15.0
# How often a call's silence is looked at: its precision, for a wake-up per call per second.
SILENCE_CHECK_SECONDS = 1.0


class Behaviours:
    def __init__(self, *, channel: CallChannel, engine: Engine, speaker: Speaker, state: CallState,
                 journal: CallJournal, settings: Settings, interrupt: Callable[..., Awaitable[None]]) -> None:
        self._channel = channel
        self._engine = engine
        self._speaker = speaker
        self._state = state
        self._journal = journal
        self._settings = settings
        self._interrupt = interrupt  # the session's: mute, flush, cut and cancel what OCTI says
        self._keys = settings.dtmf_actions
        self.finished = asyncio.Event()
        # One way out at a time: another one waits for it (a transfer may fail and the call go
        # on), then does nothing once the conversation has finished.
        self._ending = asyncio.Lock()
        self._transferring = False  # the channel's transfer request is under way
        self._running = BackgroundTasks()
        self._caller_at = self._octi_at = perf_counter()
        self._caller_speaking = False

    def watchers(self) -> list[asyncio.Task[None]]:
        """The tasks that end a conversation by themselves; the session runs them with its loops."""
        tasks = [asyncio.create_task(self.finished.wait(), name="finished")]
        if self._channel.max_seconds is not None:
            tasks.append(asyncio.create_task(self._time_limit(self._channel.max_seconds), name="time-limit"))
        if self._settings.silence_prompt_seconds > 0:
            tasks.append(asyncio.create_task(self._silence(), name="silence"))
        return tasks

    async def close(self) -> None:
        await self._running.cancel_all()

    # ------------------------------------------------------------------ ending

    async def end(self, goodbye: str, outcome: CallOutcome, notice: Notice | None = None, *,
                  cut_short: bool = True) -> None:
        """Stop what OCTI is saying (unless not `cut_short`: it is heard to the end), say
        `goodbye`, end once the caller has heard it (or GOODBYE_TIMEOUT_SECONDS later, e.g.
        when they talk over it)."""
        async with self._ending:
            if self.finished.is_set():
                return
            if cut_short:
                await self._interrupt(counted=False)
            if not await self._say_until_heard(goodbye):
                log.info("ending without knowing the goodbye was heard")
            if notice is not None:
                await self._channel.show(notice)
            self._state.outcome = outcome
            self.finished.set()

    async def _time_limit(self, max_seconds: float) -> None:
        lead = min(LIMIT_WARNING_SECONDS, max_seconds / 4)
        started = perf_counter()
        await asyncio.sleep(max_seconds - lead)
        await self._engine.greet(phrases.limit_warning(round(lead)))
        await asyncio.sleep(max(0.0, started + max_seconds - perf_counter()))
        log.info("the conversation reached its %d s limit", max_seconds)
        self._journal.event("time_limit", f"{max_seconds:.0f} s")
        await self.end(phrases.TIME_UP_GOODBYE, CallOutcome.TIMEOUT, Notice(phrases.LIMIT_REACHED, "time_limit"))

    async def _say_until_heard(self, text: str) -> bool:
        """Say `text`; True once the caller heard it all, False after GOODBYE_TIMEOUT_SECONDS."""
        sent_before = set(self._speaker.answers.sent)
        await self._engine.greet(text)
        return await self._speaker.heard(sent_before, GOODBYE_TIMEOUT_SECONDS)

    async def end_call(self) -> None:
        """The model's end_call: what OCTI is saying is heard to the end, then goodbye."""
        self._journal.event("agent_ended", "end_call")
        await self.end(phrases.GOODBYE, CallOutcome.AGENT_ENDED, cut_short=False)

    # ------------------------------------------------------------------ a person

    async def transfer(self, summary: str) -> str | None:
        """Hand the caller to an advisor: OCTI says so, the caller hears it, the channel
        transfers. None once the call has left; else why not (French), and the call goes on."""
        refusal = self._channel.transfer_unavailable()
        if refusal is None and not self._settings.opening_hours.open_at(datetime.now(UTC)):
            refusal = phrases.ADVISORS_CLOSED
        if refusal is None and (self._ending.locked() or self.finished.is_set()):
            refusal = phrases.TRANSFER_FAILED
        if refusal is not None:
            self._journal.event("transfer_refused", refusal)
            return refusal
        async with self._ending:
            summary = summary or self._state.previous_question() or ""
            self._journal.event("transfer", summary)
            await self._say_until_heard(phrases.TRANSFERRING)
            self._transferring = True
            try:
                failure = await self._channel.transfer(summary)
            finally:
                self._transferring = False
            if failure is not None:
                self._journal.event("transfer_failed", failure)
                return failure
            self._state.outcome = CallOutcome.TRANSFERRED
            self.finished.set()
            return None

    async def transfer_settled(self) -> None:
        """The caller's stream ended. A transfer under way may be why: its redirect ends the
        stream, and the stream's end can come before the channel's answer. Wait for that
        answer (at most TRANSFER_SETTLE_SECONDS), so that the transfer's outcome stands."""
        if not self._transferring:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TRANSFER_SETTLE_SECONDS), self._ending:
                pass

    def recap_by_sms(self) -> str | None:
        refusal = self._channel.texts_unavailable()
        if refusal is None:
            self._state.recap_by_sms = True
            self._journal.event("sms_recap_accepted", "")
        return refusal

    # ------------------------------------------------------------------ the keypad

    def key(self, digit: str) -> None:
        """A key the caller pressed (already logged): its action, if it has one."""
        action = self._keys.get(digit)
        if action == "end":
            self._journal.event("caller_ended", f"touche {digit}")
            self._running.spawn(self.end(phrases.GOODBYE, CallOutcome.AGENT_ENDED), "key-end")
        elif action == "repeat":
            self._running.spawn(self._repeat(), "key-repeat")
        elif action == "person":
            self._running.spawn(self._person(), "key-person")

    async def _repeat(self) -> None:
        said = next((turn.text for turn in reversed(self._state.turns)
                     if turn.role == "assistant" and turn.text and not turn.interrupted), None)
        await self._interrupt(counted=False)
        await self._engine.greet(said or phrases.NOTHING_TO_REPEAT)

    async def _person(self) -> None:
        self._journal.event("person_requested", "touche")
        await self._interrupt(counted=False)
        refusal = await self.transfer("")
        if refusal is not None:
            await self._engine.greet(f"{refusal} {phrases.STILL_LISTENING}")

    # ------------------------------------------------------------------ silence

    def caller_active(self) -> None:
        """The caller said words, typed or pressed a key. A sound alone is not the caller: the
        barn's noises would keep a phone left off the hook talking."""
        self._caller_at = perf_counter()

    def caller_sound(self, speaking: bool) -> None:
        """A sound on the line started (`speaking`) or ended: no prompt while it lasts."""
        self._caller_speaking = speaking

    async def _silence(self) -> None:
        """SILENCE_PROMPT_SECONDS after OCTI finished with no word from the caller: « Vous êtes
        toujours là ? »; SILENCE_GOODBYE_SECONDS more: goodbye."""
        prompted_at: float | None = None
        while True:
            await asyncio.sleep(SILENCE_CHECK_SECONDS)
            now = perf_counter()
            if self._speaker.answers.active is not None or self._speaker.tracker.audio_queued:
                self._octi_at = now
            if self._caller_speaking:
                continue
            if prompted_at is not None and self._caller_at > prompted_at:
                prompted_at = None  # they answered the prompt
            wait = self._settings.silence_prompt_seconds if prompted_at is None else self._settings.silence_goodbye_seconds
            if now - max(self._caller_at, self._octi_at) < wait:
                continue
            if prompted_at is None:
                self._journal.event("silence_prompt", f"{wait:.0f} s")
                await self._engine.greet(phrases.STILL_THERE)
                prompted_at = self._octi_at = perf_counter()
            else:
                self._journal.event("silence_goodbye", f"{wait:.0f} s")
                await self.end(phrases.SILENCE_GOODBYE, CallOutcome.TIMEOUT)
                return
