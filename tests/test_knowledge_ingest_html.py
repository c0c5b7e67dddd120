"""The HTML reader: what selectolax gives it beyond the common cases of
tests/test_knowledge_ingest.py."""

from __future__ import annotations

from app.knowledge.ingest import Document, chunk_document, read_html


def _sections(document: Document) -> list[tuple[tuple[str, ...], list[str]]]:
    return [(section.headings, section.blocks) for section in document.sections]


def test_malformed_html_reads_as_a_browser_shows_it() -> None:
    page = ("<h1>Les pintades</h1><p>Un premier paragraphe<p>un second, <b>gras <i>et</b> mêlé</i>"
            "<ul><li>un<li>deux</ul><h2>Suite</h3><div>sans fin")
    document = read_html(page.encode(), "F")
    assert document.title == "Les pintades"
    assert _sections(document) == [
        ((), ["Un premier paragraphe", "un second, gras et mêlé", "- un", "- deux"]),
        (("Suite",), ["sans fin"]),
    ]


def test_entities_are_decoded() -> None:
    page = "<h1>T</h1><p>&Eacute;t&eacute; &#233; &#x2019; &amp; &lt;b&gt; &laquo;&nbsp;oui&nbsp;&raquo;</p>"
    assert _sections(read_html(page.encode(), "F")) == [((), ["Été é ’ & <b> « oui »"])]


def test_hidden_content_and_unclosed_scripts_are_skipped() -> None:
    page = ("<h1>T</h1><p hidden>caché</p><div aria-hidden='true'>caché aussi</div>"
            "<div role='navigation'>menu</div><!-- <p>commenté</p> --><p>visible</p>"
            "<script>var x = '<p>code</p>';")
    assert _sections(read_html(page.encode(), "F")) == [((), ["visible"])]


def test_headings_table_rows_and_line_breaks_inside_headings() -> None:
    page = ("<h1>T</h1><h2>Densité<br>en hiver</h2>"
            "<table><tr><th>Âge</th><th>Sujets/m²</th></tr><tr><td>J1</td><td>40</td></tr></table>")
    assert _sections(read_html(page.encode(), "F")) == [
        (("Densité en hiver",), ["Âge Sujets/m²", "J1 40"])]


def test_a_declared_charset_is_honoured_and_a_bogus_one_ignored() -> None:
    latin = "<meta charset='windows-1252'><h1>Éclosion</h1><p>37,5 °C</p>".encode("cp1252")
    assert read_html(latin, "F").title == "Éclosion"
    bogus = "<meta charset='no-such-charset'><h1>Éclosion</h1><p>37,5 °C</p>".encode()
    assert _sections(read_html(bogus, "F")) == [((), ["37,5 °C"])]


def test_a_large_page_is_read_whole() -> None:
    sentence = "La litière doit rester sèche et souple, sans croûte sous les abreuvoirs. "
    sections = [f"<h2>Partie {i}</h2>" + f"<p>{sentence * 10}</p>" * 6
                + "<ul>" + "<li>point &eacute;</li>" * 5 + "</ul>" for i in range(700)]
    page = "<html><head><title>Guide</title><script>var a;</script></head><body><nav>menu</nav>" \
        + "".join(sections) + "<footer>pied</footer></body></html>"
    assert len(page) > 3_000_000
    document = read_html(page.encode(), "F")
    assert document.title == "Guide"
    assert [s.headings for s in document.sections] == [(f"Partie {i}",) for i in range(700)]
    assert all(s.blocks == [(sentence * 10).strip()] * 6 + ["- point é"] * 5 for s in document.sections)
    chunks = chunk_document(document, "guide.html")
    assert chunks[-1].title == "Guide – Partie 699"
