"""Weaviate's relativeScoreFusion, ported so the embedded store ranks like Weaviate does.

Port of `FusionRelativeScore` and the leg selection of `hybrid.Search` (weaviate/weaviate,
usecases/traverser/hybrid/hybrid_fusion.go and searcher.go):

- legs are [keyword, vector] with weights [1 - alpha, alpha]; a leg whose weight is 0 is not
  run at all (so its hits do not even appear with a zero score);
- within a leg, scores are min-max normalised to [0, 1]; when every score of the leg is equal
  (one hit, or ties only) each hit gets the full leg weight;
- normalised scores are multiplied by the leg weight and summed; a hit missing from a leg gets
  0 from it;
- sort by fused score descending; fused scores closer than 1e-7 are ties, broken by the raw
  ("secondary") score, which is the vector leg's raw score when the hit is in it, else the
  keyword leg's (Weaviate keeps the last leg's result); then by id, so the order is stable
  (Go's sort.Slice is not, Weaviate leaves that last tie to chance).

Raw scores: keyword = BM25 (higher is better), vector = 1 - cosine distance = cosine similarity.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["FusedHit", "TIE_EPSILON", "leg_weights", "relative_score_fusion"]

K = TypeVar("K", bound=Hashable)

# Weaviate compares (a - b)^2 < 1e-14, i.e. |a - b| < 1e-7.
TIE_EPSILON = 1e-7


@dataclass(frozen=True, slots=True)
class FusedHit(Generic[K]):
    id: K
    score: float                    # fused score, in [0, 1]
    keyword_score: float | None     # raw leg scores, None when absent from that leg
    vector_score: float | None

    @property
    def secondary(self) -> float:
        """The raw score Weaviate breaks ties with: the last leg that returned the hit."""
        if self.vector_score is not None:
            return self.vector_score
        assert self.keyword_score is not None
        return self.keyword_score


def leg_weights(alpha: float) -> tuple[float, float]:
    """(keyword weight, vector weight) for a hybrid alpha, clamped to [0, 1]."""
    alpha = min(1.0, max(0.0, float(alpha)))
    return 1.0 - alpha, alpha


def _normalised(leg: Sequence[tuple[K, float]], weight: float) -> dict[K, float]:
    if not leg:
        return {}
    scores = [score for _, score in leg]
    low, high = min(scores), max(scores)
    if high == low:
        return {key: weight for key, _ in leg}
    span = high - low
    return {key: weight * (score - low) / span for key, score in leg}


def _order(hits: list[FusedHit[K]]) -> None:
    """Sort in place: fused score descending; near-ties by raw score descending, then id."""
    hits.sort(key=lambda h: (-h.score, -h.secondary, h.id))
    # Scores within TIE_EPSILON of their neighbour form a run that Weaviate treats as equal;
    # reorder each run by the tie-breakers alone (a transitive stand-in for Go's comparator).
    start = 0
    while start < len(hits):
        end = start + 1
        while end < len(hits) and hits[end - 1].score - hits[end].score < TIE_EPSILON:
            end += 1
        if end - start > 1:
            hits[start:end] = sorted(hits[start:end], key=lambda h: (-h.secondary, h.id))
        start = end


def relative_score_fusion(
    keyword: Sequence[tuple[K, float]],
    vector: Sequence[tuple[K, float]],
    alpha: float,
    limit: int | None = None,
) -> list[FusedHit[K]]:
    """Fuse two legs of (id, raw score) pairs; best first, at most `limit` hits.

    A leg whose weight is zero is ignored, as Weaviate does not run it. An id repeated
    within a leg keeps its best raw score. Ids must be mutually orderable (all str or all int).
    """
    keyword_weight, vector_weight = leg_weights(alpha)
    legs: list[tuple[dict[K, float], float]] = []
    for leg, weight in ((keyword, keyword_weight), (vector, vector_weight)):
        if weight <= 0.0:
            legs.append(({}, weight))
            continue
        best: dict[K, float] = {}
        for key, score in leg:
            score = float(score)
            if key not in best or score > best[key]:
                best[key] = score
        legs.append((best, weight))

    (kw_raw, kw_weight), (vec_raw, vec_weight) = legs
    kw_norm = _normalised(list(kw_raw.items()), kw_weight)
    vec_norm = _normalised(list(vec_raw.items()), vec_weight)

    hits = [
        FusedHit(
            id=key,
            score=kw_norm.get(key, 0.0) + vec_norm.get(key, 0.0),
            keyword_score=kw_raw.get(key),
            vector_score=vec_raw.get(key),
        )
        for key in {**kw_raw, **vec_raw}
    ]
    _order(hits)
    return hits if limit is None else hits[: max(0, limit)]
