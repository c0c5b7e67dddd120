"""After the call: what OCTI advised, summarised in French by the model out of band (the
conversation is over, nothing joins it), with the fiches the answers came from. When the
model writes none (GPT-Live has no out-of-band text; a Realtime session lost or too slow at the
end), the record of the exchanges stands for it: each knowledge question and OCTI's answer to
it, as the caller heard it.

It runs once the caller's side is closed and before the model session is, within
RECAP_TIMEOUT_SECONDS; a conversation without a question answered gets none.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from app.agent import phrases
from app.agent.rag import shorten
from app.agent.state import CallState, Turn
from app.calllog.journal import CallJournal
from app.channels.contract import CallChannel
from app.config import Settings
from app.engines.contract import Engine
from app.logs import mask_phones

log = logging.getLogger(__name__)

RECAP_TIMEOUT_SECONDS = 15.0
ANSWER_MAX_CHARS = 300  # of each answer in a record of the exchanges


def fiches(state: CallState) -> list[str]:
    """The titles of the passages the caller's questions brought, first seen first."""
    titles = (passage.title for turn in state.turns if turn.role == "caller" and turn.retrieval
              for passage in turn.retrieval.passages)
    return list(dict.fromkeys(title for title in titles if title))


def exchanges(state: CallState, heard_text: Callable[[Turn], str]) -> str | None:
    """Each knowledge question of the call with OCTI's answer to it as heard (None: none answered)."""
    # Each caller turn ("" when it was no question searched) and OCTI's words after it.
    said_after: list[tuple[str, list[str]]] = []
    for turn in state.turns:
        if turn.role == "caller":
            said_after.append((turn.text.strip() if turn.retrieval is not None else "", []))
        elif said_after and (text := heard_text(turn)):
            said_after[-1][1].append(text)
    lines = [f"- « {question} » : {shorten(' '.join(said), ANSWER_MAX_CHARS)}" for question, said in said_after
             if question and said]
    return "\n".join([phrases.EXCHANGES_RECAP_HEADER, *lines]) if lines else None


async def recap_of(engine: Engine, state: CallState, settings: Settings,
                   heard_text: Callable[[Turn], str]) -> str | None:
    answered = any(turn.role == "caller" and turn.text for turn in state.turns)
    if not settings.call_recap or not answered:
        return None
    summary = None
    if engine.is_open:
        try:
            async with asyncio.timeout(RECAP_TIMEOUT_SECONDS):
                summary = await engine.summarize(phrases.RECAP_INSTRUCTIONS)
        except TimeoutError:
            log.warning("the model wrote no recap within %.0f s: the exchanges stand for it", RECAP_TIMEOUT_SECONDS)
        except Exception:  # the call is over and its end must still be logged, whatever the engine did
            log.exception("the model's recap failed: the exchanges stand for it")
    if summary is not None and summary.usage:
        state.usage.append(summary.usage)  # the recap is part of the call's cost
    text = summary.text if summary is not None else exchanges(state, heard_text)
    if text is None:
        return None
    sources = fiches(state)
    return text + (f"\n\nFiches : {' ; '.join(sources)}." if sources else "")


SMS_MAX_CHARS = 1500  # Twilio joins up to 1,600 characters into one message


async def text_recap(channel: CallChannel, recap: str | None, state: CallState, settings: Settings,
                     journal: CallJournal) -> None:
    """The recap, texted to the caller when they asked for it (or SMS_RECAP=always); a failure
    is logged in the call, never raised."""
    if recap is None or not (state.recap_by_sms or settings.sms_recap == "always"):
        return
    refusal = channel.texts_unavailable()
    if refusal is not None:
        journal.event("sms_recap_failed", refusal)
        return
    text = f"{phrases.SMS_RECAP_HEADER}\n{recap}"
    if len(text) > SMS_MAX_CHARS:
        text = text[: SMS_MAX_CHARS - 1].rstrip() + "…"
    try:
        await channel.send_text(text)
    except Exception as exc:  # whatever the channel's transport raises
        log.warning("the recap could not be texted: %s", exc)
        # Twilio's refusals may quote the number; the call log keeps it only where it is meant to.
        journal.event("sms_recap_failed", mask_phones(str(exc))[:200])
        return
    journal.event("sms_recap_sent", f"{len(text)} caractères")
