"""relativeScoreFusion, checked against Weaviate's own expected values and edge cases."""

from __future__ import annotations

import pytest

from app.knowledge.fusion import TIE_EPSILON, leg_weights, relative_score_fusion


def legs(keyword: list[float], vector: list[float]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """Weaviate's test layout: the i-th score of each leg belongs to document i."""
    return list(enumerate(keyword)), list(enumerate(vector))


# (alpha, keyword scores, vector scores, expected fused scores, expected order), with the same
# inputs and expectations as TestFusionRelativeScore in weaviate/weaviate (weights there are
# [1 - alpha, alpha]).
WEAVIATE_CASES = [
    (0.5, [1, 2, 3], [0, 1, 2], [1, 0.5, 0], [2, 1, 0]),
    (0.5, [0, 2, 0.1], [0, 0.2, 2], [0.55, 0.525, 0], [1, 2, 0]),
    (0.25, [0.5, 0.5, 0], [0, 0.01, 0.001], [1, 0.75, 0.025], [1, 0, 2]),
    (0.25, [], [], [], []),
    (0.25, [1], [], [0.75], [0]),
    (0.25, [], [1], [0.25], [0]),
    (0.25, [1, 2], [], [0.75, 0], [1, 0]),
    (0.25, [], [1, 2], [0.25, 0], [1, 0]),
    (0.25, [1, 1], [1, 2], [1, 0.75], [1, 0]),
    (0.0, [1, 2, 3], [], [1, 0.5, 0], [2, 1, 0]),
    (0.25, [1, 2, 3, 4], [1, 2, 3], [0.75, 0.75, 0.375, 0], [3, 2, 1, 0]),
]


@pytest.mark.parametrize("alpha, keyword, vector, scores, order", WEAVIATE_CASES)
def test_matches_weaviate_reference_cases(alpha, keyword, vector, scores, order):
    fused = relative_score_fusion(*legs(keyword, vector), alpha)
    assert [hit.id for hit in fused] == order
    assert [hit.score for hit in fused] == pytest.approx(scores, abs=1e-4)


def test_min_max_normalisation_of_one_leg():
    # The example from Weaviate's FusionRelativeScore doc comment: [1, 8, 6, 11] -> [0, .7, .5, 1].
    fused = relative_score_fusion([], list(enumerate([1, 8, 6, 11])), alpha=1.0)
    assert {hit.id: hit.score for hit in fused} == pytest.approx({0: 0.0, 1: 0.7, 2: 0.5, 3: 1.0})


def test_all_equal_scores_get_the_leg_weight():
    fused = relative_score_fusion([("a", 3.0), ("b", 3.0)], [("c", 0.4)], alpha=0.3)
    assert {hit.id: hit.score for hit in fused} == pytest.approx({"a": 0.7, "b": 0.7, "c": 0.3})


def test_missing_from_a_leg_contributes_zero():
    fused = relative_score_fusion([("a", 10.0), ("b", 5.0)], [("b", 0.9), ("c", 0.1)], alpha=0.5)
    scores = {hit.id: hit.score for hit in fused}
    assert scores == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.0})
    b = next(hit for hit in fused if hit.id == "b")
    assert (b.keyword_score, b.vector_score) == (5.0, 0.9)
    c = next(hit for hit in fused if hit.id == "c")
    assert c.keyword_score is None


def test_zero_weight_leg_is_not_run():
    keyword, vector = [("a", 2.0), ("b", 1.0)], [("c", 0.9), ("a", 0.1)]
    only_keywords = relative_score_fusion(keyword, vector, alpha=0.0)
    assert [hit.id for hit in only_keywords] == ["a", "b"]  # "c" never appears, not even at 0
    assert all(hit.vector_score is None for hit in only_keywords)
    only_vectors = relative_score_fusion(keyword, vector, alpha=1.0)
    assert [hit.id for hit in only_vectors] == ["c", "a"]


def test_alpha_is_clamped():
    assert leg_weights(1.7) == (0.0, 1.0)
    assert leg_weights(-0.2) == (1.0, 0.0)
    assert leg_weights(0.25) == (0.75, 0.25)


def test_ties_prefer_the_vector_raw_score_then_the_id():
    # Both fuse to 0.5; Weaviate keeps the last leg's raw score (vector) for tie-breaking.
    fused = relative_score_fusion([("x", 9.0), ("y", 1.0)], [("y", 0.8), ("x", 0.2)], alpha=0.5)
    assert [hit.id for hit in fused] == ["y", "x"]
    assert fused[0].score == pytest.approx(fused[1].score)
    # Same fused score and same raw score: the id decides, so the order is reproducible.
    fused = relative_score_fusion([("b", 1.0), ("a", 1.0)], [], alpha=0.0)
    assert [hit.id for hit in fused] == ["a", "b"]


def test_scores_closer_than_epsilon_are_ties():
    # "low" is ahead by less than 1e-7 on the fused score, "high" wins on the raw score.
    keyword = [("low", 1.0), ("high", 1.0 - TIE_EPSILON / 10), ("floor", 0.0)]
    fused = relative_score_fusion(keyword, [], alpha=0.0)
    assert fused[0].score > fused[1].score
    assert [hit.id for hit in fused][:2] == ["low", "high"]  # same raw order here: no flip
    vector = [("v1", 0.5), ("v2", 0.5 + TIE_EPSILON / 10), ("v0", 0.0)]
    fused = relative_score_fusion([], vector, alpha=1.0)
    assert [hit.id for hit in fused][:2] == ["v2", "v1"]


def test_duplicate_ids_in_a_leg_keep_the_best_score():
    fused = relative_score_fusion([("a", 1.0), ("a", 3.0), ("b", 2.0)], [], alpha=0.0)
    assert [(hit.id, hit.keyword_score) for hit in fused] == [("a", 3.0), ("b", 2.0)]


def test_negative_scores_normalise_like_any_other():
    fused = relative_score_fusion([], [("a", -0.2), ("b", 0.3), ("c", 0.05)], alpha=1.0)
    assert [(hit.id, round(hit.score, 6)) for hit in fused] == [("b", 1.0), ("c", 0.5), ("a", 0.0)]


def test_limit():
    keyword = [(i, float(i)) for i in range(10)]
    assert [hit.id for hit in relative_score_fusion(keyword, [], 0.0, limit=3)] == [9, 8, 7]
    assert relative_score_fusion(keyword, [], 0.0, limit=0) == []
    assert len(relative_score_fusion(keyword, [], 0.0)) == 10


def test_fused_scores_stay_in_unit_interval_and_descend():
    keyword = [(i, (i * 37 % 11) / 3) for i in range(40)]
    vector = [(i, ((i * 17) % 13) / 13 - 0.5) for i in range(20, 60)]
    for alpha in (0.0, 0.2, 0.5, 0.8, 1.0):
        fused = relative_score_fusion(keyword, vector, alpha)
        scores = [hit.score for hit in fused]
        assert all(0.0 <= s <= 1.0 + 1e-12 for s in scores)
        assert all(a >= b - TIE_EPSILON for a, b in zip(scores, scores[1:]))
