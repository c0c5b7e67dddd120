"""OCTI's voice on its way to the caller: converted to the channel's format, re-framed, sent in
marked chunks and tracked, so that an interruption knows how much of each answer was heard."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter

from app.agent.playback import PlaybackTracker
from app.agent.state import AnswerState, CallState, Turn
from app.audio.convert import make_converter
from app.audio.formats import AudioFormat
from app.audio.framing import FrameAssembler
from app.calllog.recording import StereoRecorder
from app.channels.contract import AnswerEnded, CallChannel
from app.engines.contract import AnswerAudio, AnswerAudioDone
from app.metrics import Metrics

# Model audio goes to the caller in messages of up to 100 ms, each followed by a mark:
# fewer messages than 20 ms ones, while the playback tracker interpolates within a chunk.
MESSAGE_MS = 100
FRAME_MS = 20


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

    async def audio(self, event: AnswerAudio) -> None:
        if event.answer in self.answers.muted:
            return  # late audio of an interrupted answer
        state = self._state
        turn = state.assistant_turn(event.item)
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
            await self._channel.show(AnswerEnded())

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
        """Send whole frames to the caller in chunks, each followed by a mark for the tracker."""
        for offset in range(0, len(frames), self._chunk_bytes):
            chunk = frames[offset : offset + self._chunk_bytes]
            mark = self.tracker.sent(item_id, self._caller_format.duration_ms(len(chunk)), perf_counter())
            await self._channel.send_audio(chunk, mark)
            now = perf_counter()
            if offset == 0:
                self._first_sent(item_id, now)
            if self._recorder is not None:
                self._recorder.assistant_audio(chunk, self._state.timeline_ms(now))
            self._metrics.outbound_delay.observe(now - received_at)

    def _first_sent(self, item_id: str, now: float) -> None:
        turn = self._state.assistant_turn(item_id)
        if turn.start_ms is None:
            turn.start_ms = self._state.timeline_ms(now)
            if turn.model_audio_at is not None:
                turn.model_audio_to_caller_ms = (now - turn.model_audio_at) * 1000

    async def stop(self, *, barge_in: bool = True) -> tuple[str, float, list[str]] | None:
        """Flush the caller's playback; returns the item that was playing, how much of it was
        heard, and the items queued after it (never heard), or None when nothing was queued.
        A reset stops playback too, but it is not counted as a barge-in."""
        self._frames.clear()
        self._to_caller.reset()
        if not self.tracker.audio_queued:
            return None
        now = perf_counter()
        playing = self.tracker.playing_item or ""
        queued = self.tracker.queued_items()
        heard = min(self.tracker.heard_ms(playing, now), self.answers.generated_ms.get(playing, 0.0))
        await self._channel.clear_playback()
        self.tracker.flush()
        if self._recorder is not None:
            self._recorder.clear(self._state.timeline_ms(now))
        if barge_in:
            self._state.barge_ins += 1
            self._metrics.barge_ins.inc()
        turn = self._state.assistant_turn(playing)
        turn.interrupted = True
        turn.heard_ms = max(heard, 0.0)
        self._log_turn(turn)
        return playing, heard, queued[1:]
