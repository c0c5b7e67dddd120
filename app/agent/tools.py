"""The functions the model may call, run for it. A failure goes back to the model as an error
result; the call never dies of it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from app.agent.rag import SEARCH_TOOL, tool_output
from app.knowledge.retrieval import Retrieval, Retriever
from app.engines.contract import Engine, ToolCall

log = logging.getLogger(__name__)


class ToolRunner:
    def __init__(self, engine: Engine, retriever: Retriever, searched: Callable[[Retrieval], None]) -> None:
        self._engine = engine
        self._retriever = retriever
        self._searched = searched  # a search ran for the caller's current question
        self._running: set[asyncio.Task[None]] = set()

    def start(self, call: ToolCall) -> None:
        task = asyncio.create_task(self._run(call), name=f"tool-{call.name}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def close(self) -> None:
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, call: ToolCall) -> None:
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            arguments = None
        if call.name == SEARCH_TOOL.name and isinstance(arguments, dict) and isinstance(arguments.get("query"), str):
            retrieval = await self._retriever.retrieve(arguments["query"])
            self._searched(retrieval)
            output = tool_output(retrieval)
        else:
            log.warning("the model called %r with unusable arguments", call.name)
            output = json.dumps({"error": f"appel de fonction invalide : {call.name}"}, ensure_ascii=False)
        await self._engine.tool_result(call.call, output)
