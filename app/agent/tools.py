"""The functions the model may call, in every RAG mode, and what it is told about them; each
call is run for it. A failure goes back to the model as an error result; the call never dies
of it. While the engine has no session to take them (it is being replaced, or was lost),
results wait for the next one."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any, Protocol

from app.agent import phrases
from app.agent.background import BackgroundTasks
from app.agent.rag import SEARCH_TOOL, instructions_with_search_tool, tool_output
from app.config import Settings
from app.engines.contract import Engine, ToolCall, ToolSpec
from app.knowledge.retrieval import Retrieval, Retriever

log = logging.getLogger(__name__)

END_CALL = ToolSpec(
    name="end_call",
    description=(
        "Raccroche : quand l'éleveur dit au revoir, remercie pour terminer, ou dit qu'il a fini. "
        "OCTI prononce lui-même la formule d'au revoir : n'ajoute rien avant d'appeler cet outil."
    ),
    parameters={"type": "object", "properties": {}, "required": []},
)
TRANSFER_TO_HUMAN = ToolSpec(
    name="transfer_to_human",
    description=(
        "Passe l'appel à un conseiller humain (une personne, un technicien, le vétérinaire de la "
        "coopérative) quand l'éleveur le demande, ou quand tu ne peux vraiment pas l'aider."
    ),
    parameters={
        "type": "object",
        "properties": {
            "summary": {"type": "string", "description": (
                "La question de l'éleveur résumée en une phrase : le conseiller l'entend avant de décrocher.")},
        },
        "required": ["summary"],
    },
)
RECAP_BY_SMS = ToolSpec(
    name="send_recap_by_sms",
    description=(
        "Envoie par SMS, à la fin de l'appel, le récapitulatif écrit des conseils donnés : quand "
        "l'éleveur accepte ou demande un texto, un message écrit, le récapitulatif."
    ),
    parameters={"type": "object", "properties": {}, "required": []},
)
# A search's result, for the model, when no words of the caller came to search for.
NOTHING_TO_SEARCH = "aucune question entendue : demande à l'éleveur de la répéter"
CALL_TOOLS_INSTRUCTIONS = (
    "# Conseiller et fin d'appel\n"
    f"Si l'éleveur veut parler à une personne, appelle {TRANSFER_TO_HUMAN.name} avec sa question résumée. "
    f"S'il dit au revoir ou a fini, appelle {END_CALL.name} sans rien dire : OCTI lui dira au revoir. "
    "Si un outil renvoie une erreur, explique-la simplement à l'éleveur et propose une autre solution."
)
SMS_INSTRUCTIONS = (
    "Après un conseil, propose une fois à l'éleveur de recevoir le récapitulatif par SMS ; "
    f"s'il accepte, appelle {RECAP_BY_SMS.name}."
)


def call_tools(settings: Settings) -> list[ToolSpec]:
    """The call's ways out, and the recap by SMS when the caller is to be asked."""
    return [END_CALL, TRANSFER_TO_HUMAN, *([RECAP_BY_SMS] if _asks_for_sms(settings) else [])]


def _asks_for_sms(settings: Settings) -> bool:
    return settings.sms_recap == "ask" and settings.sends_sms


def session_tools(settings: Settings) -> list[ToolSpec]:
    """The tools the model always has: the call tools, and the knowledge in tool mode."""
    return [SEARCH_TOOL, *call_tools(settings)] if settings.rag_mode == "tool" else call_tools(settings)


def session_instructions(settings: Settings) -> str:
    base = settings.agent_instructions
    if settings.rag_mode == "tool":
        base = instructions_with_search_tool(base)
    return with_call_tools(base, settings)


def with_call_tools(instructions: str, settings: Settings) -> str:
    sms = f" {SMS_INSTRUCTIONS}" if _asks_for_sms(settings) else ""
    return f"{instructions}\n\n{CALL_TOOLS_INSTRUCTIONS}{sms}"


class CallControl(Protocol):
    """What the call tools act on (the session's behaviours)."""

    async def end_call(self) -> None: ...

    async def transfer(self, summary: str) -> str | None:
        """Hand the call to a person; None once under way, else why not (French, for the model)."""

    def recap_by_sms(self) -> str | None:
        """Send the recap by SMS after the call; None when it will be, else why not."""


