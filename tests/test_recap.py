"""The record of the exchanges that stands for the recap when the model writes none."""

from __future__ import annotations

from app.agent import phrases
from app.agent.recap import ANSWER_MAX_CHARS, exchanges
from app.agent.state import CallState, Turn
from app.knowledge.retrieval import Retrieval


def said(state: CallState, item: str, text: str) -> Turn:
    turn = state.assistant_turn(item)
    turn.text = text
    return turn


def asked(state: CallState, item: str, text: str, *, searched: bool) -> Turn:
    turn = state.caller_turn(item)
    turn.text = text
    turn.retrieval = Retrieval(text, "ok") if searched else None
    return turn


def as_heard(turn: Turn) -> str:
    """Stands for the speaker's: an interrupted answer was heard up to « | »."""
    return turn.text.split("|")[0].strip() if turn.interrupted else turn.text


def test_each_knowledge_question_with_the_answer_the_caller_heard():
    state = CallState()
    said(state, "greeting", "Bonjour, ici OCTI.")
    asked(state, "q1", "Quelle température pour la couveuse ?", searched=True)
    said(state, "ack", "Je regarde.")
    said(state, "a1", "Réglez à 37,7 degrés. | Et tournez les œufs.").interrupted = True
    asked(state, "q2", "Et l'humidité ?", searched=True)
    said(state, "a2", "Entre 50 et 55 %.")
    asked(state, "bye", "Merci, au revoir.", searched=False)
    said(state, "goodbye", phrases.GOODBYE)
    asked(state, "q3", "Et les dindes ?", searched=True)  # hung up before any answer
    assert exchanges(state, as_heard) == "\n".join([
        phrases.EXCHANGES_RECAP_HEADER,
        "- « Quelle température pour la couveuse ? » : Je regarde. Réglez à 37,7 degrés.",
        "- « Et l'humidité ? » : Entre 50 et 55 %.",
    ])


def test_a_long_answer_is_cut_at_a_word_and_no_question_answered_is_no_record():
    state = CallState()
    asked(state, "q1", "Comment ventiler ?", searched=True)
    said(state, "a1", "ventilez " * 100)
    line = exchanges(state, as_heard).split("\n")[1]
    answer = line.split(" : ", 1)[1]
    assert answer.endswith("ventilez …") and len(answer) <= ANSWER_MAX_CHARS + 2
    lonely = CallState()
    asked(lonely, "q1", "Allô ?", searched=True)
    assert exchanges(lonely, as_heard) is None
