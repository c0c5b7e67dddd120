"""Which of our tools a client delegation calls for.

GPT-Live's client delegation hands us the work without the task's text or a tool name
(`session.delegation.created` carries only its id): the task is what the caller just said. Our
application is the backend, so it decides: a goodbye ends the call, asking for a person
transfers it, asking for the recap by SMS (or saying yes when the model just offered it) has it
texted after the call, anything else is a question for the knowledge base. The result is a contract
`ToolCall`, run by the session's ToolRunner as any model's tool call.

A farmer's question names people and says « fini » or « c'est tout » all the time (« le
vétérinaire m'a dit… », « c'est tout ce qu'il faut faire ? »): a word found anywhere decides
nothing. The call ends only when the caller's words as a whole take leave, and is transferred
only when they open on asking for a person; a yes takes the model's offer of the SMS only when
it is all the caller said. A question is neither a goodbye nor a yes: when in doubt, the
knowledge is searched, and the model answers from it.
"""

from __future__ import annotations

import json
import re
import unicodedata

from app.agent.rag import SEARCH_TOOL
from app.agent.tools import END_CALL, RECAP_BY_SMS, TRANSFER_TO_HUMAN

# The patterns read words folded (lower case, no accents) and joined by single spaces.
# Said around a request, a leave-taking or a yes without changing it.
_COURTESY = (r"(?:bonjour|bonsoir|allo|oui|non|euh|ben|bah|bon|alors|eh bien|ecoutez|pardon|excusez moi|madame|"
             r"monsieur|ok|d'accord|tres bien|parfait|super|voila|c'est bon|c'est parfait|ca marche|s'il vous plait|"
             r"s'il te plait|svp|merci(?: beaucoup| bien| pour (?:tout|votre aide|vos conseils|les conseils|"
             r"l'info|les infos))?)")
_PERSON = (r"(?:(?:un|une|le|la|mon|ma|votre|vos|des) )?(?:(?:vrai|vraie|etre) )?"
           r"(?:conseill\w*|technicien\w*|veterinaire\w*|humains?|collegues?)"
           r"|(?:un|une|une vraie|des) personnes?|quelqu'un")
_ASKING = (r"(?:je voudrais|je veux|j'aimerais|je souhaite|je souhaiterais|est ce que je peux|est ce que je pourrais|"
           r"je peux|je pourrais|puis je|pouvez vous|vous pouvez|pourriez vous|vous pourriez|est ce que vous pouvez|"
           r"est ce que vous pourriez|est ce qu'on peut|on peut|il me faut|j'ai besoin)")
# Opens on asking for a person: « je voudrais parler à un conseiller », « passez-moi quelqu'un ».
_ASKS_FOR_PERSON = re.compile(
    rf"(?:{_COURTESY} )*(?:{_ASKING}"
    r"(?: (?:parler (?:a|avec|au|aux)|avoir|joindre|(?:me )?passer|(?:me )?transferer (?:a|au|vers)|"
    r"(?:me )?mettre en relation avec|etre mise? en relation avec|etre transferee? (?:a|au|vers)|de)| d')?"
    r"|passez moi|passe moi|transferez moi(?: (?:a|au|vers))?|mettez moi en relation avec|donnez moi)"
    rf" ?(?:{_PERSON})\b")
# Nothing but the person: « un conseiller, s'il vous plaît », « transférez-moi ».
_ONLY_PERSON = re.compile(rf"(?:{_COURTESY} )*(?:{_PERSON}|transferez moi)(?: {_COURTESY})*")
_LEAVE = (r"(?:au revoir|bonne journee|bonne soiree|bonne nuit|bonne fin de (?:journee|soiree)|bon week end|"
          r"bonne semaine|bonne continuation|a bientot|a plus tard|a plus|a la prochaine|a demain|salut|"
          r"c'est tout(?: pour (?:moi|aujourd'hui))?|ce sera tout|ca sera tout|ca ira|j'ai fini|j'ai termine|"
          r"c'est fini|rien d'autre|(?:je n'ai )?(?:pas d'autres?|plus de) questions?|je vais raccrocher|"
          r"je raccroche|je vous laisse)")
# Nothing but taking leave: « merci, au revoir », « non, c'est tout, bonne journée ».
_GOODBYE = re.compile(rf"(?:(?:{_COURTESY}|{_LEAVE}) )*{_LEAVE}(?: (?:{_COURTESY}|{_LEAVE}|vous aussi|a vous aussi))*")
_SMS_WORDS = r"(?:sms|texto|message ecrit|par ecrit|recapitulatif)"
_SMS = re.compile(rf"\b{_SMS_WORDS}\b")
# Asks for the SMS: to be sent it (« envoyez-moi le récapitulatif par SMS »), or nothing but
# asking for it (« je voudrais le récapitulatif par écrit »); « j'ai reçu un SMS… » does not.
_SENDING = re.compile(r"\b(?:envoy\w*|renvoy\w*|recevoir|texter)\b")
_ONLY_SMS = re.compile(rf"(?:{_COURTESY} )*(?:{_ASKING} )?(?:(?:recevoir|avoir) )?(?:(?:le|un|ce|ca|du) )?{_SMS_WORDS}"
                       rf"(?: par (?:sms|texto|ecrit|message))?(?: {_COURTESY})*")
_YES = (r"(?:oui|ouais|d'accord|volontiers|je veux bien|avec plaisir|ok|allez y|bien sur|pourquoi pas|"
        r"tout a fait|bonne idee|envoyez(?: le)?(?: moi)?)")
# Nothing but a yes: « oui, je veux bien », not « oui, et l'humidité ? ».
_ONLY_YES = re.compile(rf"(?:{_COURTESY} )*{_YES}(?: (?:{_COURTESY}|{_YES}))*")


def _folded(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.lower().replace("’", "'"))
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w']+", " ", _folded(text)).split())


def _asks_for_sms(words: str) -> bool:
    return bool(_SMS.search(words) and (_SENDING.search(words) or _ONLY_SMS.fullmatch(words)))


def route(question: str, model_said: str = "") -> tuple[str, str]:
    """The tool name and its JSON arguments for a delegated task about `question`, the caller's
    words since `model_said` (the model's words just before)."""
    words = _words(question)
    asked = "?" in question
    if _ASKS_FOR_PERSON.match(words) or _ONLY_PERSON.fullmatch(words):
        return TRANSFER_TO_HUMAN.name, json.dumps({"summary": question}, ensure_ascii=False)
    if not asked and _GOODBYE.fullmatch(words):
        return END_CALL.name, "{}"
    if _asks_for_sms(words) or (not asked and _ONLY_YES.fullmatch(words) and _SMS.search(_words(model_said))):
        return RECAP_BY_SMS.name, "{}"
    return SEARCH_TOOL.name, json.dumps({"query": question}, ensure_ascii=False)
