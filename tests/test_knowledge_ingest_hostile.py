"""Malformed or hostile files: each is read or reported as failed, never raised out of
ingestion, and the other files go on."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.knowledge import ingest
from app.knowledge.ingest import ingest_paths
from tests.test_knowledge_ingest import MemoryStore

HOSTILE = {
    # far deeper than Python's recursion limit: the HTML walk must not recurse
    "nested-divs.html": ("<h1>Divs</h1>" + "<div>" * 3000 + "tout au fond" + "</div>" * 3000).encode(),
    "nested-spans.html": ("<h1>Spans</h1><p>" + "<span>" * 20000 + "tout au fond").encode(),
    "nested-lists.md": "".join("  " * depth + "- tout au fond\n" for depth in range(40)).encode(),
    "open-brackets.md": ("[" * 20000 + "tout au fond\n").encode(),
    "emphasis-soup.md": ("**_" * 2000 + "tout au fond" + "\n").encode(),
    "unclosed-front-matter.md": b"---\ntitle: jamais ferme\n\ntout au fond\n",
}


async def test_hostile_files_are_read_without_raising(tmp_path: Path) -> None:
    for name, data in HOSTILE.items():
        (tmp_path / name).write_bytes(data)
    store = MemoryStore()
    report = await ingest_paths(store, [tmp_path])
    assert report.failed == []
    assert sorted(report.added) == sorted(str(tmp_path / name) for name in HOSTILE)
    for source, (_, chunks) in store.documents.items():
        assert "tout au fond" in " ".join(c.text for c in chunks), source


async def test_files_without_text_or_with_binary_content_are_reported(tmp_path: Path) -> None:
    # the Markdown parser leaves out what is nested past 100 levels: here, everything
    (tmp_path / "citations.md").write_text(">" * 5000 + " tout au fond\n", encoding="utf-8")
    (tmp_path / "binaire.html").write_bytes(b"<html>\x00\x01\x02\x00</html>")
    (tmp_path / "scripts.html").write_text("<script>var a = 1;</script><style>p{}</style><nav>menu</nav>",
                                           encoding="utf-8")
    (tmp_path / "commentaires.md").write_text("<!-- rien -->\n\n---\n\n<script>x()</script>\n", encoding="utf-8")
    (tmp_path / "bon.md").write_text("# Bon\n\nUn texte lisible.\n", encoding="utf-8")
    report = await ingest_paths(MemoryStore(), [tmp_path])
    assert report.added == [str(tmp_path / "bon.md")]
    failed = dict(report.failed)
    assert "binary" in failed[str(tmp_path / "binaire.html")]
    assert "no text" in failed[str(tmp_path / "scripts.html")]
    assert "no text" in failed[str(tmp_path / "commentaires.md")]
    assert "no text" in failed[str(tmp_path / "citations.md")]


async def test_a_parser_failing_unexpectedly_fails_that_file_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_reader(data: bytes, fallback_title: str) -> None:
        raise ValueError("lexbor said no")

    monkeypatch.setattr(ingest, "read_html", broken_reader)
    (tmp_path / "a.html").write_text("<h1>A</h1><p>Texte.</p>", encoding="utf-8")
    (tmp_path / "b.md").write_text("# B\n\nTexte.\n", encoding="utf-8")
    report = await ingest_paths(MemoryStore(), [tmp_path])
    assert report.added == [str(tmp_path / "b.md")]
    assert report.failed == [(str(tmp_path / "a.html"), "cannot parse the document (ValueError: lexbor said no)")]
