"""The default conversation of a connection, and the client events that edit or read it."""

from __future__ import annotations

import base64
import copy
from typing import TYPE_CHECKING, Any

from app.simulators.realtime_double.formats import BYTES_PER_MS, decode_base64
from app.simulators.realtime_double.items import ConversationItem, public_item, strip_audio
from app.simulators.realtime_double.records import TruncationRecord
from app.simulators.realtime_double.session import input_kind
from app.simulators.realtime_double.voice import snap_to_word
from app.simulators.realtime_schema import ClientEventError, ParsedClientEvent

if TYPE_CHECKING:
    from app.simulators.realtime_double.connection import DoubleConnection


class ConversationItems:
    """The items in order, by id, and `conversation.item.*`: create, delete, retrieve, truncate."""

    def __init__(self, connection: DoubleConnection) -> None:
        self.connection = connection
        self.ordered: list[ConversationItem] = []
        self.by_id: dict[str, ConversationItem] = {}

    def insert(self, item: ConversationItem, position: int) -> None:
        self.ordered.insert(position, item)
        self.by_id[item.data["id"]] = item

    def append(self, item: ConversationItem) -> str | None:
        """Add the item at the end; returns the id of the item before it."""
        previous = self.ordered[-1].data["id"] if self.ordered else None
        self.insert(item, len(self.ordered))
        return previous

    def previous_id(self, item: ConversationItem) -> str | None:
        try:
            position = self.ordered.index(item)
        except ValueError:
            return None
        return self.ordered[position - 1].data["id"] if position > 0 else None

    def response_context(self, given: list[dict[str, Any]] | None,
                         references: dict[int, str]) -> list[ConversationItem]:
        """What a response reads: its own `input` (item references resolved), else the conversation."""
        if given is None:
            return list(self.ordered)
        context: list[ConversationItem] = []
        for index, element in enumerate(given):
            if index in references:
                target = self.by_id.get(references[index])
                if target is None:
                    raise ClientEventError(
                        "invalid_value",
                        f"Invalid value: item reference '{references[index]}' does not match any item in this session.",
                        f"response.input[{index}].id",
                    )
                context.append(target)
                continue
            transient = ConversationItem(data=strip_audio(copy.deepcopy(element)))
            for part_index, part in enumerate(element.get("content") or []):
                if isinstance(part, dict) and part.get("type") == "input_audio" and part.get("audio"):
                    raw = decode_base64(part["audio"], f"response.input[{index}].content[{part_index}].audio")
                    transient.audio_ms += len(raw) // BYTES_PER_MS[input_kind(self.connection.session)]
            context.append(transient)
        return context

    async def on_create(self, event: ParsedClientEvent) -> None:
        send = self.connection.send
        data = copy.deepcopy(event.data["item"])
        item_id = data.get("id") or self.connection.new_id("item")
        if item_id in self.by_id:
            raise ClientEventError("invalid_value", f"Item with id '{item_id}' already exists.", "item.id")
        previous = event.data.get("previous_item_id")
        if previous is None:
            position = len(self.ordered)
        elif previous == "root":
            position = 0
        elif previous in self.by_id:
            position = self.ordered.index(self.by_id[previous]) + 1
        else:
            raise ClientEventError(
                "invalid_value", f"Previous item with id '{previous}' does not exist.", "previous_item_id"
            )
        item = ConversationItem(data=data)
        if data["type"] == "message":
            for index, part in enumerate(data["content"]):
                if data["role"] == "assistant" and part.get("type") == "output_audio":
                    raise ClientEventError(
                        "invalid_value",
                        "Invalid value: 'output_audio'. Supported values are: 'output_text'.",
                        f"item.content[{index}].type",
                    )
                if part.get("type") == "input_audio" and part.get("audio"):
                    audio = part.pop("audio")
                    raw = decode_base64(audio, f"item.content[{index}].audio")
                    item.input_audio[index] = audio
                    item.audio_ms += len(raw) // BYTES_PER_MS[input_kind(self.connection.session)]
        data.update(id=item_id, object="realtime.item", status="completed")
        self.insert(item, position)
        previous_id = self.ordered[position - 1].data["id"] if position > 0 else None
        await send({"type": "conversation.item.added", "item": public_item(item), "previous_item_id": previous_id})
        await send({"type": "conversation.item.done", "item": public_item(item), "previous_item_id": previous_id})

    async def on_delete(self, event: ParsedClientEvent) -> None:
        item_id = event.data["item_id"]
        item = self._existing(item_id, "delete", "deleting")
        del self.by_id[item_id]
        self.ordered.remove(item)
        await self.connection.send({"type": "conversation.item.deleted", "item_id": item_id})

    async def on_retrieve(self, event: ParsedClientEvent) -> None:
        item = self._existing(event.data["item_id"], "retrieve", "retrieving")
        full = public_item(item)
        run = item.run
        if run is not None and run.audio and full["content"]:
            audio = self.connection.double.asset.slice_audio(run.format_kind, run.asset_start, item.audio_ms)
            full["content"][0]["audio"] = base64.b64encode(audio).decode("ascii")
        for index, audio_b64 in item.input_audio.items():
            full["content"][index]["audio"] = audio_b64
        await self.connection.send(
            {"type": "conversation.item.retrieved", "item": full},
            record={"type": "conversation.item.retrieved", "item": public_item(item)},  # without the audio
        )

    async def on_truncate(self, event: ParsedClientEvent) -> None:
        item_id = event.data["item_id"]
        content_index = event.data["content_index"]
        audio_end_ms = event.data["audio_end_ms"]
        item = self._existing(item_id, "truncate", "truncating")
        run = item.run
        if run is None or not run.audio or item.generated_ms == 0:
            raise ClientEventError("unsupported_content_type", "Only model output audio messages can be truncated")
        if content_index != 0:
            raise ClientEventError(
                "invalid_value",
                f"Invalid value: {content_index}. Item '{item_id}' has its audio at content index 0.",
                "content_index",
            )
        if audio_end_ms > item.audio_ms:
            raise ClientEventError(None, f"Audio content of {item.audio_ms}ms is already shorter than {audio_end_ms}ms")
        self.connection.truncations.append(
            TruncationRecord(item_id, content_index, audio_end_ms, item.audio_ms, run.record.id)
        )
        item.audio_ms = audio_end_ms
        cut = snap_to_word(run.script, round(len(run.script) * audio_end_ms / run.record.planned_ms))
        item.data["content"][0]["transcript"] = run.script[:cut].rstrip()
        await self.connection.send(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": audio_end_ms,
            }
        )

    def _existing(self, item_id: str, operation: str, doing: str) -> ConversationItem:
        """The item with that id, or the service's error for an `operation` on a missing item."""
        item = self.by_id.get(item_id)
        if item is None:
            raise ClientEventError(
                f"item_{operation}_invalid_item_id",
                f"Error {doing} item: the item with id '{item_id}' does not exist.",
                "item_id",
            )
        return item
