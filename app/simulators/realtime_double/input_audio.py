"""The input audio buffer of a connection: appends, commits and clears, and the turns the VAD
finds in them, which become user items and, by default, responses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.simulators.realtime_double.formats import SAMPLE_RATES, UNITS_PER_MS, decode_base64, g711_to_pcm16
from app.simulators.realtime_double.items import ConversationItem, public_item
from app.simulators.realtime_double.responses import active_response_message
from app.simulators.realtime_double.session import SEMANTIC_PREFIX_MS, SEMANTIC_SILENCE_MS, input_kind, turn_detection
from app.simulators.realtime_double.vad import EnergyVad
from app.simulators.realtime_schema import ClientEventError, ParsedClientEvent

if TYPE_CHECKING:
    from app.simulators.realtime_double.connection import DoubleConnection

MIN_COMMIT_MS = 100


class InputAudio:
    """`input_audio_buffer.*` and turn detection; positions are timeline units (1/48000 s)
    counted from the first byte the connection ever received."""

    def __init__(self, connection: DoubleConnection) -> None:
        self.connection = connection
        self.total_units = 0
        self._buffer_start_units = 0
        self._carry = b""  # half a PCM16 sample left over from the previous append
        self._speech_item_id: str | None = None
        self._speech_start_units = 0
        self._vad = EnergyVad()
        self._vad_on = False
        self._configure_turn_detection()

    def session_updated(self, previous_kind: str) -> None:
        """Follow a `session.update`: a new input format drops what was buffered of the old one."""
        if input_kind(self.connection.session) != previous_kind:
            self._carry = b""
            self._vad.reset(self.total_units)
        self._configure_turn_detection()

    def _configure_turn_detection(self) -> None:
        detection = turn_detection(self.connection.session)
        if detection is None:
            self._vad_on = False
            return
        if not self._vad_on:
            self._vad.reset(self.total_units)
            self._vad_on = True
        if detection["type"] == "server_vad":
            self._vad.configure(detection["threshold"], detection["silence_duration_ms"])
        else:
            self._vad.configure(0.5, SEMANTIC_SILENCE_MS[detection.get("eagerness") or "auto"])

    async def on_append(self, event: ParsedClientEvent) -> None:
        raw = decode_base64(event.data["audio"], "audio")
        kind = input_kind(self.connection.session)
        if kind == "pcm":
            if self._carry:
                raw, self._carry = self._carry + raw, b""
            if len(raw) % 2:  # a sample split across two appends
                raw, self._carry = raw[:-1], raw[-1:]
            pcm = raw
        else:
            pcm = g711_to_pcm16(raw, kind)
        rate = SAMPLE_RATES[kind]
        self.total_units += len(pcm) // 2 * (48000 // rate)
        if self._vad_on:
            for what, position in self._vad.feed(pcm, rate):
                if what == "start":
                    await self._speech_started(position)
                else:
                    await self._speech_stopped(position)
            if self._speech_item_id is not None and self._vad.heard_voice:
                self.connection.caller_transcripts.voice_heard(self._speech_item_id)
        await self.connection.caller_transcripts.send_due_words(self.total_units)

    async def on_commit(self, event: ParsedClientEvent) -> None:
        buffered = self.total_units - self._buffer_start_units
        if buffered < MIN_COMMIT_MS * UNITS_PER_MS:
            raise ClientEventError(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms "
                f"of audio, but buffer only has {buffered / UNITS_PER_MS:.2f}ms of audio.",
            )
        item_id = self._speech_item_id or self.connection.new_id("item")
        self._speech_item_id = None
        self.connection.caller_transcripts.buffer_committed(item_id, self._buffer_start_units, self.total_units)
        self._buffer_start_units = self.total_units
        self._vad.reset(self.total_units)
        await self._commit_user_audio(item_id, buffered // UNITS_PER_MS)

    async def on_clear(self, event: ParsedClientEvent) -> None:
        self._buffer_start_units = self.total_units
        if self._speech_item_id is not None:
            self.connection.caller_transcripts.buffer_cleared(self._speech_item_id)
        self._speech_item_id = None
        self._carry = b""
        self._vad.reset(self.total_units)
        await self.connection.send({"type": "input_audio_buffer.cleared"})

    async def _speech_started(self, onset_units: int) -> None:
        connection = self.connection
        detection = turn_detection(connection.session) or {}
        prefix_ms = detection.get("prefix_padding_ms", SEMANTIC_PREFIX_MS)
        start = max(onset_units - prefix_ms * UNITS_PER_MS, self._buffer_start_units)
        self._speech_item_id = connection.new_id("item")
        self._speech_start_units = start
        connection.caller_transcripts.speech_started(self._speech_item_id, onset_units)
        await connection.send(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": start // UNITS_PER_MS,
                "item_id": self._speech_item_id,
            }
        )
        active = connection.runs.active
        if detection.get("interrupt_response", True) and active is not None:
            await connection.runs.cancel(active, "turn_detected")

    async def _speech_stopped(self, end_units: int) -> None:
        connection = self.connection
        detection = turn_detection(connection.session) or {}
        item_id = self._speech_item_id or connection.new_id("item")
        self._speech_item_id = None
        if self._vad.heard_voice:  # the voice may have come in the feed that ended the turn
            connection.caller_transcripts.voice_heard(item_id)
        await connection.send(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": end_units // UNITS_PER_MS,
                "item_id": item_id,
            }
        )
        audio_ms = (end_units - self._speech_start_units) // UNITS_PER_MS
        self._buffer_start_units = end_units
        # The VAD waited for its silence: the caller stopped before that.
        connection.caller_transcripts.speech_stopped(item_id, end_units - self._vad.silence_ms * UNITS_PER_MS)
        await self._commit_user_audio(item_id, audio_ms)
        if detection.get("create_response", True):
            active = connection.runs.active
            if active is not None:
                # Only reachable with interrupt_response false: the service refuses the same way.
                await connection.send_error(
                    "conversation_already_has_active_response", active_response_message(active.record.id)
                )
            else:
                await connection.runs.start({}, trigger="turn_detection")

    async def _commit_user_audio(self, item_id: str, audio_ms: int) -> None:
        item = ConversationItem(
            data={
                "id": item_id,
                "type": "message",
                "object": "realtime.item",
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            },
            audio_ms=audio_ms,
        )
        previous = self.connection.items.append(item)
        send = self.connection.send
        await send({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous})
        await send({"type": "conversation.item.added", "item": public_item(item), "previous_item_id": previous})
        await send({"type": "conversation.item.done", "item": public_item(item), "previous_item_id": previous})
        await self.connection.caller_transcripts.transcribe(item, audio_ms, self.total_units)
