"""Ingestion: readers, chunker, idempotent ingestion, per-file errors."""

from __future__ import annotations

import io
import asyncio
import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import pytest

from app.knowledge import ingest
from app.knowledge.embedded import EmbeddedStore
from app.knowledge.ingest import sources
from app.knowledge.ingest import (
    MAX_CHARS,
    MAX_DOCUMENT_BYTES,
    OVERLAP_MAX_CHARS,
    Document,
    IngestError,
    Section,
    chunk_document,
    delete_documents,
    ingest_paths,
    read_document,
    split_sentences,
)
from app.knowledge.seed import sample_pack_files
from app.knowledge.store import Chunk, Passage, StoreHealth

# --------------------------------------------------------------------------- a toy store


def _words(text: str) -> set[str]:
    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return {w for w in re.findall(r"[a-z0-9]+", folded) if len(w) > 2}


class MemoryStore:
    """The KnowledgeStore protocol in memory, scoring by keyword overlap (tests only)."""

    backend = "memory"

    def __init__(self) -> None:
        self.documents: dict[str, tuple[str, list[Chunk]]] = {}
        self._index: dict[str, list[tuple[set[str], Chunk]]] = {}
        self.writes: list[str] = []          # sources passed to replace_document, in order
        self.fail_on: set[str] = set()       # sources whose replace_document raises
        self.closed = False

    async def search(self, query: str, limit: int = 5) -> list[Passage]:
        terms = _words(query)
        scored = []
        for entries in self._index.values():
            for words, chunk in entries:
                overlap = len(terms & words)
                if overlap:
                    scored.append((overlap, chunk))
        scored.sort(key=lambda item: (-item[0], item[1].source, item[1].position))
        top = scored[:limit]
        best = top[0][0] if top else 1
        return [Passage(c.id, c.source, c.title, c.text, score / best, c.position) for score, c in top]

    async def replace_document(self, source: str, checksum: str, chunks: Sequence[Chunk]) -> None:
        if source in self.fail_on:
            raise RuntimeError("disk full")
        self.writes.append(source)
        self.documents[source] = (checksum, list(chunks))
        self._index[source] = [(_words(c.title + " " + c.text), c) for c in chunks]

    async def document_checksum(self, source: str) -> str | None:
        entry = self.documents.get(source)
        return entry[0] if entry else None

    async def delete_document(self, source: str) -> None:
        self.documents.pop(source, None)
        self._index.pop(source, None)

    async def sources(self) -> list[str]:
        return sorted(self.documents)

    async def count(self) -> int:
        return sum(len(chunks) for _, chunks in self.documents.values())

    async def health(self) -> StoreHealth:
        return StoreHealth("memory", True, False, await self.count(), "keyword overlap (tests)",
                           {"documents": len(self.documents)})

    async def close(self) -> None:
        self.closed = True


# --------------------------------------------------------------------------- helpers


