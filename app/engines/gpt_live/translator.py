"""GPT-Live's server events (`openai.types.live`) as the engine contract's, as pure translation:
`LiveTranslator` is fed each event and the time, and says what the session hears.

How the server's events map onto the contract
  The primary WebSocket has no speech-started/stopped events, for either side: turns are read
  from the audio and the transcripts' session timeline (`start_ms`/`end_ms`).
  * The model starts speaking: the first `session.output_audio.delta` with sound in it
    (`LOUD_RMS`) while no answer is open → `AnswerStarted`, then `AnswerAudio` for it and for
    every delta until the answer ends (pauses inside an answer included). Deltas of digital
    silence between answers are dropped: some servers stream silence continuously.
  * The model stops: no sound for `QUIET_MS` (silent deltas, or none at all, checked by
    `tick`) → `AnswerAudioDone`, `AnswerDone(completed)`.
  * The model yields to the caller: it goes quiet for `YIELD_QUIET_MS` (longer than a pause
    between its sentences) while the caller is talking (their audio, as the engine sends it,
    loud within `YIELD_WINDOW_MS`, or their words coming in as `session.input_transcript.delta`);
    the quiet audio meanwhile is held back, and dropped → `AnswerAudioDone`, `Yielded`
    (the session flushes what the caller's line still holds and records what was heard),
    `AnswerDone(cancelled)`. The model decided: nothing is sent back.
  * The caller: `session.input_transcript.delta` opens a caller turn (`SpeechStarted` at its
    `start_ms`, held back while the model is still talking over them: the model, not the first
    word, decides that it was an interruption) and adds `CallerWords` pieces; the turn closes
    when the model answers or delegates (`SpeechStopped` at the last word's `end_ms`, then the
    whole text as final `CallerWords`), or once they and the model were quiet `CALLER_QUIET_MS`
    (words the model lets pass, « attendez… », end a turn too).
  * Delegation: `session.delegation.created` with target `client` → `ToolCall` named after the
    tool the caller's words (in reply to the model's latest) call for (`delegation.route`), its
    call id the delegation id. The event says not what about: the caller's latest words, kept
    once their turn closed (the model may speak before it delegates, or delegate twice).
  * Usage: `session.usage.updated` (cumulative) and the final usage of `session.closed` →
    `UsageReport` with what was billed since the last report (`live_usage`), so that reports
    add up: active seconds, and paused (standby) seconds where the server reports the split.
  * Errors: `error` → `EngineError` (fatal for `FATAL_ERRORS`); `session.closed` for any
    reason but our own close → a fatal `EngineError` (`session_expired` for `expired`), so the
    call carries on in a new session.
  * The model's words (`session.output_transcript.delta`) → `AnswerTextPiece` of the answer
    open; an audio chunk's words may come before it (the primary WebSocket's audio has no
    timeline to place them by): those that come while no answer is open are the next answer's.
  * A fixture: its audio comes as `session.output_audio.delta` like the model's, an answer as
    above, and it has no transcript: the answer it opens gets the clip's text (`fixture_text`)
    as its `AnswerTextPiece`. Between `session.output_audio.fixture.playing` and `.played` the
    service drops the caller's audio: their sound then is no reason for the answer to yield.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from app.audio.g711 import ulaw_level
from app.calllog.cost import LIVE_USAGE
from app.engines.contract import (
    AnswerAudio, AnswerAudioDone, AnswerDone, AnswerStarted, AnswerTextPiece, CallerWords, EngineError, EngineEvent,
    SpeechStarted, SpeechStopped, ToolCall, UsageReport, Yielded,
)
from app.engines.gpt_live.delegation import route

# PCM16 RMS above which a delta carries sound (-50 dBFS): μ-law idle codes sit far below.
LOUD_RMS = 100
# Sound-free time after which the model has finished speaking; while the caller talks, a
# shorter one (longer than the pauses between its sentences) says it gave them the floor.
QUIET_MS = 600.0
YIELD_QUIET_MS = 400.0
# The model going quiet this soon after the caller's last sound or word is yielding to them.
YIELD_WINDOW_MS = 500.0
# Without the caller's sound or words this long (more than a pause), the model silent, their turn is over.
CALLER_QUIET_MS = 1500.0
FATAL_ERRORS = {"session_expired", "invalid_api_key"}

def live_usage(usage: dict[str, Any], before: dict[str, float]) -> dict[str, float]:
    """What a cumulative `SessionUsage` adds to `before` (updated in place): seconds, and of them
    active and paused (standby) seconds; without the split every second counts as active."""
    seconds = _number(usage.get("seconds"))
    paused = _number(usage.get("paused_seconds"))
    active = _number(usage.get("active_seconds")) if "active_seconds" in usage else seconds - paused
    now = {"seconds": seconds, "active_seconds": active, "paused_seconds": paused}
    added = {key: round(max(value - before.get(key, 0.0), 0.0), 3) for key, value in now.items()}
    before.update({key: max(value, before.get(key, 0.0)) for key, value in now.items()})
    return {"type": LIVE_USAGE, **added}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else 0.0


@dataclass(slots=True)
class _CallerTurn:
    id: str
    start_ms: float
    end_ms: float
    text: str = ""
    announced: bool = False  # SpeechStarted sent


@dataclass(slots=True)
class _Answer:
    id: str
    item: str
    last_sound_at: float
    overlapped: bool = False  # the caller spoke while it played
    held: list[bytes] = field(default_factory=list)  # quiet audio while the caller talks


@dataclass(slots=True)
class LiveTranslator:
    """Server events → contract events, for one service session. `now` arguments are
    perf_counter() seconds, passed in so that the translation stays pure."""

    prefix: str = "live"  # ids stay unique across the sessions of one call
    answers: int = 0
    turns: int = 0
    answer: _Answer | None = None
    caller: _CallerTurn | None = None
    model_said: str = ""  # the words of the model's latest answer: what the caller replies to
    asked: str = ""  # the caller's latest words, what a delegation is about until newer ones come
    asked_after: str = ""  # the model's words they replied to
    words_ahead: str = ""  # the model's words come before its voice: the next answer's
    usage: dict[str, float] = field(default_factory=dict)
    closed_by_us: bool = False
    caller_heard_at: float = float("-inf")  # the caller's last sound or word
    fixture_text: str | None = None  # what the fixture on its way says, for the answer it opens
    fixture_playing: bool = False

    def translate(self, event: dict[str, Any], now: float) -> list[EngineEvent]:
        """The contract's events for one server event (malformed fields raise KeyError, TypeError
        or ValueError: the engine drops the event)."""
        kind = event["type"]
        if kind == "session.output_audio.delta":
            return self._audio(base64.b64decode(event["delta"], validate=True), now)
        if kind == "session.output_transcript.delta":
            return self._model_words(str(event["delta"]))
        if kind == "session.input_transcript.delta":
            return self._caller_words(str(event["delta"]), float(event["start_ms"]), float(event["end_ms"]), now)
        if kind == "session.delegation.created":
            return self._delegation(event["delegation"])
        if kind == "session.output_audio.fixture.playing":
            self.fixture_playing = True
            return []
        if kind == "session.output_audio.fixture.played":
            self.fixture_playing = False
            return []
        if kind == "session.usage.updated":
            return [UsageReport(live_usage(event["usage"], self.usage))]
        if kind == "session.closed":
            return self._closed(event)
        if kind == "error":
            error = event.get("error") or {}
            code = str(error.get("code") or "")
            return [EngineError(code, str(error.get("message") or ""), fatal=code in FATAL_ERRORS)]
        return []

    def tick(self, now: float) -> list[EngineEvent]:
        """Time passed without a server event: the model may have stopped speaking, or the caller."""
        if self.answer is not None:
            return self._end_if_quiet(now)
        return self._close_caller_turn() if (now - self.caller_heard_at) * 1000 >= CALLER_QUIET_MS else []

    # -- the model's voice

    def _audio(self, audio: bytes, now: float) -> list[EngineEvent]:
        loud = ulaw_level(audio) >= LOUD_RMS
        answer = self.answer
        if answer is None:
            if not loud:
                return []  # silence between answers
            events = self._close_caller_turn()
            self.answers += 1
            answer = self.answer = _Answer(f"{self.prefix}_answer_{self.answers}",
                                           f"{self.prefix}_item_{self.answers}", now)
            events += [AnswerStarted(answer.id), AnswerAudio(answer.id, answer.item, audio, now)]
            if self.fixture_text is not None:
                events.append(AnswerTextPiece(answer.item, self.fixture_text))
                self.fixture_text = None
            self.model_said, ahead, self.words_ahead = "", self.words_ahead, ""
            return events + self._model_words(ahead) if ahead else events
        if loud:  # a pause held back was only a pause: the caller hears it, then the rest
            answer.last_sound_at = now
            events: list[EngineEvent] = [AnswerAudio(answer.id, answer.item, held, now) for held in answer.held]
            answer.held.clear()
            return events + [AnswerAudio(answer.id, answer.item, audio, now)]
        if self._caller_talking(now):
            answer.held.append(audio)  # quiet while the caller talks: maybe yielding, maybe a pause
            return self._end_if_quiet(now)
        ended = self._end_if_quiet(now)
        return ended or [AnswerAudio(answer.id, answer.item, audio, now)]  # a pause within the answer

    def _model_words(self, text: str) -> list[EngineEvent]:
        if self.answer is None:
            self.words_ahead += text
            return []
        self.model_said += text
        return [AnswerTextPiece(self.answer.item, text)]

    def _caller_talking(self, now: float) -> bool:
        answer = self.answer
        return answer is not None and answer.overlapped and (now - self.caller_heard_at) * 1000 <= YIELD_WINDOW_MS

    def _end_if_quiet(self, now: float) -> list[EngineEvent]:
        answer = self.answer
        assert answer is not None
        quiet_ms = (now - answer.last_sound_at) * 1000
        if quiet_ms >= (YIELD_QUIET_MS if self._caller_talking(now) else QUIET_MS):
            return self._end_answer(now)
        return []

    def _end_answer(self, now: float) -> list[EngineEvent]:
        answer, self.answer = self.answer, None
        if answer is None:
            return []
        events: list[EngineEvent] = [AnswerAudioDone(answer.id, answer.item)]
        if answer.overlapped and (now - self.caller_heard_at) * 1000 <= YIELD_WINDOW_MS:
            events += [Yielded(answer.id, answer.item), AnswerDone(answer.id, "cancelled", (answer.item,), detail="yielded")]
        else:
            events.append(AnswerDone(answer.id, "completed", (answer.item,)))
        caller = self.caller
        if caller is not None and not caller.announced:  # held back while the model talked over them
            caller.announced = True
            events.append(SpeechStarted(caller.id, caller.start_ms))
        return events

    # -- the caller

    def _caller_words(self, text: str, start_ms: float, end_ms: float, now: float) -> list[EngineEvent]:
        events: list[EngineEvent] = []
        caller = self.caller
        if caller is None:
            self.turns += 1
            caller = self.caller = _CallerTurn(f"{self.prefix}_turn_{self.turns}", start_ms, end_ms)
            if self.answer is None:
                caller.announced = True
                events.append(SpeechStarted(caller.id, start_ms))
        self.caller_sound(now)
        caller.text += text
        caller.end_ms = max(caller.end_ms, end_ms)
        events.append(CallerWords(caller.id, text, final=False))
        return events

    def caller_sound(self, now: float) -> None:
        """The caller is making sound (their audio, as we send it, or their words): the model
        going quiet now is giving them the floor. Not while a fixture plays: the service
        drops their audio meanwhile."""
        if self.fixture_playing:
            return
        self.caller_heard_at = now
        if self.answer is not None:
            self.answer.overlapped = True

    def _close_caller_turn(self) -> list[EngineEvent]:
        caller, self.caller = self.caller, None
        if caller is None:
            return []
        words = " ".join(caller.text.split())
        if words:
            self.asked, self.asked_after = words, self.model_said
        events: list[EngineEvent] = [] if caller.announced else [SpeechStarted(caller.id, caller.start_ms)]
        spoken = max(caller.end_ms - caller.start_ms, 0.0)
        return events + [SpeechStopped(caller.id, caller.end_ms, spoken), CallerWords(caller.id, words, final=True)]

    # -- delegation, end

    def _delegation(self, delegation: dict[str, Any]) -> list[EngineEvent]:
        if delegation["target"] != "client":
            return []
        events = self._close_caller_turn()
        name, arguments = route(self.asked, self.asked_after)
        return events + [ToolCall(str(delegation["id"]), name, arguments)]

    def _closed(self, event: dict[str, Any]) -> list[EngineEvent]:
        events: list[EngineEvent] = [UsageReport(live_usage(event["usage"], self.usage))]
        reason = str(event["reason"])
        if not self.closed_by_us:
            code = "session_expired" if reason == "expired" else f"session_closed_{reason}"
            events.append(EngineError(code, f"the live session closed: {reason}", fatal=True))
        return events
