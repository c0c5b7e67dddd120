"""The GPT-Live wire protocol (`openai.types.live`) as pure translation: the client events we
send, built as plain dicts that validate against the package's types (tests check it, unknown
fields included). The server's events are translated in `translator`. No socket here: the
engine sends what is built.

What we send
  * `session.start`, first and once: the model, short French conversation instructions (when to
    delegate, which of our tools a delegation may end in), `audio/pcmu` at 8 kHz both ways (the
    telephone's own audio: nothing is transcoded), the voice, `delegation: {type: client}` (our
    application answers every delegation) and, for a session carrying a call on, the
    conversation so far as `input` items. Client delegation takes no tool list: the tools live
    in the instructions and in our application, which routes each delegated task (`delegation`).
  * `session.input_audio.append`: the caller's audio, only once `session.started` came.
  * `session.commentary.append` with the delegation's id: a result the model should say (the
    knowledge passages, or an error to explain); `session.thinking.append`: silent context (a
    call tool done, a typed question's words, an answer stopped without the caller's voice);
    with a null id, commentary is the greeting, a notice, or the passages for a question the
    model does not delegate (`answer_with`: a typed one, never heard, or one a lost session did
    not answer in full).
  * `session.output_audio.fixture.play` (GPT_LIVE_GREETING=fixture): the greeting as a clip the
    service plays in place of the model (`greeting`).
  * `session.close`: the end; the server answers `session.closed` with the final usage.
  No client event creates, cancels or truncates a response, and the context is append-only:
  the contract's `cut`, `discard` and `end_turn` have nothing to send; `answer` sends only a
  typed question's passages, `cancel` only the thinking that the answer is not heard any more.
"""

from __future__ import annotations

from binascii import b2a_base64
from collections.abc import Sequence
from typing import Any

from app.audio.formats import TELEPHONE_ULAW
from app.engines.contract import Exchange

AUDIO_FORMAT = TELEPHONE_ULAW
# Appends carry at most 500 tokens: French runs about three characters a token.
APPEND_MAX_CHARS = 1200
# `session.start` takes at most 128 initial messages, rendered within 8,192 tokens (the default
# limit, `SessionConfig.input`). Their tokens are estimated generously: three characters a
# token, as for appends, and a few more per message for its framing.
MAX_INITIAL_ITEMS = 128
INITIAL_ITEMS_TOKENS = 8192
MESSAGE_FRAMING_TOKENS = 8

INSTRUCTIONS = (
    "Tu es OCTI, conseiller en aviculture, au téléphone avec un éleveur de volailles. "
    "Parle uniquement en français, en phrases courtes : deux ou trois au plus, puis laisse la parole. "
    "L'éleveur appelle souvent depuis un bâtiment bruyant : ne t'arrête pas pour un bruit, "
    "mais laisse-le parler dès qu'il prend la parole. "
    "Pour toute question technique (incubation, ventilation, alimentation, santé, biosécurité), "
    "délègue la question et réponds à partir du résultat, sans rien inventer ; en attendant, "
    "dis simplement que tu regardes. "
    "Délègue aussi quand l'éleveur veut parler à une personne, ou quand il dit au revoir : "
    "l'application s'en charge."
)
SMS_OFFER = ("Après un conseil, propose une fois à l'éleveur de recevoir le récapitulatif par SMS ; "
             "s'il accepte, délègue : l'application l'enverra après l'appel.")


def conversation_instructions(offers_sms: bool) -> str:
    """The session's instructions; with the recap by SMS to offer (SMS_RECAP=ask), the offer."""
    return f"{INSTRUCTIONS} {SMS_OFFER}" if offers_sms else INSTRUCTIONS


# ------------------------------------------------------------------ client events


def session_start(model: str, voice: str, instructions: str = INSTRUCTIONS,
                  history: Sequence[Exchange] = (), context: str | None = None) -> dict[str, Any]:
    """The first event of a session; `history` and `context` (the passages of a question not yet
    answered) carry a call on in a new session: the context, and as many of the latest exchanges
    as the service's limits take (`MAX_INITIAL_ITEMS`, `INITIAL_ITEMS_TOKENS`)."""
    passages = [] if context is None else [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": context}]}]
    budget = INITIAL_ITEMS_TOKENS - sum(map(_estimated_tokens, passages))
    latest: list[dict[str, Any]] = []
    for exchange in reversed(history):
        if not exchange.text:
            continue
        item = _initial_item(exchange)
        budget -= _estimated_tokens(item)
        if budget < 0 or len(latest) + len(passages) == MAX_INITIAL_ITEMS:
            break
        latest.append(item)
    items = latest[::-1] + passages
    session: dict[str, Any] = {
        "model": model,
        "instructions": instructions,
        "audio": {"format": {"type": "audio/pcmu", "rate": AUDIO_FORMAT.rate}, "output": {"voice": voice}},
        "delegation": {"type": "client"},
    }
    if items:
        session["input"] = items
    return {"type": "session.start", "event_id": "octi_session_start", "session": session}


def _estimated_tokens(item: dict[str, Any]) -> int:
    return MESSAGE_FRAMING_TOKENS + len(item["content"][0]["text"]) // 3 + 1


def _initial_item(exchange: Exchange) -> dict[str, Any]:
    if exchange.role == "caller":
        return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": exchange.text}]}
    text = f"{exchange.text} …" if exchange.cut else exchange.text  # « … »: the caller cut it off
    return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}


def append_audio(audio: bytes) -> bytes:
    """The event as UTF-8 JSON, ready to frame: no str round trip for 50 appends a second."""
    return b'{"type":"session.input_audio.append","audio":"' + b2a_base64(audio, newline=False) + b'"}'


def commentary(content: str, delegation_id: str | None) -> dict[str, Any]:
    """Context the model should say: a delegation's result, or (no id) something to say now."""
    return {"type": "session.commentary.append", "content": _fit(content), "delegation_id": delegation_id}


def thinking(content: str, delegation_id: str | None) -> dict[str, Any]:
    """Silent context: it may shape what the model says later, never asks it to speak."""
    return {"type": "session.thinking.append", "content": _fit(content), "delegation_id": delegation_id}


def answer_with(context: str) -> dict[str, Any]:
    """Have the model answer the caller's last question now, from its passages (`context`)."""
    return commentary(f"Réponds maintenant à voix haute à la dernière question de l'éleveur, à partir de "
                      f"ceci :\n{context}", None)


def answer_stopped() -> dict[str, Any]:
    """The answer under way was stopped without the caller's voice (a button, a typed question,
    a goodbye): no client event stops the model, it goes on unheard; silent, so that it does not
    assume the caller heard the rest."""
    return thinking("Ta réponse en cours a été interrompue : l'éleveur n'en entend pas la suite.", None)


def say(text: str) -> dict[str, Any]:
    """Have the model say `text` now (the greeting, a notice)."""
    return commentary(f"Dis à l'éleveur, mot pour mot : « {text} »", None)


def session_close() -> dict[str, Any]:
    return {"type": "session.close"}


def _fit(content: str) -> str:
    if len(content) <= APPEND_MAX_CHARS:
        return content
    cut = content.rfind(" ", 0, APPEND_MAX_CHARS - 2)
    return content[: cut if cut > 0 else APPEND_MAX_CHARS - 2] + " …"
