"""A turn as the call log records it: the caller's with what retrieval found, OCTI's with what
the caller heard of it."""

from __future__ import annotations

from time import perf_counter

from app.agent.speaker import Speaker
from app.agent.state import CallState, Turn
from app.calllog.journal import CallJournal, heard_text
from app.calllog.records import PassageUsed


def log_caller_turn(journal: CallJournal, turn: Turn) -> None:
    turn.logged = True
    retrieval = turn.retrieval
    journal.turn(
        turn.index, "caller", turn.text, start_ms=turn.start_ms, end_ms=turn.end_ms,
        passages=tuple(PassageUsed(p.id, p.source, p.title, p.score) for p in retrieval.passages)
        if retrieval else (),
        retrieval_ms=retrieval.elapsed_ms if retrieval else None,
        retrieval_outcome=retrieval.outcome if retrieval else None,
    )


def log_assistant_turn(journal: CallJournal, turn: Turn, generated_ms: float) -> None:
    """An interrupted answer is logged as far as it was heard."""
    turn.logged = True
    heard = turn.heard_ms if turn.interrupted and turn.heard_ms is not None else generated_ms
    journal.turn(
        turn.index, "assistant", heard_text(turn.text, heard, generated_ms) if turn.interrupted else turn.text,
        start_ms=turn.start_ms, end_ms=turn.start_ms + heard if turn.start_ms is not None else None,
        interrupted=turn.interrupted, heard_ms=turn.heard_ms,
        speech_end_to_model_audio_ms=turn.speech_end_to_model_audio_ms,
        model_audio_to_caller_ms=turn.model_audio_to_caller_ms,
    )


def log_unfinished_turns(journal: CallJournal, state: CallState, speaker: Speaker) -> None:
    """At the call's end, the turns it ended in the middle of, so that the log holds every turn
    the call counts: the caller's words cut by the hang-up, as far as they came; OCTI's answer
    cut where the caller stopped hearing it, as a barge-in would, whether or not the model had
    finished it."""
    now = perf_counter()
    playing = set(speaker.tracker.queued_items())
    for turn in state.turns:
        if turn.role == "caller":
            if not turn.logged:
                log_caller_turn(journal, turn)
        elif not turn.interrupted and (not turn.logged or turn.item_id in playing):
            heard = speaker.heard_ms(turn.item_id, now)
            generated_ms = speaker.answers.generated_ms.get(turn.item_id, 0.0)
            if turn.logged and heard >= generated_ms:
                continue  # heard to its end: only its last mark was still on its way back
            turn.interrupted, turn.heard_ms = True, heard
            log_assistant_turn(journal, turn, generated_ms)
