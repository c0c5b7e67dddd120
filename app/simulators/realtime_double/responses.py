"""Responses: created by the client or by turn detection, streamed as slices of the voice asset
with their transcript, finished, cancelled (by the client or a barge-in) or cut short by
`max_output_tokens`, one at a time in the default conversation as on the service."""

from __future__ import annotations

import asyncio
import base64
import random
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

from app.simulators.realtime_double.accounting import TokenAccounting, rate_limits_event
from app.simulators.realtime_double.formats import FORMAT_KINDS, normalise_format
from app.simulators.realtime_double.function_calls import call_function, planned_function_call
from app.simulators.realtime_double.items import ConversationItem, ResponseRun, public_item
from app.simulators.realtime_double.records import ResponseRecord
from app.simulators.realtime_double.session import check_modalities, check_voice
from app.simulators.realtime_double.voice import snap_to_word
from app.simulators.realtime_schema import ClientEventError, ParsedClientEvent

if TYPE_CHECKING:
    from app.simulators.realtime_double.connection import DoubleConnection

DELTA_MS_RANGE = (20, 250)


def active_response_message(response_id: str) -> str:
    return (
        f"Conversation already has an active response in progress: {response_id}. "
        "Wait until the response is finished before creating a new one."
    )


class ResponseRuns:
    """The responses of one connection, from `response.create` (or turn detection) to `response.done`."""

    def __init__(self, connection: DoubleConnection) -> None:
        self.connection = connection
        self.active: ResponseRun | None = None  # the response writing to the default conversation
        self._unfinished: set[ResponseRun] = set()  # out-of-band ones included
        self._started = 0
        self._asset_cursor = 0
        # Delta sizes only, so they stay reproducible.
        self._delta_sizes = random.Random(f"{connection.double.seed}:{connection.index}:deltas")
        self.accounting = TokenAccounting()

    async def on_create(self, event: ParsedClientEvent) -> None:
        await self.start(event.data.get("response") or {}, trigger="client", references=event.item_references)

    async def on_cancel(self, event: ParsedClientEvent) -> None:
        response_id = event.data.get("response_id")
        if response_id:
            run = next((run for run in self._unfinished if run.record.id == response_id), None)
        else:
            run = self.active
        if run is None or run.done:
            raise ClientEventError("response_cancel_not_active", "Cancellation failed: no active response found")
        await self.cancel(run, "client_cancelled")

    async def start(self, params: dict[str, Any], *, trigger: str, references: dict[int, str] | None = None) -> None:
        connection = self.connection
        # Everything that can fail is checked before the first event goes out.
        conversation = params.get("conversation") or "auto"
        if conversation not in ("auto", "none"):
            raise ClientEventError(
                "invalid_value",
                f"Invalid value: '{conversation}'. Supported values are: 'auto' and 'none'.",
                "response.conversation",
            )
        oob = conversation == "none"
        if not oob and self.active is not None:
            raise ClientEventError(
                "conversation_already_has_active_response", active_response_message(self.active.record.id)
            )
        session = connection.session
        instructions = params.get("instructions")
        if instructions is None:
            instructions = session.get("instructions") or ""
        modalities = params.get("output_modalities") or session["output_modalities"]
        check_modalities(modalities, "response.output_modalities")
        audio_params = (params.get("audio") or {}).get("output") or {}
        if audio_params.get("format"):
            output_format = normalise_format(audio_params["format"])
        else:
            output_format = dict(session["audio"]["output"]["format"])
        voice = audio_params.get("voice") or session["audio"]["output"]["voice"]
        check_voice(voice, session, locked=connection.voice_locked)
        context = connection.items.response_context(params.get("input"), references or {})
        if params.get("input") is None:
            reserve = params.get("max_output_tokens") or session.get("max_output_tokens")
            context = self.accounting.truncated(context, reserve, session.get("truncation"), connection.model)

        max_output_tokens = params.get("max_output_tokens")
        if max_output_tokens is None:
            max_output_tokens = session.get("max_output_tokens", "inf")
        tools = params["tools"] if params.get("tools") is not None else list(session.get("tools") or [])
        tool_choice = params.get("tool_choice") or session.get("tool_choice") or "auto"
        call = planned_function_call(tools, tool_choice, context, instructions)
        if call is not None and not oob:
            await call_function(self, call, params, trigger, context, instructions, modalities, voice,
                                output_format, max_output_tokens, tools)
            return
        kind = "greeting" if self._started == 0 else "answer"
        seconds = connection.greeting_seconds if kind == "greeting" else connection.answer_seconds
        planned_ms = max(1, round(1000 * seconds))
        limit_reason = None
        if isinstance(max_output_tokens, int) and planned_ms > max_output_tokens * 50:
            planned_ms, limit_reason = max_output_tokens * 50, "max_output_tokens"
        asset = connection.double.asset
        asset_start = self._asset_cursor
        self._asset_cursor = (asset_start + planned_ms) % asset.duration_ms

        audio = "audio" in modalities
        response_id, item_id = connection.new_id("resp"), connection.new_id("item")
        record = ResponseRecord(
            id=response_id,
            trigger=trigger,
            conversation=conversation,
            instructions=instructions,
            input_items=[public_item(item) for item in context],
            conversation_items=[public_item(item) for item in connection.items.ordered],
            output_modalities=list(modalities),
            voice=voice,
            output_format=output_format,
            metadata=params.get("metadata"),
            kind=kind,
            planned_ms=planned_ms,
            item_id=item_id,
        )
        item = ConversationItem(
            data={
                "id": item_id,
                "type": "message",
                "object": "realtime.item",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
        )
        run = ResponseRun(
            record=record,
            item=item,
            context=context,
            audio=audio,
            format_kind=FORMAT_KINDS[output_format["type"]],
            asset_start=asset_start,
            script=asset.transcript(asset_start, planned_ms),
            max_output_tokens=max_output_tokens,
            tools=tools,
            limit_reason=limit_reason,
            oob=oob,
        )
        self.register(run)
        await self.announce(run)
        if audio:
            item.data["content"] = [{"type": "output_audio", "transcript": ""}]
            part: dict[str, Any] = {"type": "audio", "transcript": ""}
        else:
            item.data["content"] = [{"type": "output_text", "text": ""}]
            part = {"type": "text", "text": ""}
        await connection.send({"type": "response.content_part.added", **self._part_ids(run), "part": part})
        if run.done:  # the connection is going away and abandon() already settled it
            return
        run.task = connection.spawn(self._stream(run), name=f"realtime-double-{connection.index}-{response_id}")

    def register(self, run: ResponseRun) -> None:
        """A new response: recorded, unfinished, and the active one unless out of band."""
        run.item.run = run
        self.connection.responses.append(run.record)
        self._unfinished.add(run)
        self._started += 1
        if not run.oob:
            self.active = run

    async def announce(self, run: ResponseRun) -> str | None:
        """The events that open a response; returns the id of the item before its output item in
        the conversation (None out of band: the output stays out of the conversation)."""
        send = self.connection.send
        await send({"type": "response.created", "response": self.response_object(run)})
        await send({"type": "response.output_item.added", "response_id": run.record.id, "output_index": 0,
                    "item": public_item(run.item)})
        if run.oob:
            return None
        previous = self.connection.items.append(run.item)
        await send({"type": "conversation.item.added", "item": public_item(run.item), "previous_item_id": previous})
        return previous

    def detach(self, run: ResponseRun) -> None:
        run.done = True
        self._unfinished.discard(run)
        if self.active is run:
            self.active = None

    def abandon(self) -> None:
        """The connection is going away: every unfinished response ends cancelled, without events."""
        for run in list(self._unfinished):
            run.done = True
            run.record.status, run.record.status_reason = "cancelled", "connection_closed"
        self._unfinished.clear()
        self.active = None

    async def cancel(self, run: ResponseRun, reason: str) -> None:
        """Stop a response the way the service does: no more deltas, then `response.done` cancelled.

        The service may also send the .done events of the part and item; clients must not
        depend on them, so the double sends only what is guaranteed.
        """
        if run.done:
            return
        self.detach(run)
        if run.task is not None and run.task is not asyncio.current_task():
            run.task.cancel()
        record, item = run.record, run.item
        record.status, record.status_reason = "cancelled", reason
        item.data["status"] = "incomplete"
        if item.data.get("content"):
            item.data["content"][0]["transcript" if run.audio else "text"] = record.transcript
        record.usage = self.accounting.usage(run)
        if record.function_call is not None:
            # "Also emitted when a Response is interrupted, incomplete, or cancelled" (the GA
            # types): with the arguments streamed so far.
            await self.connection.send({
                "type": "response.function_call_arguments.done", "response_id": record.id, "item_id": record.item_id,
                "output_index": 0, "call_id": record.function_call["call_id"], "name": record.function_call["name"],
                "arguments": item.data.get("arguments") or ""})
        await self.connection.send({"type": "response.done", "response": self.response_object(run)})
        await self.send_rate_limits(record.usage)

    def response_object(self, run: ResponseRun) -> dict[str, Any]:
        record = run.record
        details: dict[str, Any] | None = None
        if record.status in ("cancelled", "incomplete"):
            details = {"type": record.status, "reason": record.status_reason}
        return {
            "object": "realtime.response",
            "id": record.id,
            "status": record.status,
            "status_details": details,
            "output": [] if record.status == "in_progress" else [public_item(run.item)],
            "conversation_id": None if run.oob else self.connection.conversation_id,
            "output_modalities": record.output_modalities,
            "max_output_tokens": run.max_output_tokens,
            "audio": {"output": {"format": record.output_format, "voice": record.voice}},
            "usage": record.usage,
            "metadata": record.metadata,
        }

    async def send_rate_limits(self, usage: dict[str, Any] | None) -> None:
        await self.connection.send(rate_limits_event(usage))

    @staticmethod
    def _part_ids(run: ResponseRun) -> dict[str, Any]:
        return {"response_id": run.record.id, "item_id": run.record.item_id, "output_index": 0, "content_index": 0}

    async def _stream(self, run: ResponseRun) -> None:
        connection = self.connection
        record, item, script = run.record, run.item, run.script
        asset, speed = connection.double.asset, connection.double.speed
        ids = self._part_ids(run)
        try:
            if connection.double.latency > 0:
                await asyncio.sleep(connection.double.latency)
            position = 0
            while position < record.planned_ms:
                step = min(self._delta_sizes.randint(*DELTA_MS_RANGE), record.planned_ms - position)
                chunk = asset.slice_audio(run.format_kind, run.asset_start + position, step) if run.audio else b""
                position += step
                upto = snap_to_word(script, round(len(script) * position / record.planned_ms))
                text = script[run.sent_chars : upto]
                # Count each piece right before its send: the write happens at once, and a cancel
                # can only land on the await after it, so the counts always match what was sent.
                if text:
                    run.sent_chars = upto
                    record.transcript += text
                    kind = "response.output_audio_transcript.delta" if run.audio else "response.output_text.delta"
                    await connection.send({"type": kind, **ids, "delta": text})
                if run.audio:
                    record.audio_ms = position
                    item.audio_ms += step
                    item.generated_ms += step
                    connection.voice_locked = True
                    delta = base64.b64encode(chunk).decode("ascii")
                    await connection.send(
                        {"type": "response.output_audio.delta", **ids, "delta": delta},
                        record={"type": "response.output_audio.delta", **ids, "audio_ms": step},
                    )
                await asyncio.sleep(step / 1000 / speed if speed > 0 else 0)
            await self._finish(run)
        except ConnectionClosed:
            pass

    async def _finish(self, run: ResponseRun) -> None:
        if run.done:
            return
        self.detach(run)
        send = self.connection.send
        record, item, script = run.record, run.item, run.script
        record.status = "incomplete" if run.limit_reason else "completed"
        record.status_reason = run.limit_reason
        record.transcript = script
        item.data["status"] = "completed" if record.status == "completed" else "incomplete"
        ids = self._part_ids(run)
        if run.audio:
            item.data["content"][0]["transcript"] = script
            part = {"type": "audio", "transcript": script}
        else:
            item.data["content"][0]["text"] = script
            part = {"type": "text", "text": script}
        record.usage = self.accounting.usage(run)
        if run.audio:
            await send({"type": "response.output_audio.done", **ids})
            await send({"type": "response.output_audio_transcript.done", **ids, "transcript": script})
        else:
            await send({"type": "response.output_text.done", **ids, "text": script})
        await send({"type": "response.content_part.done", **ids, "part": part})
        await send({"type": "response.output_item.done", "response_id": record.id, "output_index": 0,
                    "item": public_item(item)})
        items = self.connection.items
        if not run.oob and item.data["id"] in items.by_id:
            previous = items.previous_id(item)
            await send({"type": "conversation.item.done", "item": public_item(item), "previous_item_id": previous})
        await send({"type": "response.done", "response": self.response_object(run)})
        await self.send_rate_limits(record.usage)
