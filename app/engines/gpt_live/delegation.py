"""Which of our tools a client delegation calls for.

GPT-Live's client delegation hands us the work without the task's text or a tool name
(`session.delegation.created` carries only its id): the task is what the caller just said. Our
application is the backend, so it decides: a goodbye ends the call, asking for a person
transfers it, asking for the recap by SMS (or saying yes when the model just offered it) has it
texted after the call, anything else is a question for the knowledge base. The result is a contract
`ToolCall`, run by the session's ToolRunner as any model's tool call.
"""

from __future__ import annotations

import json
import re
import unicodedata

from app.agent.rag import SEARCH_TOOL
from app.agent.tools import END_CALL, RECAP_BY_SMS, TRANSFER_TO_HUMAN

# Whole words (accents folded) that ask for a person, or take leave.
_PERSON = re.compile(r"\b(conseiller|conseillere|technicien|technicienne|veterinaire|humain|quelqu'un|"
                     r"une personne|un collegue|transferez|transferer|passez-moi|passer quelqu'un)\b")
_SMS = re.compile(r"\b(sms|texto|message ecrit|par ecrit|recapitulatif)\b")
_YES = re.compile(r"^\W*(oui|ouais|d'accord|volontiers|je veux bien|avec plaisir|ok|allez-y|bien sur)\b")
_GOODBYE = re.compile(r"\b(au revoir|bonne journee|bonne soiree|a bientot|c'est tout|j'ai fini|merci beaucoup, au revoir)\b")


def _folded(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.lower().replace("’", "'"))
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def route(question: str, model_said: str = "") -> tuple[str, str]:
    """The tool name and its JSON arguments for a delegated task about `question`, the caller's
    words since `model_said` (the model's words just before)."""
    words = _folded(question)
    if _PERSON.search(words):
        return TRANSFER_TO_HUMAN.name, json.dumps({"summary": question}, ensure_ascii=False)
    if _GOODBYE.search(words):
        return END_CALL.name, "{}"
    if _SMS.search(words) or (_YES.search(words) and _SMS.search(_folded(model_said))):
        return RECAP_BY_SMS.name, "{}"
    return SEARCH_TOOL.name, json.dumps({"query": question}, ensure_ascii=False)
