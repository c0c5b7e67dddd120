"""Function calls: when the double, playing the model, calls a tool instead of answering, and
the GA event sequence of such a response."""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

from app.knowledge.french import fold
from app.simulators.realtime_double.items import ConversationItem, ResponseRun, public_item
from app.simulators.realtime_double.records import ResponseRecord

if TYPE_CHECKING:
    from app.simulators.realtime_double.responses import ResponseRuns


# What the double reads as a directive to call a tool before answering any question.
FIRST_CALL = re.compile(r"appelle d'abord l'outil (\w+)")
# Words too common to tell one tool from another.
COMMON_WORDS = frozenset("""
    avec dans pour quand sont cette votre vous nous elle leur leurs plus tout toute tous
    moins bien faire fait comme mais donc alors aussi encore apres avant depuis entre
""".split())


def planned_function_call(
    tools: list[Any], tool_choice: Any, context: list[ConversationItem], instructions: str = ""
) -> tuple[str, dict[str, Any]] | None:
    """Whether the model (as the double plays it) calls a tool when the newest item is the
    caller's message. Like a model reading the tools' descriptions, it calls the tool whose
    description shares the most words with what the caller said (« un conseiller », « au
    revoir »); failing that, the tool its instructions tell it to call first (« appelle d'abord
    l'outil search_knowledge »); failing that, it answers. The caller's words fill the call's
    first string parameter. Once a function output follows, it answers in voice."""
    functions = [tool for tool in tools if isinstance(tool, dict) and tool.get("type") == "function"]
    if not functions or tool_choice == "none" or not context:
        return None
    # Context the client added for this answer (system messages) comes after the caller's turn.
    spoken = [item for item in context if item.data.get("role") != "system"]
    if not spoken:
        return None
    newest = spoken[-1].data
    if newest.get("type") != "message" or newest.get("role") != "user":
        return None
    words = spoken[-1].heard or " ".join(
        part.get("transcript") or part.get("text") or ""
        for part in newest.get("content") or [] if isinstance(part, dict)
    ).strip()
    tool = _chosen(functions, tool_choice, words, instructions)
    if tool is None:
        return None
    properties = ((tool.get("parameters") or {}).get("properties") or {})
    first_string = next((key for key, spec in properties.items() if (spec or {}).get("type") == "string"), None)
    return tool.get("name") or "function", ({first_string: words} if first_string else {})


def _chosen(functions: list[dict[str, Any]], tool_choice: Any, words: str,
            instructions: str) -> dict[str, Any] | None:
    by_name = {tool.get("name"): tool for tool in functions}
    if isinstance(tool_choice, dict) and tool_choice.get("name") in by_name:
        return by_name[tool_choice["name"]]
    said = _content_words(words)
    shared = [(len(said & _content_words(tool.get("description") or "")), -index)
              for index, tool in enumerate(functions)]
    best, position = max(shared)
    if best > 0:
        return functions[-position]
    directed = FIRST_CALL.search(instructions)
    if directed and directed.group(1) in by_name:
        return by_name[directed.group(1)]
    return functions[0] if tool_choice == "required" else None


def _content_words(text: str) -> set[str]:
    folded = fold(text).lower()
    return {word for word in re.findall(r"[a-z]{5,}", folded) if word not in COMMON_WORDS}


async def call_function(
    runs: ResponseRuns,
    call: tuple[str, dict[str, Any]],
    params: dict[str, Any],
    trigger: str,
    context: list[ConversationItem],
    instructions: str,
    modalities: list[str],
    voice: Any,
    output_format: dict[str, Any],
    max_output_tokens: Any,
    tools: list[Any],
) -> None:
    """A response whose only output is a function call, with the GA event sequence."""
    connection = runs.connection
    name, arguments = call[0], json.dumps(call[1], ensure_ascii=False)
    response_id, item_id, call_id = connection.new_id("resp"), connection.new_id("item"), connection.new_id("call")
    record = ResponseRecord(
        id=response_id, trigger=trigger, conversation="auto", instructions=instructions,
        input_items=[public_item(item) for item in context],
        conversation_items=[public_item(item) for item in connection.items.ordered],
        output_modalities=list(modalities), voice=voice, output_format=output_format,
        metadata=params.get("metadata"), kind="function_call", planned_ms=0, item_id=item_id,
        function_call={"call_id": call_id, "name": name, "arguments": arguments},
    )
    item = ConversationItem(data={"id": item_id, "type": "function_call", "object": "realtime.item",
                                  "status": "in_progress", "call_id": call_id, "name": name, "arguments": ""})
    run = ResponseRun(record=record, item=item, context=context, audio=False, format_kind="pcm16", asset_start=0,
                      script="", max_output_tokens=max_output_tokens, tools=tools, limit_reason=None, oob=False)
    runs.register(run)
    ids = {"response_id": response_id, "item_id": item_id, "output_index": 0, "call_id": call_id}
    previous = await runs.announce(run)
    run.task = connection.spawn(_stream_call(runs, run, ids, name, arguments, previous))


async def _stream_call(runs: ResponseRuns, run: ResponseRun, ids: dict[str, Any], name: str, arguments: str,
                       previous: str | None) -> None:
    """The call's arguments after the model's think time (`latency`), then the response's end."""
    connection = runs.connection
    record, item = run.record, run.item
    try:
        if connection.double.latency > 0:
            await asyncio.sleep(connection.double.latency)
        half = len(arguments) // 2
        for piece in (arguments[:half], arguments[half:]):
            await connection.send({"type": "response.function_call_arguments.delta", **ids, "delta": piece})
        item.data["arguments"] = arguments
        await connection.send({"type": "response.function_call_arguments.done", **ids, "name": name,
                               "arguments": arguments})
        runs.detach(run)
        record.status = "completed"
        item.data["status"] = "completed"
        record.usage = runs.accounting.usage(run)
        await connection.send({"type": "response.output_item.done", "response_id": record.id, "output_index": 0,
                               "item": public_item(item)})
        await connection.send({"type": "conversation.item.done", "item": public_item(item),
                               "previous_item_id": previous})
        await connection.send({"type": "response.done", "response": runs.response_object(run)})
        await runs.send_rate_limits(record.usage)
    except ConnectionClosed:
        pass
