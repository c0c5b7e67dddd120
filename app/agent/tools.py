"""The functions the model may call, run for it. A failure goes back to the model as an error
result; the call never dies of it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from app.agent.background import BackgroundTasks
from app.agent.rag import SEARCH_TOOL, tool_output
from app.knowledge.retrieval import Retrieval, Retriever
from app.engines.contract import Engine, ToolCall

log = logging.getLogger(__name__)


class ToolRunner:
    def __init__(self, engine: Engine, retriever: Retriever, searched: Callable[[Retrieval], None]) -> None:
        self._engine = engine
        self._retriever = retriever
        self._searched = searched  # a search ran for the caller's current question
        self._running = BackgroundTasks()

    def start(self, call: ToolCall) -> None:
        self._running.spawn(self._run(call), f"tool-{call.name}")

    async def close(self) -> None:
        await self._running.cancel_all()

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