class ToolRunner:
    def __init__(self, engine: Engine, retriever: Retriever, searched: Callable[[Retrieval], None],
                 control: CallControl) -> None:
        self._engine = engine
        self._retriever = retriever
        self._searched = searched  # a search ran for the caller's current question
        self._control = control
        self._running = BackgroundTasks()
        # When a result last went to the model for it to answer from (perf_counter): what it
        # said before, while the tool ran, answered nothing.
        self.answer_asked_at: float | None = None
        self._holding = False
        self._waiting: list[tuple[str, str, bool]] = []  # (call, output, then_answer) for the next session

    @property
    def busy(self) -> bool:
        """A tool call is being run, or its result waits for the engine's next session: the model
        owes the caller what comes of it."""
        return self._running.busy or bool(self._waiting)

    def start(self, call: ToolCall) -> None:
        self._running.spawn(self._run(call), f"tool-{call.name}")

    def hold(self) -> None:
        """The engine's session is being replaced: results wait for the new one (`release`)."""
        self._holding = True

    async def release(self) -> bool:
        """The engine's new session is up: the results that waited go to it. True when the model
        owes the caller an answer from a tool: one of them asks for it, or a tool call still runs
        (its result goes to the new session when it comes)."""
        self._holding = False
        waiting, self._waiting = self._waiting, []
        for call, output, then_answer in waiting:
            await self._result(call, output, then_answer=then_answer)
        return self._running.busy or any(then_answer for _, _, then_answer in waiting)

    async def close(self) -> None:
        await self._running.cancel_all()

    async def _run(self, call: ToolCall) -> None:
        try:
            arguments: Any = json.loads(call.arguments or "{}")
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            await self._refuse(call)
            return
        try:
            await self._dispatch(call, arguments)
        except Exception:
            log.exception("the tool %r failed", call.name)
            await self._result(call.call, _error(f"l'outil {call.name} a échoué"))

    async def _dispatch(self, call: ToolCall, arguments: dict[str, Any]) -> None:
        if call.name == SEARCH_TOOL.name and isinstance(arguments.get("query"), str):
            if not arguments["query"].strip():
                # Nothing heard to search for: « nothing found » would have the model say the
                # fiches have no answer, and the call log record it for the caller's last question.
                await self._result(call.call, _error(NOTHING_TO_SEARCH))
                return
            retrieval = await self._retriever.retrieve(arguments["query"])
            self._searched(retrieval)
            await self._result(call.call, tool_output(retrieval))
        elif call.name == END_CALL.name:
            # The output keeps the conversation whole; OCTI's goodbye is said without the model.
            await self._result(call.call, json.dumps({"ok": True}), then_answer=False)
            await self._control.end_call()
        elif call.name == RECAP_BY_SMS.name:
            refused = self._control.recap_by_sms()
            await self._result(call.call, _error(refused) if refused else json.dumps(
                {"ok": True, "note": phrases.SMS_RECAP_PROMISED}, ensure_ascii=False))
        elif call.name == TRANSFER_TO_HUMAN.name and isinstance(arguments.get("summary", ""), str):
            refused = await self._control.transfer(arguments.get("summary", "").strip())
            if refused is None:
                await self._result(call.call, json.dumps({"ok": True}), then_answer=False)
            else:
                await self._result(call.call, _error(refused))
        else:
            await self._refuse(call)

    async def _refuse(self, call: ToolCall) -> None:
        log.warning("the model called %r with unusable arguments", call.name)
        await self._result(call.call, _error(f"appel de fonction invalide : {call.name}"))

    async def _result(self, call: str, output: str, *, then_answer: bool = True) -> None:
        """To the engine's session; while it has none (being replaced, or lost), for the next."""
        if self._holding or not self._engine.is_open:
            self._waiting.append((call, output, then_answer))
            return
        await self._engine.tool_result(call, output, then_answer=then_answer)
        if then_answer:
            self.answer_asked_at = perf_counter()


def _error(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)
