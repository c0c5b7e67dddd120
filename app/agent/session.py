"""One conversation between a caller's channel and a speech-to-speech engine.

Plain asyncio, no web framework: two loops (caller events, engine events), each with one
dispatch, share small state objects. The session knows neither Twilio nor any service's
protocol: it talks to a `CallChannel` and an `Engine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any

from app.agent import phrases
from app.agent.background import BackgroundTasks
from app.agent.barge_in import BargeInJudge
from app.agent.behaviours import Behaviours
from app.agent.caller_audio import CallerAudioGate
from app.agent.noises import Noises
from app.agent.recap import recap_of, text_recap
from app.agent.resilience import Resilience
from app.agent.speaker import Speaker
from app.knowledge.retrieval import Retrieval, Retriever
from app.agent.state import CallState, Turn
from app.agent.tools import ToolRunner
from app.agent.turns import KnowledgeTurns, answer_typed
from app.agent.turn_log import log_assistant_turn, log_caller_turn, log_unfinished_turns
from app.calllog.journal import CallJournal
from app.channels.contract import (
    CallChannel, CallerAudio, CallerInterrupts, CallerText, CallOutcome, ConversationReset, Digit,
    Notice, PlaybackMark, SessionReady, TurnEnded,
)
from app.config import Settings
from app.engines.contract import (
    AnswerAudio, AnswerAudioDone, AnswerDone, AnswerStarted, AnswerText, AnswerTextPiece, CallerWords, Engine,
    EngineError, SpeechStarted, SpeechStopped, ToolCall, UsageReport, Yielded,
)
from app.metrics import Metrics

log = logging.getLogger(__name__)


class CallSession:
    def __init__(
        self,
        channel: CallChannel,
        engine: Engine,
        settings: Settings,
        metrics: Metrics | None = None,
        retriever: Retriever | None = None,
        journal: CallJournal | None = None,
        engine_reached: Callable[[bool], None] = lambda reached: None,
    ) -> None:
        self._channel = channel
        self._engine = engine
        self._settings = settings
        self._metrics = metrics or Metrics()
        self._caller_audio = CallerAudioGate(channel.audio_format, engine.input_format,
                                             engine.traits.caller_audio_may_wait)
        self.state = CallState()
        retriever = retriever or Retriever(None, budget_ms=settings.rag_timeout_ms, limit=settings.rag_top_k,
                                           metrics=self._metrics)
        self._journal = journal or CallJournal(channel.identity.call_id, lambda record: None,
                                               model=settings.speech_model, prices={})
        self._recorder = self._journal.recorder
        self._speaker = Speaker(channel, engine.output_format, self.state, self._metrics, self._recorder,
                                self._journal_assistant)
        self._behaviours = Behaviours(channel=channel, engine=engine, speaker=self._speaker, state=self.state,
                                      journal=self._journal, settings=settings, interrupt=self._interrupt)
        # Client-driven engines answer when asked: with the knowledge for the caller's words
        # (RAG_MODE=inject), or as they are. Service-driven ones answer what their model heard
        # (delegating the search): a typed question, unheard, the session searches for them.
        client_turns = engine.traits.turns == "client"
        # A service-driven engine yields to the caller by itself: nothing to judge.
        self._judge = BargeInJudge(settings.barge_in_min_ms if client_turns else 0,
                                   engine.traits.speech_end_wait_ms, self._barge_in)
        self._noises = Noises(state=self.state, judge=self._judge, speaker=self._speaker, engine=engine,
                              metrics=self._metrics, journal=self._journal)
        self._knowledge = (KnowledgeTurns(engine, retriever, settings, self._metrics, self._journal_caller,
                                          self._noises.in_silence)
                           if client_turns and settings.rag_mode == "inject" else None)
        self._plain_answers = BackgroundTasks() if client_turns and self._knowledge is None else None
        self._typed_answers = None if client_turns else BackgroundTasks()
        self._retriever = retriever
        self._tools = ToolRunner(engine, retriever, self._searched_by_the_model, self._behaviours)
        self._resilience = Resilience(engine=engine, speaker=self._speaker, state=self.state, judge=self._judge,
                                      knowledge=self._knowledge, tools=self._tools, journal=self._journal,
                                      metrics=self._metrics, settings=settings, caller_format=channel.audio_format,
                                      reached=engine_reached, retriever=retriever)
        self._engine_handlers: dict[type, Callable[[Any], Any]] = {
            AnswerStarted: self._on_answer_started,
            AnswerAudio: self._speaker.audio,
            AnswerAudioDone: self._speaker.audio_done,
            AnswerTextPiece: self._speaker.words,
            AnswerText: self._on_answer_text,
            AnswerDone: self._on_answer_done,
            SpeechStarted: self._on_speech_started,
            SpeechStopped: self._on_speech_stopped,
            CallerWords: self._on_caller_words,
            Yielded: self._on_yielded,
            ToolCall: self._tools.start,
            EngineError: self._on_error,
            UsageReport: self._on_usage,
        }

    @property
    def turns(self) -> list[Turn]:
        return self.state.turns

    @property
    def barge_ins(self) -> int:
        return self.state.barge_ins

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> CallOutcome:
        """Converse until either side ends; always releases both sides."""
        self._metrics.call_started()
        outcome = CallOutcome.ERROR
        caller = asyncio.create_task(self._caller_loop(), name="caller-loop")
        model = asyncio.create_task(self._engine_loop(), name="engine-loop")
        renew = asyncio.create_task(self._resilience.renew_before_cap(), name="renew-session")
        loops = {caller, model, renew, *self._behaviours.watchers()}
        try:
            await self._channel.show(SessionReady())
            await self._engine.greet(self._greeting())
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is not None:
                    log.error("call loop failed", exc_info=task.exception())
                    self.state.outcome = CallOutcome.ERROR
            if caller in done:  # the caller's stream ended (a transfer under way may be why)
                await self._behaviours.transfer_settled()
                outcome = self.state.outcome if self.state.outcome is not None else CallOutcome.CALLER_HUNG_UP
            elif self.state.outcome is not None:
                outcome = self.state.outcome
            else:  # it could not be reached again (resilience.py)
                self._journal.event("upstream_failure", self._engine.close_reason)
                await self._channel.show(Notice(phrases.UNAVAILABLE, "unavailable"))
                outcome = CallOutcome.ERROR
            return outcome
        finally:
            for task in loops:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*loops, return_exceptions=True)
            log_unfinished_turns(self._journal, self.state, self._speaker)
            if self._knowledge is not None:
                await self._knowledge.close()
            for answers in (self._plain_answers, self._typed_answers):
                if answers is not None:
                    await answers.cancel_all()
            await self._judge.close()
            await self._tools.close()
            await self._behaviours.close()
            await self._channel.end(outcome)
            recap = await recap_of(self._engine, self.state, self._settings, self._speaker.heard_text)
            if final_usage := await self._engine.close():
                self.state.usage.append(final_usage)
            await text_recap(self._channel, recap, self.state, self._settings, self._journal)
            await self._ended(outcome, recap)

    async def _ended(self, outcome: CallOutcome, recap: str | None) -> None:
        state = self.state
        log.info("call ended: %s after %d turns, %d barge-ins", outcome.value, len(state.turns), state.barge_ins)
        try:
            await self._journal.ended(outcome.value, state.usage, turns=len(state.turns), barge_ins=state.barge_ins,
                                      transcription_usages=state.transcription_usage, recap=recap)
        finally:
            # Active until its log is handed over: "no active call" then means every call's
            # end record is queued, which shutdown and the call-log tests rely on.
            self._metrics.call_ended(outcome.value)

    def _greeting(self) -> str:
        return phrases.greeting(self._settings.agent_greeting, self._channel.identity.call_back,
                                recorded=self._recorder is not None)

    # ------------------------------------------------------------------ caller side

    async def _caller_loop(self) -> None:
        async for event in self._channel.events():
            # What reaches the engine after the audio gathered so far goes after it too. Marks,
            # sent back with every answer chunk, only touch playback.
            if type(event) not in (CallerAudio, PlaybackMark):
                await self._send_gathered()
            match event:
                case CallerAudio():
                    if audio := self._caller_audio.take(event.audio):
                        await self._resilience.send_audio(audio)
                        self._metrics.inbound_delay.observe(perf_counter() - event.received_at)
                    if self._recorder is not None:
                        self._recorder.caller_audio(event.audio)
                case PlaybackMark(name=name):
                    self._speaker.tracker.acknowledged(name, perf_counter())
                case Digit(digit=digit):
                    self.state.digits.append(digit)
                    log.info("caller pressed %s", digit)
                    self._journal.event("dtmf", digit, self.state.timeline_ms(perf_counter()))
                    self._behaviours.caller_active()
                    self._behaviours.key(digit)
                case TurnEnded():
                    await self._engine.end_turn()
                case ConversationReset():
                    await self._reset()
                case CallerText(text=text):
                    self._behaviours.caller_active()
                    await self._typed(text)
                case CallerInterrupts():
                    await self._interrupt()
        await self._send_gathered()  # all the caller said reaches the engine

    async def _send_gathered(self) -> None:
        """The caller audio gathered so far (caller_audio.py), before what comes after it."""
        if gathered := self._caller_audio.release():
            await self._resilience.send_audio(gathered)

    async def _typed(self, text: str) -> None:
        """A typed question: OCTI stops talking, as when the caller speaks, then answers it."""
        turn = self.state.caller_turn(f"typed_{len(self.state.turns)}")
        turn.text = text
        turn.start_ms = turn.end_ms = self.state.timeline_ms(perf_counter())
        self._metrics.turns.labels("caller").inc()
        await self._interrupt()
        await self._engine.add_caller_text(text)
        self._journal_caller(turn)
        previous_question = self.state.previous_question(turn)
        if self._knowledge is not None:
            self._knowledge.typed(turn, previous_question)
        elif self._typed_answers is not None:
            await self._typed_answers.cancel_all()  # a newer question replaces one still searched
            self._typed_answers.spawn(answer_typed(self._engine, self._retriever, turn, previous_question,
                                                   self._journal_caller), "typed-answer")
        else:
            await self._engine.answer()

    async def _reset(self) -> None:
        """A fresh conversation on the same channel: what is playing stops, the model forgets."""
        if self._knowledge is not None:
            self._knowledge.cancel()
        if self._typed_answers is not None:
            await self._typed_answers.cancel_all()
        await self._interrupt(counted=False)
        fresh = await self._resilience.reset()  # else the call goes on in the session it had
        await self._channel.show(SessionReady() if fresh else Notice(phrases.UNAVAILABLE, "unavailable"))

    # ------------------------------------------------------------------ engine side

    async def _engine_loop(self) -> None:
        """The engine's events, across the new sessions a dropped connection brings; ends when
        the call does, or when the engine cannot be reached again."""
        handlers = self._engine_handlers
        while True:
            async for event in self._engine.events():
                handler = handlers.get(type(event))
                if handler is not None:
                    result = handler(event)
                    if result is not None:
                        await result
                if self.state.outcome is not None:
                    return
            if not await self._resilience.recover(self._engine.close_reason):
                return

    async def _on_answer_started(self, event: AnswerStarted) -> None:
        self._speaker.answers.active = event.answer

    async def _on_answer_done(self, event: AnswerDone) -> None:
        if event.answer == self._speaker.answers.active:
            self._speaker.answers.active = None
        for item in event.items:
            turn = self.state.assistant_turns.get(item)
            if turn is not None:
                self._journal_assistant(turn)
        if event.usage:
            self.state.usage.append(event.usage)

    def _on_usage(self, event: UsageReport) -> None:
        self.state.usage.append(event.usage)

    def _on_answer_text(self, event: AnswerText) -> None:
        self.state.assistant_turn(event.item).text = event.text

    async def _on_speech_started(self, event: SpeechStarted) -> None:
        """The caller's sound over OCTI silences the caller's playback at once. Then either it
        is a barge-in now, or (BARGE_IN_MIN_MS) OCTI only pauses until we know (barge_in.py)."""
        self._behaviours.caller_sound(True)
        self._caller_audio.turn_open = True
        turn = self.state.caller_turn(event.turn)
        turn.start_ms = event.at_ms
        previous_question = self.state.previous_question(turn)
        releasing = self._knowledge is not None and self._knowledge.releasing
        if self._judge.active and (self._speaker.busy or releasing):
            if self._knowledge is not None:
                self._knowledge.follow(turn, previous_question)
            await self._speaker.pause()
            self._judge.start(event.turn)
            return
        if self._knowledge is not None:
            self._knowledge.speech_started(turn, previous_question)
        await self._interrupt()

    async def _barge_in(self) -> None:
        """The sound over OCTI is the caller taking the floor: the answer on its way goes too."""
        self._judge.settle()
        if self._knowledge is not None:
            self._knowledge.cancel_release()
        await self._interrupt()

    async def _interrupt(self, *, counted: bool = True) -> None:
        """The caller takes the floor: mute the answer under way, flush what they still hold,
        tell the engine what was heard, and cancel the answer. Only the caller's interruptions
        are `counted` as barge-ins."""
        self._judge.settle()
        interrupted = self._speaker.answers.active
        if interrupted is not None:
            self._speaker.answers.muted.add(interrupted)
        cut = await self._speaker.stop(barge_in=counted)
        if cut is not None:
            if cut.playing is not None:
                await self._engine.cut(cut.playing, cut.heard_ms)
            for item in cut.unheard:
                await self._engine.discard(item)
        if interrupted is not None:
            await self._engine.cancel()

    async def _on_yielded(self, event: Yielded) -> None:
        """The engine stopped speaking for the caller: what the caller still holds must go. It
        is their barge-in even when they had heard it all and nothing was left to clear."""
        self._speaker.answers.muted.add(event.answer)
        cut = await self._speaker.stop()
        if (cut is None or cut.playing is None) and event.item:
            self._speaker.yielded(event.item)

    async def _on_speech_stopped(self, event: SpeechStopped) -> None:
        self._behaviours.caller_sound(False)
        self._caller_audio.turn_open = False
        turn = self.state.caller_turn(event.turn)
        if self._judge.judging(event.turn):
            if not self._judge.is_speech(event.spoken_ms, turn.text):
                if self._knowledge is not None:
                    self._knowledge.dismiss(turn)
                await self._noises.over_octi(turn, event.spoken_ms)
                return
            await self._barge_in()
        turn.end_ms = self.state.speech_end_ms = event.at_ms
        self._metrics.turns.labels("caller").inc()
        self._journal_caller(turn)
        if self._knowledge is not None:
            self._knowledge.speech_stopped(turn, event.spoken_ms)
        elif self._plain_answers is not None:
            self._plain_answers.spawn(self._engine.answer(), "answer")

    async def _on_caller_words(self, event: CallerWords) -> None:
        """Words of a caller turn as the transcription gives them: pieces while they speak with
        a streaming model, then (or only) the whole text. Words over OCTI are a barge-in."""
        if self._judge.was_noise(event.turn):
            self._noises.heard_after(event)
            return
        turn = self.state.caller_turn(event.turn)
        if event.text.strip():
            self._behaviours.caller_active()
        if event.final:
            turn.text = event.text
            if event.usage:
                self.state.transcription_usage.append(event.usage)
            self._journal_caller(turn)
        else:
            turn.text += event.text
        if self._knowledge is not None:
            self._knowledge.words(turn, final=event.final)
        if self._judge.judging(event.turn) and turn.text.strip():
            await self._barge_in()

    def _searched_by_the_model(self, retrieval: Retrieval) -> None:
        turn = self.state.last_caller_turn()
        if turn is not None:
            turn.retrieval = retrieval
            self._journal_caller(turn)

    async def _on_error(self, event: EngineError) -> None:
        self._metrics.engine_errors.labels(event.code or "unknown").inc()
        if event.code == "transcription_failed":
            # Nothing waits for the text: the model heard the audio and the answer went on without it.
            log.warning("caller transcription failed: %s", event.message)
            self._journal.event("transcription_failed", event.message)
            return
        # A fatal one ends the engine's events: the engine loop reconnects.
        log.warning("engine error %s: %s", event.code, event.message)
        self._journal.event("model_error", f"{event.code}: {event.message}")

    # ------------------------------------------------------------------ call log

    def _journal_caller(self, turn: Turn) -> None:
        log_caller_turn(self._journal, turn)

    def _journal_assistant(self, turn: Turn) -> None:
        log_assistant_turn(self._journal, turn, self._speaker.answers.generated_ms.get(turn.item_id, 0.0))