def _escape_pdf(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """A minimal valid PDF, written by hand: Helvetica text, one line per string."""
    objects: dict[int, bytes] = {}
    page_ids = [4 + 2 * i for i in range(len(pages))]
    content_ids = [5 + 2 * i for i in range(len(pages))]
    info_id = 4 + 2 * len(pages)
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    kids = " ".join(f"{p} 0 R" for p in page_ids)
    objects[2] = f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode()
    objects[3] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    for i, lines in enumerate(pages):
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"] + [f"({_escape_pdf(line)}) Tj T*" for line in lines] + ["ET"]
        stream = "\n".join(ops).encode("cp1252")
        objects[content_ids[i]] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
        objects[page_ids[i]] = (
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {content_ids[i]} 0 R >>").encode()
    if title:
        objects[info_id] = f"<< /Title ({_escape_pdf(title)}) >>".encode("cp1252")
    out = bytearray(b"%PDF-1.4\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n" % number + objects[number] + b"\nendobj\n"
    xref = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for number in range(1, size):
        out += b"%010d 00000 n \n" % offsets[number]
    info = f" /Info {info_id} 0 R" if title else ""
    out += f"trailer\n<< /Size {size} /Root 1 0 R{info} >>\n".encode()
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def blank_pdf() -> bytes:
    """A PDF whose page has no text layer, as a scan without OCR."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def _read(path: Path) -> Document:
    return read_document(path, path.read_bytes())


SENTENCES = [
    "La température de la couveuse se vérifie avec un thermomètre de contrôle placé à hauteur des œufs.",
    "Une humidité trop basse pendant l'éclosion laisse les poussins collés à la coquille.",
    "Le retournement des œufs s'arrête trois jours avant la date prévue d'éclosion.",
    "Un œuf clair au mirage du septième jour n'a pas été fécondé ou l'embryon est mort très tôt.",
    "Les poussins entassés sous la lampe signalent presque toujours qu'ils ont froid.",
    "La ventilation minimum évacue l'humidité et l'ammoniac même en plein hiver.",
    "Une litière qui colle en croûte sous les abreuvoirs doit faire chercher une fuite.",
    "Une chute brutale de la consommation d'eau mérite une visite attentive du bâtiment.",
]


def long_section(paragraphs: int = 6, sentences: int = 5) -> list[str]:
    blocks = []
    for p in range(paragraphs):
        blocks.append(" ".join(f"{SENTENCES[(p + s) % len(SENTENCES)][:-1]} numéro {p}-{s}."
                               for s in range(sentences)))
    return blocks


# --------------------------------------------------------------------------- readers


def test_markdown_title_sections_and_inline_markup(tmp_path: Path) -> None:
    path = tmp_path / "fiche-eau.md"
    path.write_text(
        "<!-- Fiche OCTI – commentaire à ignorer -->\n"
        "# La qualité de l'eau\n\n"
        "Une introduction avec **du gras**, un [lien](https://example.org) et du `code`.\n\n"
        "## Analyse\n\n"
        "Faites analyser l'eau\nune fois par an.\n\n"
        "- au point d'arrivée ;\n"
        "- en bout de ligne.\n\n"
        "### Bactériologie\n\n"
        "Pas d'E. coli.\n\n"
        "## Repères\n\n"
        "| Critère | Valeur |\n|---|---|\n| pH | 6 à 8 |\n",
        encoding="utf-8",
    )
    document = _read(path)
    assert document.title == "La qualité de l'eau"
    assert [s.headings for s in document.sections] == [
        (), ("Analyse",), ("Analyse", "Bactériologie"), ("Repères",)]
    intro, analysis, bacteria, table = document.sections
    assert intro.blocks == ["Une introduction avec du gras, un lien et du code."]
    assert analysis.blocks == ["Faites analyser l'eau une fois par an.", "- au point d'arrivée ;", "- en bout de ligne."]
    assert bacteria.blocks == ["Pas d'E. coli."]
    assert table.blocks == ["Critère : pH ; Valeur : 6 à 8"]
    assert "commentaire" not in str(document)

    chunks = chunk_document(document, "fiche-eau.md")
    assert [c.title for c in chunks] == [
        "La qualité de l'eau",
        "La qualité de l'eau – Analyse",
        "La qualité de l'eau – Analyse › Bactériologie",
        "La qualité de l'eau – Repères",
    ]
    assert [c.position for c in chunks] == [0, 1, 2, 3]
    assert all(c.source == "fiche-eau.md" for c in chunks)


def test_markdown_without_heading_uses_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "notes_de-visite.markdown"
    path.write_text("Juste un paragraphe.\n", encoding="utf-8")
    document = _read(path)
    assert document.title == "Notes de visite"
    assert document.sections[0].blocks == ["Juste un paragraphe."]


def test_plain_text_paragraphs_and_title_line(tmp_path: Path) -> None:
    path = tmp_path / "memo.txt"
    path.write_text("Mémo chauffage\n\nPréchauffer 48 heures\navant l'arrivée.\n\nVérifier la litière.\n",
                    encoding="utf-8")
    document = _read(path)
    assert document.title == "Mémo chauffage"
    assert document.sections[0].blocks == ["Préchauffer 48 heures avant l'arrivée.", "Vérifier la litière."]


def test_plain_text_in_windows_1252(tmp_path: Path) -> None:
    path = tmp_path / "ancien.txt"
    path.write_bytes("Une phrase accentuée : éclosion à 37,5 °C.".encode("cp1252"))
    document = _read(path)
    assert document.title == "Ancien"
    assert document.sections[0].blocks == ["Une phrase accentuée : éclosion à 37,5 °C."]


def test_html_strips_scripts_styles_nav_and_keeps_headings(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(
        "<!doctype html><html><head><title>Site | Fiche</title><style>p{color:red}</style>"
        "<script>var x = 'ne pas lire';</script></head><body>"
        "<nav><a href='/'>Accueil</a> <a href='/menu'>Menu</a></nav>"
        "<h1>Les poux rouges</h1>"
        "<p>Un acarien qui pique la nuit&nbsp;: il se cache le jour &amp; ressort le soir.</p>"
        "<h2>Repérer</h2><p>Passez une lampe<br>sous les perchoirs.</p>"
        "<ul><li>Pièges en carton</li><li>Papier blanc</li></ul>"
        "<h3>La nuit</h3><div>Regardez les nids.</div>"
        "<footer>Mentions légales</footer><script>track()</script>"
        "</body></html>",
        encoding="utf-8",
    )
    document = _read(path)
    assert document.title == "Les poux rouges"
    assert [s.headings for s in document.sections] == [(), ("Repérer",), ("Repérer", "La nuit")]
    assert document.sections[0].blocks == ["Un acarien qui pique la nuit : il se cache le jour & ressort le soir."]
    assert document.sections[1].blocks == ["Passez une lampe", "sous les perchoirs.", "- Pièges en carton",
                                           "- Papier blanc"]
    text = str(document)
    for junk in ("ne pas lire", "color", "Accueil", "Menu", "Mentions", "track"):
        assert junk not in text


def test_html_title_tag_when_no_h1(tmp_path: Path) -> None:
    path = tmp_path / "page.htm"
    path.write_bytes("<html><head><meta charset='iso-8859-1'><title>Fiche pintades</title></head>"
                     "<body><p>Les pintadeaux sont frileux.</p></body></html>".encode("latin-1"))
    document = _read(path)
    assert document.title == "Fiche pintades"
    assert document.sections[0].blocks == ["Les pintadeaux sont frileux."]


def test_pdf_text_by_page_with_metadata_title(tmp_path: Path) -> None:
    path = tmp_path / "guide.pdf"
    path.write_bytes(make_pdf(
        [["Le mirage des oeufs se fait vers le septième jour.", "Un oeuf clair est retiré."],
         ["Température : 37,5 °C en couveuse ventilée."]],
        title="Guide d'incubation"))
    document = _read(path)
    assert document.title == "Guide d'incubation"
    assert [s.headings for s in document.sections] == [("p. 1",), ("p. 2",)]
    assert document.sections[0].blocks == ["Le mirage des oeufs se fait vers le septième jour. Un oeuf clair est retiré."]
    assert document.sections[1].blocks == ["Température : 37,5 °C en couveuse ventilée."]
    chunks = chunk_document(document, "guide.pdf")
    assert [c.title for c in chunks] == ["Guide d'incubation – p. 1", "Guide d'incubation – p. 2"]


def test_pdf_without_title_uses_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "fiche_mue.pdf"
    path.write_bytes(make_pdf([["La mue dure plusieurs semaines."]]))
    assert _read(path).title == "Fiche mue"


def test_scanned_pdf_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(blank_pdf())
    with pytest.raises(IngestError, match="no extractable text.*OCR"):
        _read(path)


@pytest.mark.parametrize("name, data, message", [
    ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage without xref", "not a readable PDF"),
    ("junk.txt", bytes(range(256)) * 8, "not a text file"),
    ("junk.md", b"\x00\x01\x02binary\x00", "not a Markdown file"),
])
def test_unreadable_content_raises_a_clear_error(tmp_path: Path, name: str, data: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(IngestError, match=message):
        _read(path)


# --------------------------------------------------------------------------- chunker


def test_chunks_respect_the_size_bound_and_never_cut_words() -> None:
    blocks = long_section(paragraphs=8, sentences=6)
    # one sentence far longer than the target, and a blob without spaces
    blocks.append(" ".join(f"mot{i}" for i in range(400)))
    document = Document("Incubation", [Section(("Réglages",), blocks)])
    chunks = chunk_document(document, "doc.md")
    assert len(chunks) > 3
    source_words = {w for block in blocks for w in block.split()}
    for chunk in chunks:
        assert len(chunk.text) <= MAX_CHARS
        for word in chunk.text.split():
            assert word in source_words or word == "…", word
    # every sentence of the source is somewhere in the chunks
    joined = " ".join(c.text.replace("\n", " ") for c in chunks)
    for block in blocks[:-1]:
        for sentence in split_sentences(block):
            assert sentence in joined


def test_a_word_longer_than_the_bound_is_cut_hard_but_the_bound_holds() -> None:
    document = Document("T", [Section((), ["x" * 3000])])
    chunks = chunk_document(document, "blob.txt")
    assert all(len(c.text) <= MAX_CHARS for c in chunks)
    assert "".join(c.text.split("\n")[-1].lstrip("… ") for c in chunks).count("x") >= 3000


def test_consecutive_chunks_of_a_section_overlap() -> None:
    document = Document("Ventilation", [Section(("Hiver",), long_section(paragraphs=6, sentences=5))])
    chunks = chunk_document(document, "v.md")
    assert len(chunks) >= 3
    for previous, current in zip(chunks, chunks[1:]):
        first_sentence = split_sentences(current.text.replace("\n", " "))[0]
        tail = previous.text.replace("\n", " ")[-(OVERLAP_MAX_CHARS + 1):]
        assert first_sentence in tail, (previous.text, current.text)


def test_chunks_never_mix_sections_and_carry_no_overlap_across_them() -> None:
    first = long_section(paragraphs=3, sentences=5)
    document = Document("Doc", [Section(("A",), first), Section(("B",), ["Section B seule."])])
    chunks = chunk_document(document, "d.md")
    assert chunks[-1].title == "Doc – B"
    assert chunks[-1].text == "Section B seule."
    assert all(c.title == "Doc – A" for c in chunks[:-1])


def test_small_paragraphs_are_packed_together() -> None:
    blocks = [f"Paragraphe court numéro {i}." for i in range(10)]
    chunks = chunk_document(Document("D", [Section((), blocks)]), "d.md")
    assert len(chunks) == 1
    assert chunks[0].text == "\n".join(blocks)


def test_a_tiny_tail_joins_the_previous_chunk() -> None:
    blocks = long_section(paragraphs=2, sentences=4) + ["Fin."]
    chunks = chunk_document(Document("D", [Section((), blocks)]), "d.md")
    assert chunks[-1].text.endswith("\nFin.")
    assert all(c.text != "Fin." for c in chunks)


def test_chunk_ids_are_stable_and_distinct() -> None:
    document = Document("Doc", [Section(("A",), long_section(4, 5)), Section(("B",), ["Texte B."])])
    once = chunk_document(document, "docs/a.md")
    again = chunk_document(document, "docs/a.md")
    elsewhere = chunk_document(document, "docs/b.md")
    assert [c.id for c in once] == [c.id for c in again]
    assert len({c.id for c in once}) == len(once)
    assert not {c.id for c in once} & {c.id for c in elsewhere}
    assert all(re.fullmatch(r"[0-9a-f]{32}", c.id) for c in once)


def test_sample_pack_chunks_are_well_formed() -> None:
    files = sample_pack_files()
    assert files
    for path in files:
        chunks = chunk_document(_read(path), path.name)
        assert chunks, path.name
        for chunk in chunks:
            assert 0 < len(chunk.text) <= MAX_CHARS
            assert "<!--" not in chunk.text and "##" not in chunk.text
            assert chunk.title.split(" – ")[0] and not chunk.title.startswith("#")


# --------------------------------------------------------------------------- ingestion


def _write_corpus(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "eau.md").write_text("# Eau\n\n## Compteur\n\nRelevez le compteur chaque jour.\n", encoding="utf-8")
    (root / "sub" / "litiere.txt").write_text("Litière\n\nLe test de la main dit si elle est sèche.\n",
                                              encoding="utf-8")
    (root / "sub" / "poux.html").write_text("<h1>Poux</h1><p>Ils piquent la nuit.</p>", encoding="utf-8")
    (root / "guide.pdf").write_bytes(make_pdf([["Le vide sanitaire suit la désinfection."]]))
    (root / "image.png").write_bytes(b"\x89PNG not ingested")
    (root / ".cache.md").write_text("# caché\n\nà ignorer\n", encoding="utf-8")


async def test_ingest_walks_directories_and_is_idempotent(tmp_path: Path) -> None:
    _write_corpus(tmp_path / "docs")
    store = MemoryStore()
    calls: list[tuple[int, int, str, str]] = []

    report = await ingest_paths(store, [tmp_path / "docs"], progress=lambda *args: calls.append(args))
    expected = sorted(str(tmp_path / "docs" / name) for name in
                      ("eau.md", "guide.pdf", "sub/litiere.txt", "sub/poux.html"))
    assert sorted(report.added) == expected
    assert report.replaced == [] and report.unchanged == [] and report.failed == []
    assert report.chunks_written == await store.count() == 4
    assert [c[:2] for c in calls] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert {c[3] for c in calls} == {"added"}

    # unchanged: nothing written
    writes = len(store.writes)
    again = await ingest_paths(store, [tmp_path / "docs"])
    assert sorted(again.unchanged) == expected
    assert again.added == again.replaced == again.failed == []
    assert again.chunks_written == 0
    assert len(store.writes) == writes

    # one file changed: only it is replaced
    (tmp_path / "docs" / "eau.md").write_text("# Eau\n\n## Compteur\n\nRelevez le compteur chaque matin.\n",
                                              encoding="utf-8")
    changed = await ingest_paths(store, [tmp_path / "docs"])
    assert changed.replaced == [str(tmp_path / "docs" / "eau.md")]
    assert len(changed.unchanged) == 3
    assert changed.chunks_written == 1
    assert store.writes[writes:] == [str(tmp_path / "docs" / "eau.md")]
    found = await store.search("compteur matin", limit=1)
    assert found[0].text == "Relevez le compteur chaque matin."


async def test_a_chunker_version_change_reingests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.md").write_text("# A\n\nTexte.\n", encoding="utf-8")
    store = MemoryStore()
    await ingest_paths(store, [tmp_path / "a.md"])
    monkeypatch.setattr(ingest, "CHUNKER_VERSION", ingest.CHUNKER_VERSION + "-next")
    report = await ingest_paths(store, [tmp_path / "a.md"])
    assert report.replaced == [str(tmp_path / "a.md")]


async def test_every_spelling_of_a_file_names_one_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_corpus(tmp_path / "docs")
    (tmp_path / "liens").symlink_to(tmp_path / "docs")
    monkeypatch.chdir(tmp_path / "docs" / "sub")
    store = EmbeddedStore(tmp_path / "kb.sqlite3", None)
    first = await ingest_paths(store, ["..", "../eau.md"])
    assert len(first.added) == 4   # the file named twice is ingested once
    expected = sorted(((tmp_path / "docs").resolve() / name).as_posix()
                      for name in ("eau.md", "guide.pdf", "sub/litiere.txt", "sub/poux.html"))
    assert await store.sources() == expected
    for spelling in [str(tmp_path / "docs"), str(tmp_path / "liens"), "../../docs/./sub/../eau.md"]:
        again = await ingest_paths(store, [spelling])
        assert again.added == again.replaced == again.removed == [] and again.unchanged
    assert await store.sources() == expected
    assert [p.source for p in await store.search("compteur pipettes")] == [expected[0]]  # found once
    await store.close()


async def test_a_file_under_the_project_is_named_from_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "PROJECT_DIR", tmp_path)
    _write_corpus(tmp_path / "docs")
    monkeypatch.chdir(tmp_path / "docs")
    store = MemoryStore()
    await ingest_paths(store, ["sub", tmp_path / "docs" / "eau.md"])
    assert sorted(store.documents) == ["docs/eau.md", "docs/sub/litiere.txt", "docs/sub/poux.html"]
    chunk = store.documents["docs/sub/poux.html"][1][0]
    assert (chunk.source, chunk.title, chunk.text, chunk.position) == ("docs/sub/poux.html", "Poux",
                                                                       "Ils piquent la nuit.", 0)


async def test_a_document_stored_under_the_path_as_given_is_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Earlier versions stored the path as given: met again under that spelling, the file is
    stored under its source and the old document dropped."""
    _write_corpus(tmp_path / "docs")
    monkeypatch.chdir(tmp_path)
    store = MemoryStore()
    await store.replace_document("docs/eau.md", "sha256:old", [Chunk("old#0", "docs/eau.md", "Eau", "Texte.", 0)])
    report = await ingest_paths(store, ["docs/eau.md"])
    source = ((tmp_path / "docs").resolve() / "eau.md").as_posix()
    assert report.added == [source] and report.removed == ["docs/eau.md"]
    assert report.summary().endswith("; 1 removed")
    assert sorted(store.documents) == [source]


async def test_the_path_as_given_of_another_file_is_not_taken_for_an_older_spelling(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "PROJECT_DIR", tmp_path / "project")
    _write_corpus(tmp_path / "project" / "docs")
    _write_corpus(tmp_path / "ailleurs" / "docs")
    store = MemoryStore()
    await ingest_paths(store, [tmp_path / "project" / "docs" / "eau.md"])
    monkeypatch.chdir(tmp_path / "ailleurs")
    report = await ingest_paths(store, ["docs/eau.md"])  # "docs/eau.md" is the project's file's source
    assert report.removed == []
    assert sorted(store.documents) == sorted(["docs/eau.md", (tmp_path / "ailleurs" / "docs" / "eau.md").as_posix()])


async def test_prune_drops_the_documents_whose_file_is_gone(tmp_path: Path) -> None:
    _write_corpus(tmp_path / "docs")
    (tmp_path / "ailleurs.md").write_text("# Ailleurs\n\nHors du dossier.\n", encoding="utf-8")
    store = MemoryStore()
    await ingest_paths(store, [tmp_path / "docs", tmp_path / "ailleurs.md"])
    docs = (tmp_path / "docs").resolve()
    # A duplicate an earlier version stored, the same file spelt another way.
    await store.replace_document(f"{docs}/sub/../eau.md", "sha256:old", [])
    (tmp_path / "docs" / "sub" / "poux.html").unlink()
    (tmp_path / "ailleurs.md").unlink()   # not under the directory walked: kept

    kept = await ingest_paths(store, [tmp_path / "docs"])
    assert kept.removed == [] and len(store.documents) == 6
    report = await ingest_paths(store, [tmp_path / "docs"], prune=True)
    assert sorted(report.removed) == [f"{docs}/sub/../eau.md", f"{docs}/sub/poux.html"]
    assert sorted(store.documents) == sorted([f"{docs}/eau.md", f"{docs}/guide.pdf", f"{docs}/sub/litiere.txt",
                                              (tmp_path / "ailleurs.md").resolve().as_posix()])
    assert (await ingest_paths(store, [tmp_path / "docs"], prune=True)).removed == []


async def test_prune_keeps_a_file_it_cannot_look_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_corpus(tmp_path / "docs")
    store = MemoryStore()
    await ingest_paths(store, [tmp_path / "docs"])
    real_stat = Path.stat

    def stat(self: Path, *args, **kwargs):
        if self.name == "poux.html":
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    report = await ingest_paths(store, [tmp_path / "docs"], prune=True)
    assert report.removed == [] and len(store.documents) == 4


async def test_delete_documents_by_source_or_by_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_corpus(tmp_path / "docs")
    monkeypatch.chdir(tmp_path)
    store = MemoryStore()
    await ingest_paths(store, ["docs"])
    await store.replace_document("fiches/ancienne.md", "sha256:old", [])  # a source of an earlier version
    docs = (tmp_path / "docs").resolve().as_posix()
    deleted, unknown = await delete_documents(store, [f"{docs}/eau.md", "docs/sub/poux.html", "fiches/ancienne.md",
                                                      "docs/absent.md"])
    assert deleted == [f"{docs}/eau.md", f"{docs}/sub/poux.html", "fiches/ancienne.md"]
    assert unknown == ["docs/absent.md"]
    assert sorted(store.documents) == [f"{docs}/guide.pdf", f"{docs}/sub/litiere.txt"]


async def test_unreadable_files_are_reported_and_the_others_continue(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a-bon.md").write_text("# Bon\n\nUn texte lisible.\n", encoding="utf-8")
    (docs / "b-corrompu.pdf").write_bytes(b"%PDF-1.7\n\x00\x01 not really a pdf")
    (docs / "c-scan.pdf").write_bytes(blank_pdf())
    (docs / "d-binaire.txt").write_bytes(os.urandom(64) + b"\x00" * 64)
    (docs / "e-vide.md").write_text("<!-- rien -->\n\n", encoding="utf-8")
    (docs / "f-bon.txt").write_text("Encore un texte lisible.\n", encoding="utf-8")
    (tmp_path / "notes.docx").write_bytes(b"PK\x03\x04")
    store = MemoryStore()
    outcomes: list[str] = []

    report = await ingest_paths(store, [docs, tmp_path / "absent.md", tmp_path / "notes.docx"],
                                progress=lambda done, total, source, outcome: outcomes.append(outcome))

    assert sorted(report.added) == [str(docs / "a-bon.md"), str(docs / "f-bon.txt")]
    failed = dict(report.failed)
    assert set(failed) == {str(docs / "b-corrompu.pdf"), str(docs / "c-scan.pdf"), str(docs / "d-binaire.txt"),
                           str(docs / "e-vide.md"), str(tmp_path / "absent.md"), str(tmp_path / "notes.docx")}
    assert "not a readable PDF" in failed[str(docs / "b-corrompu.pdf")]
    assert "OCR" in failed[str(docs / "c-scan.pdf")]
    assert "binary" in failed[str(docs / "d-binaire.txt")]
    assert "no text" in failed[str(docs / "e-vide.md")]
    assert "no such file" in failed[str(tmp_path / "absent.md")]
    assert "unsupported file type '.docx'" in failed[str(tmp_path / "notes.docx")]
    assert not report.ok
    assert outcomes.count("failed") == 6 and outcomes.count("added") == 2
    assert sorted(store.documents) == [str(docs / "a-bon.md"), str(docs / "f-bon.txt")]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
async def test_permission_denied_is_reported(tmp_path: Path) -> None:
    locked = tmp_path / "secret.md"
    locked.write_text("# Secret\n\nTexte.\n", encoding="utf-8")
    (tmp_path / "open.md").write_text("# Ouvert\n\nTexte.\n", encoding="utf-8")
    locked.chmod(0)
    try:
        report = await ingest_paths(MemoryStore(), [tmp_path])
    finally:
        locked.chmod(0o644)
    assert report.added == [str(tmp_path / "open.md")]
    assert report.failed == [(str(locked), "cannot read: permission denied")]


async def test_read_errors_are_reported_even_as_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "secret.md"
    locked.write_text("# Secret\n\nTexte.\n", encoding="utf-8")
    (tmp_path / "open.md").write_text("# Ouvert\n\nTexte.\n", encoding="utf-8")
    real_open = Path.open

    def open_(self: Path, *args, **kwargs):
        if self.name == "secret.md":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    report = await ingest_paths(MemoryStore(), [tmp_path])
    assert report.added == [str(tmp_path / "open.md")]
    assert report.failed == [(str(locked), "cannot read: permission denied")]


@pytest.mark.skipif(os.name != "posix", reason="FIFOs and /dev/zero")
async def test_a_fifo_a_device_or_a_huge_file_is_refused_without_being_read(tmp_path: Path) -> None:
    """Reading a FIFO waits for a writer forever, and a link to /dev/zero never ends: both are
    refused before any read, as is a file past MAX_DOCUMENT_BYTES."""
    os.mkfifo(tmp_path / "tube.md")
    (tmp_path / "zero.md").symlink_to("/dev/zero")
    with open(tmp_path / "gros.txt", "wb") as huge:  # sparse: nothing is written to disk
        huge.truncate(MAX_DOCUMENT_BYTES + 1)
    (tmp_path / "bon.md").write_text("# Bon\n\nTexte.\n", encoding="utf-8")
    async with asyncio.timeout(10):
        report = await ingest_paths(MemoryStore(), [tmp_path])
    assert report.added == [str(tmp_path / "bon.md")]
    failed = dict(report.failed)
    assert failed[str(tmp_path / "tube.md")] == failed[str(tmp_path / "zero.md")] == "cannot read: not a regular file"
    assert failed[str(tmp_path / "gros.txt")] == f"too large: {MAX_DOCUMENT_BYTES + 1} bytes, over {MAX_DOCUMENT_BYTES}"


async def test_a_store_error_fails_that_file_only(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\nTexte A.\n", encoding="utf-8")
    (tmp_path / "b.md").write_text("# B\n\nTexte B.\n", encoding="utf-8")
    store = MemoryStore()
    store.fail_on = {str(tmp_path / "a.md")}
    report = await ingest_paths(store, [tmp_path])
    assert report.added == [str(tmp_path / "b.md")]
    assert report.failed == [(str(tmp_path / "a.md"), "store error: RuntimeError: disk full")]
    assert report.summary() == "1 added, 0 replaced, 0 unchanged, 1 failed; 1 chunks written"
