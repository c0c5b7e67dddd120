"""OCTI's voice on its way to the caller: converted to the channel's format, re-framed, sent in
marked chunks and tracked, so that an interruption knows how much of each answer was heard.

An interruption first pauses the voice: the caller's playback is cleared at once, but what
they had not heard is held, with what the model goes on saying. Then either it was the
caller taking the floor (`confirm`: the held voice is dropped, the answer is cut where they
stopped hearing it) or a noise (`resume`: the held voice is sent again, from where it was cut).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter

from app.agent.playback import PlaybackTracker
from app.agent.state import AnswerState, CallState, Cut, HeldVoice, Turn
from app.audio.convert import make_converter
from app.audio.formats import AudioFormat
from app.audio.framing import FrameAssembler
from app.calllog.journal import heard_words
from app.calllog.recording import StereoRecorder
from app.channels.contract import AnswerEnded, AnswerWords, CallChannel
from app.engines.contract import AnswerAudio, AnswerAudioDone, AnswerTextPiece
from app.metrics import Metrics

# Model audio goes to the caller in messages of up to 100 ms, each followed by a mark:
# fewer messages than 20 ms ones, while the playback tracker interpolates within a chunk.
MESSAGE_MS = 100
FRAME_MS = 20
# The tracker's item for a recorded phrase (not the model's): no turn, nothing to cut.
RECORDED = "octi_recorded"


class Speaker:
    def __init__(self, channel: CallChannel, model_format: AudioFormat, state: CallState, metrics: Metrics,
                 recorder: StereoRecorder | None, log_turn: Callable[[Turn], None]) -> None:
        caller_format = channel.audio_format
        self._channel = channel
        self._caller_format, self._model_format = caller_format, model_format
        self._to_caller = make_converter(model_format, caller_format)
        self._frames = FrameAssembler(caller_format.frame_bytes(FRAME_MS), caller_format.silence_byte)
        self._chunk_bytes = caller_format.frame_bytes(MESSAGE_MS)
        self.tracker = PlaybackTracker()
        self.answers = AnswerState()
        self._state = state
        self._metrics = metrics
        self._recorder = recorder
        self._log_turn = log_turn  # an assistant turn changed: log it
        self._held: HeldVoice | None = None  # paused by an interruption being judged

    @property
    def busy(self) -> bool:
        """OCTI is saying something: an answer under way, or audio the caller has not played yet."""
        return self.answers.active is not None or self.tracker.audio_queued

    async def audio(self, event: AnswerAudio) -> None:
        if event.answer in self.answers.muted:
            return  # late audio of an interrupted answer
        state = self._state
        turn = state.assistant_turn(event.item)
        turn.last_model_audio_at = event.received_at
        if turn.model_audio_at is None:
            turn.model_audio_at = event.received_at
            if state.speech_end_ms is not None:  # the first answer audio since the caller spoke
                turn.speech_end_to_model_audio_ms = state.timeline_ms(event.received_at) - state.speech_end_ms
                state.speech_end_ms = None
        generated = self.answers.generated_ms
        generated[event.item] = generated.get(event.item, 0.0) + self._model_format.duration_ms(len(event.audio))
        await self._play(event.item, self._frames.push(self._to_caller.convert(event.audio)), event.received_at)

    async def audio_done(self, event: AnswerAudioDone) -> None:
        if event.answer not in self.answers.muted:
            await self._play(event.item, self._frames.flush(), perf_counter())
            self.answers.sent.add(event.answer)
            if self._held is not None:
                self._held.ended = True
            else:
                await self._channel.show(AnswerEnded())

    async def words(self, event: AnswerTextPiece) -> None:
        """What an item says, as the model says it: on the caller's screen, and so far what a new
        session is told. Not the rest of an answer stopped while the model goes on with it."""
        answers = self.answers
        if answers.active is not None and answers.active in answers.muted:
            return
        self._state.assistant_turn(event.item).text += event.text
        await self._channel.show(AnswerWords(event.text))

    async def play_recorded(self, audio: bytes) -> None:
        """A phrase recorded beforehand, in the caller's format, heard like an answer (the tracker
        counts it) but no turn of the conversation."""
        frame_bytes = self._caller_format.frame_bytes(FRAME_MS)
        padded = audio + self._caller_format.silence_byte * (-len(audio) % frame_bytes)
        await self._send(RECORDED, padded, None, answer=False)

    def forget_answers(self) -> None:
        """A new conversation: the answers of the old one are no one's business any more."""
        self.answers = AnswerState()

    async def heard(self, sent_before: set[str], timeout: float) -> bool:
        """Until an answer not in `sent_before` was all sent and the caller has played all of it
        (False after `timeout`)."""
        deadline = perf_counter() + timeout
        while perf_counter() < deadline:
            if self.answers.sent - sent_before and not self.tracker.audio_queued:
                return True
            await asyncio.sleep(0.05)
        return False

    async def _play(self, item_id: str, frames: bytes, received_at: float) -> None:
        if self._held is not None:
            _hold(self._held, item_id, frames)
        else:
            await self._send(item_id, frames, received_at)

    async def _send(self, item_id: str, frames: bytes, received_at: float | None, *, answer: bool = True) -> None:
        """Send whole frames to the caller in chunks, each followed by a mark for the tracker;
        `received_at` None: audio sent again after a pause (no bridge delay to measure); not an
        `answer`: a recorded phrase, whose start no turn records."""
        for offset in range(0, len(frames), self._chunk_bytes):
            chunk = frames[offset : offset + self._chunk_bytes]
            mark = self.tracker.sent(item_id, self._caller_format.duration_ms(len(chunk)), perf_counter(), chunk)
            await self._channel.send_audio(chunk, mark)
            now = perf_counter()
            if offset == 0 and answer:
                self._first_sent(item_id, now)
            if self._recorder is not None:
                self._recorder.assistant_audio(chunk, self._state.timeline_ms(now))
            if received_at is not None:
                self._metrics.outbound_delay.observe(now - received_at)

    def _first_sent(self, item_id: str, now: float) -> None:
        turn = self._state.assistant_turn(item_id)
        if turn.start_ms is None:
            turn.start_ms = self._state.timeline_ms(now)
            self._metrics.turns.labels("assistant").inc()
            if turn.model_audio_at is not None:
                turn.model_audio_to_caller_ms = (now - turn.model_audio_at) * 1000
            if turn.speech_end_to_model_audio_ms is not None:  # the call log's latency, the dashboard's KPI
                self._metrics.first_audio.labels(self._channel.identity.channel).observe(
                    (turn.speech_end_to_model_audio_ms + (turn.model_audio_to_caller_ms or 0.0)) / 1000)

    def heard_text(self, turn: Turn) -> str:
        """A turn's words as the caller heard them: an interrupted answer's up to where it was cut."""
        text = turn.text.strip()
        if turn.role == "assistant" and turn.interrupted:
            return heard_words(text, turn.heard_ms or 0.0, self.answers.generated_ms.get(turn.item_id, 0.0))
        return text

    def heard_ms(self, item_id: str, now: float) -> float:
        """How much of an answer the caller has heard by `now`: played, and never more than generated."""
        return max(min(self.tracker.heard_ms(item_id, now), self.answers.generated_ms.get(item_id, 0.0)), 0.0)

    async def pause(self) -> None:
        """The caller may be cutting in: silence OCTI at once, keep what they have not heard."""
        if self._held is not None:
            return
        now = perf_counter()
        tracker = self.tracker
        playing = tracker.playing_item
        answer = playing if playing != RECORDED else None  # a recorded phrase is no answer to cut
        heard = self.heard_ms(answer, now) if answer is not None else 0.0
        unheard = [item for item in tracker.queued_items()[1:] if item != RECORDED]
        held = self._held = HeldVoice(Cut(answer, heard, unheard), cleared=playing is not None)
        frame_bytes = self._caller_format.frame_bytes(FRAME_MS)
        for chunk in tracker.unplayed(now):
            _hold(held, chunk.item_id, chunk.audio[frame_bytes * round(chunk.heard_ms / FRAME_MS):])
        if held.cleared:
            tracker.flush()  # before the clear goes out: marks echoed for it are not ours any more
            await self._channel.clear_playback()
            if self._recorder is not None:
                self._recorder.clear(self._state.timeline_ms(now))

    async def resume(self) -> None:
        """It was a noise: the caller hears the rest of what OCTI was saying, from where it was cut."""
        held, self._held = self._held, None
        if held is None:
            return
        for item_id, audio in held.audio:
            await self._send(item_id, bytes(audio), None, answer=item_id != RECORDED)
        if held.ended:
            await self._channel.show(AnswerEnded())

    def confirm(self, *, barge_in: bool = True) -> Cut | None:
        """The caller took the floor: what was held will never be heard. Returns where the caller
        stopped hearing OCTI (None when it was not paused). A reset or a goodbye stops OCTI
        too, but only the caller's interruptions are counted as barge-ins (`barge_in`)."""
        held, self._held = self._held, None
        if held is None:
            return None
        self._frames.clear()
        self._to_caller.reset()
        cut = held.cut
        cut.unheard += [item for item, _ in held.audio if item not in (cut.playing, RECORDED, *cut.unheard)]
        if held.cleared and cut.playing is not None:
            self._interrupted(cut.playing, cut.heard_ms, barge_in)
        return cut

    def yielded(self, item: str) -> None:
        """A model that takes its own turns stopped in `item` for the caller, who had heard all
        it said by then (nothing was left to clear): their barge-in all the same."""
        self._interrupted(item, self.answers.generated_ms.get(item, 0.0), barge_in=True)

    def _interrupted(self, item: str, heard_ms: float, barge_in: bool) -> None:
        if barge_in:
            self._state.barge_ins += 1
            self._metrics.real_barge_ins.inc()
        turn = self._state.assistant_turn(item)
        turn.interrupted = True
        turn.heard_ms = heard_ms
        self._log_turn(turn)

    async def stop(self, *, barge_in: bool = True) -> Cut | None:
        """Silence OCTI for good: pause, then confirm."""
        await self.pause()
        return self.confirm(barge_in=barge_in)


def _hold(held: HeldVoice, item_id: str, audio: bytes) -> None:
    """Keep audio of `item_id` for later, after what is held already."""
    if not audio:
        return
    if held.audio and held.audio[-1][0] == item_id:
        held.audio[-1][1].extend(audio)
    else:
        held.audio.append((item_id, bytearray(audio)))
