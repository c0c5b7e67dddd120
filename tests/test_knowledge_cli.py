"""`octi kb …` against the real configured store, with DATA_DIR in a temporary directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import get_settings
from app.knowledge import stores
from app.knowledge.cli import ProgressBar
from app.knowledge.embedding import Embedder
from app.knowledge.seed import SAMPLE_PACK_DIR
from tests.cli_runner import run_octi
from tests.test_knowledge_ingest import make_pdf

POUSSINS = """# Démarrage des poussins

## Comportement

Des poussins entassés sous la lampe ont froid : augmentez le chauffage.
"""

LITIERE = """# Litière

## Humidité

Une litière collée en croûte sous les abreuvoirs signale une fuite d'eau.
"""


@pytest.fixture
def kb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Settings read afresh, with the data directory under tmp_path (and no stray .env)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KNOWLEDGE_BACKEND", "embedded")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _no_model():
    raise RuntimeError("no model in tests")


@pytest.fixture
def keywords_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real store, opened with an embedder whose model cannot load: keyword search only
    (seeding the whole sample pack with the real model takes minutes on 2 cores)."""
    real_open_store = stores.open_store
    embedder = Embedder(factory=_no_model)
    monkeypatch.setattr(stores, "open_store", lambda settings, embedder_=None: real_open_store(settings, embedder))


def _docs(root: Path) -> Path:
    docs = root / "docs"
    docs.mkdir()
    (docs / "poussins.md").write_text(POUSSINS, encoding="utf-8")
    (docs / "litiere.md").write_text(LITIERE, encoding="utf-8")
    return docs


def test_ingest_search_and_stats_with_the_real_model(kb_env: Path) -> None:
    docs = _docs(kb_env)

    result = run_octi("kb", "ingest", str(docs))
    assert result.exit_code == 0
    out, err = result.stdout, result.stderr
    assert "2 added, 0 replaced, 0 unchanged, 0 failed; 2 chunks written" in out
    assert "[" + "#" * ProgressBar.WIDTH + "] 2/2" in err
    assert (kb_env / "data").is_dir()

    result = run_octi("kb", "search", "mes poussins se serrent tous sous la lampe", "--json", "--limit", "2")
    assert result.exit_code == 0
    out, err = result.stdout, result.stderr
    passages = json.loads(out)
    assert isinstance(passages, list) and 1 <= len(passages) <= 2
    for passage in passages:
        assert {"id", "source", "title", "text", "score"} <= set(passage)
        assert isinstance(passage["score"], float)
    assert passages[0]["source"] == str(docs / "poussins.md")
    assert passages[0]["title"] == "Démarrage des poussins – Comportement"
    assert "entassés sous la lampe" in passages[0]["text"]
    assert "sample pack" not in err      # the store had content: no seeding

    result = run_octi("kb", "stats")
    assert result.exit_code == 0
    out = result.stdout
    assert "backend:   embedded" in out
    assert "documents: 2" in out
    assert "chunks:    2" in out
    assert "vectors:   on" in out
    assert str(kb_env / "data") in out

    result = run_octi("kb", "ingest", str(docs))
    assert result.exit_code == 0
    out = result.stdout
    assert "0 added, 0 replaced, 2 unchanged, 0 failed; 0 chunks written" in out


def test_ingest_exits_1_when_a_file_fails(kb_env: Path, keywords_only: None) -> None:
    docs = _docs(kb_env)
    (docs / "casse.pdf").write_bytes(b"%PDF-1.4 broken")
    (docs / "guide.pdf").write_bytes(make_pdf([["Le vide sanitaire suit la désinfection."]]))

    result = run_octi("kb", "ingest", "--quiet", str(docs), str(kb_env / "absent.txt"))
    assert result.exit_code == 1
    out, err = result.stdout, result.stderr
    assert "3 added, 0 replaced, 0 unchanged, 2 failed; 3 chunks written" in out
    assert f"failed: {docs / 'casse.pdf'}: not a readable PDF" in err
    assert f"failed: {kb_env / 'absent.txt'}: no such file or directory" in err
    assert "#" not in err                # --quiet: no bar


def test_a_directory_ingested_under_two_spellings_is_stored_once(kb_env: Path, keywords_only: None) -> None:
    docs = _docs(kb_env)
    assert "2 added" in run_octi("kb", "ingest", "--quiet", "docs").stdout
    result = run_octi("kb", "ingest", "--quiet", str(docs.resolve()))
    assert "0 added, 0 replaced, 2 unchanged, 0 failed" in result.stdout
    assert "documents: 2" in run_octi("kb", "stats").stdout
    passages = json.loads(run_octi("kb", "search", "poussins entassés sous la lampe", "--json").stdout)
    assert [p["source"] for p in passages] == [(docs.resolve() / "poussins.md").as_posix()]


