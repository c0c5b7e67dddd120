"""Retrieval evaluation: does the store find the document that answers a caller's question?

The evaluation set (`eval/questions.json`) lists questions as farmers ask them on the phone,
each with the file name of the sample-pack document that answers it. A question is found
at rank r when the passage at rank r comes from the expected document; passages are matched
to documents by file name (the last component of `Passage.source`), so the set works
whatever path the pack was ingested from.

Metrics, over all questions, searching `limit` passages per question:
    recall@1  share of questions whose first passage comes from the expected document;
    recall@5  share found within the first 5 passages (within `limit` if it is below 5);
    MRR       mean of 1/rank of the first passage from the expected document (0 if absent
              from the `limit` passages).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app.knowledge.store import KnowledgeStore

QUESTIONS_PATH = Path(__file__).with_name("eval") / "questions.json"


@dataclass(frozen=True, slots=True)
class EvalQuestion:
    question: str
    expected_source: str   # file name of the answering document, e.g. "litiere.md"


@dataclass(frozen=True, slots=True)
class EvalResult:
    question: str
    expected_source: str
    rank: int | None                 # 1-based rank of the first passage from the expected document
    retrieved: tuple[str, ...]       # file names of the passages returned, in order


@dataclass(slots=True)
class EvalReport:
    limit: int
    total: int
    recall_at_1: float
    recall_at_5: float
    mrr: float
    results: list[EvalResult] = field(default_factory=list)

    @property
    def misses(self) -> list[EvalResult]:
        """Questions whose expected document is not among the `limit` passages."""
        return [r for r in self.results if r.rank is None]

    def to_dict(self) -> dict:
        return {
            "limit": self.limit,
            "total": self.total,
            "recall_at_1": self.recall_at_1,
            "recall_at_5": self.recall_at_5,
            "mrr": self.mrr,
            "misses": [asdict(r) | {"retrieved": list(r.retrieved)} for r in self.misses],
            "results": [asdict(r) | {"retrieved": list(r.retrieved)} for r in self.results],
        }


def document_name(source: str) -> str:
    """The file name of a source path (either slash)."""
    return source.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def parse_questions(raw: object) -> list[EvalQuestion]:
    """Validate the JSON structure of an evaluation set."""
    if not isinstance(raw, list):
        raise ValueError("an evaluation set is a JSON list of {question, expected_source} objects")
    questions = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValueError(f"item {index}: expected an object")
        question, expected = item.get("question"), item.get("expected_source")
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"item {index}: 'question' must be a non-empty string")
        if not isinstance(expected, str) or not expected.strip():
            raise ValueError(f"item {index}: 'expected_source' must be a non-empty string")
        questions.append(EvalQuestion(question.strip(), document_name(expected.strip())))
    return questions


def load_questions(path: str | Path | None = None) -> list[EvalQuestion]:
    """The evaluation set (blocking file read; small)."""
    path = Path(path) if path is not None else QUESTIONS_PATH
    return parse_questions(json.loads(path.read_text(encoding="utf-8")))


def _rank(expected: str, retrieved: Sequence[str]) -> int | None:
    for position, name in enumerate(retrieved, start=1):
        if name == expected:
            return position
    return None


async def evaluate(store: KnowledgeStore, questions: Iterable[EvalQuestion | dict], limit: int = 5) -> EvalReport:
    """Search every question and score the ranks (see the module docstring)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    items = [q if isinstance(q, EvalQuestion) else parse_questions([q])[0] for q in questions]
    results: list[EvalResult] = []
    for item in items:
        passages = await store.search(item.question, limit=limit)
        retrieved = tuple(document_name(p.source) for p in passages[:limit])
        results.append(EvalResult(item.question, item.expected_source, _rank(item.expected_source, retrieved),
                                  retrieved))
    total = len(results)
    if not total:
        return EvalReport(limit, 0, 0.0, 0.0, 0.0, [])
    at_1 = sum(1 for r in results if r.rank == 1)
    at_5 = sum(1 for r in results if r.rank is not None and r.rank <= 5)
    mrr = sum(1.0 / r.rank for r in results if r.rank is not None)
    return EvalReport(limit, total, at_1 / total, at_5 / total, mrr / total, results)
