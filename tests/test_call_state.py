"""A call's turns keep their own index, the call log's key for each (call, index)."""

from __future__ import annotations

from app.agent.state import CallState


def test_a_forgotten_noise_turn_never_gives_its_index_to_a_later_turn():
    # A noise starts before the answer's first audio (its turn made first), then the answer's
    # turn is made, then the noise is judged a noise and forgotten; the next question comes.
    state = CallState()
    state.caller_turn("item_question")
    state.assistant_turn("item_greeting_answer")
    noise = state.caller_turn("item_noise")
    state.assistant_turn("item_answer")
    state.forget_caller_turn(noise)
    state.caller_turn("item_next_question")

    indexes = [turn.index for turn in state.turns]
    assert [turn.item_id for turn in state.turns] == [
        "item_question", "item_greeting_answer", "item_answer", "item_next_question"]
    assert len(set(indexes)) == len(indexes), indexes
    assert indexes == sorted(indexes)  # still in the conversation's order