def test_delete_and_prune(kb_env: Path, keywords_only: None) -> None:
    docs = _docs(kb_env)
    (docs / "eau.md").write_text("# Eau\n\nVérifiez les pipettes chaque matin.\n", encoding="utf-8")
    run_octi("kb", "ingest", "--quiet", "docs")
    root = docs.resolve().as_posix()

    result = run_octi("kb", "delete", "docs/eau.md", f"{root}/absent.md")
    assert result.exit_code == 1
    assert f"removed: {root}/eau.md" in result.stdout and "1 removed, 1 not stored" in result.stdout
    assert f"not stored: {root}/absent.md" in result.stderr
    assert run_octi("kb", "delete", f"{root}/litiere.md").exit_code == 0

    (docs / "poussins.md").unlink()
    result = run_octi("kb", "ingest", "--quiet", "docs")
    assert "2 added, 0 replaced, 0 unchanged, 0 failed" in result.stdout and "removed" not in result.stdout
    assert "documents: 3" in run_octi("kb", "stats").stdout   # the document of the file gone stays
    result = run_octi("kb", "ingest", "--quiet", "--prune", "docs")
    assert result.exit_code == 0
    assert f"removed: {root}/poussins.md" in result.stdout
    assert "0 added, 0 replaced, 2 unchanged, 0 failed; 0 chunks written; 1 removed" in result.stdout
    assert "documents: 2" in run_octi("kb", "stats").stdout


def test_stats_seeds_an_empty_store_and_says_why_vectors_are_off(
        kb_env: Path, keywords_only: None) -> None:
    result = run_octi("kb", "stats")
    assert result.exit_code == 0
    out, err = result.stdout, result.stderr
    assert "ingesting the sample pack" in err
    assert "documents: 40" in out
    assert "vectors:   off (keywords only)" in out
    assert "no model in tests" in out
    assert f"data dir:  {kb_env / 'data'}" in out

    result = run_octi("kb", "stats", "--json")
    assert result.exit_code == 0
    out, err = result.stdout, result.stderr
    info = json.loads(out)
    assert info["backend"] == "embedded" and info["ok"] is True
    assert info["documents"] == 40 and info["chunks"] > 40
    assert info["vectors"] is False
    assert "sample pack" not in err      # seeded once

    # ingesting the pack by hand refreshes the seeded copies, it does not duplicate them
    result = run_octi("kb", "ingest", "--quiet", str(SAMPLE_PACK_DIR))
    assert result.exit_code == 0
    assert "0 added, 0 replaced, 40 unchanged, 0 failed" in result.stdout


def test_search_text_output(kb_env: Path, keywords_only: None) -> None:
    result = run_octi("kb", "search", "poux rouges sous les perchoirs", "--limit", "3")
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("1. [")
    assert "sample_pack/poux-rouges.md #" in out
    assert "2. [" in out and "4. [" not in out


def test_search_json_on_a_question_without_content_words(kb_env: Path, keywords_only: None) -> None:
    result = run_octi("kb", "search", "euh ben", "--json")
    assert result.exit_code == 0
    out = result.stdout
    assert json.loads(out) == []


def test_eval_reports_the_metrics(kb_env: Path, keywords_only: None) -> None:
    result = run_octi("kb", "eval", "--json")
    assert result.exit_code == 0
    out = result.stdout
    report = json.loads(out)
    assert report["limit"] == 5 and report["total"] >= 60
    assert 0 <= report["recall_at_1"] <= report["recall_at_5"] <= 1
    assert 0 <= report["mrr"] <= 1
    assert all({"question", "expected_source", "retrieved"} <= set(m) for m in report["misses"])

    result = run_octi("kb", "eval", "--limit", "3")
    assert result.exit_code == 0
    out = result.stdout
    for label in ("recall@1:", "recall@5:", "MRR:", "misses:"):
        assert label in out

    assert run_octi("kb", "eval", "--min-recall", "1.01").exit_code == 1


def test_eval_with_another_question_file(kb_env: Path, keywords_only: None) -> None:
    questions = kb_env / "q.json"
    questions.write_text(json.dumps([{"question": "poux rouges perchoirs", "expected_source": "poux-rouges.md"}]),
                         encoding="utf-8")
    result = run_octi("kb", "eval", "--questions", str(questions), "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["total"] == 1 and report["recall_at_5"] == 1.0

    questions.write_text("{not json", encoding="utf-8")
    result = run_octi("kb", "eval", "--questions", str(questions))
    assert result.exit_code == 2
    assert "cannot load the evaluation set" in result.stderr


def test_usage_errors(kb_env: Path, keywords_only: None) -> None:
    assert run_octi("kb").exit_code == 2
    assert run_octi("kb", "search").exit_code == 2
    assert run_octi("kb", "nonsense").exit_code == 2
    assert run_octi("kb", "--help").exit_code == 0
    assert run_octi("kb", "search", "poux", "--limit", "0").exit_code == 2


def test_a_store_that_cannot_open_exits_2(kb_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KNOWLEDGE_BACKEND", "weaviate")
    monkeypatch.delenv("WEAVIATE_URL", raising=False)
    get_settings.cache_clear()
    result = run_octi("kb", "stats")
    assert result.exit_code == 2
    assert "cannot open the knowledge store" in result.stderr


def test_progress_bar_on_a_terminal() -> None:
    class Tty:
        def __init__(self) -> None:
            self.written = ""

        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> None:
            self.written += text

        def flush(self) -> None:
            pass

    stream = Tty()
    bar = ProgressBar(stream)  # type: ignore[arg-type]
    bar(1, 2, "docs/a-long-name.md", "added")
    bar(2, 2, "b.md", "unchanged")
    first, second = stream.written.split("\r")[1:]
    assert first.startswith("[" + "#" * (ProgressBar.WIDTH // 2) + "-" * (ProgressBar.WIDTH // 2) + "] 1/2 added")
    assert second.startswith("[" + "#" * ProgressBar.WIDTH + "] 2/2 unchanged b.md")
    assert len(second.rstrip("\n")) >= len(first)    # padded over the longer previous line
    assert stream.written.endswith("\n")
