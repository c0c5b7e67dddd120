"""The Markdown reader: what markdown-it-py gives it beyond the common cases of
tests/test_knowledge_ingest.py."""

from __future__ import annotations

from app.knowledge.ingest import Document, read_markdown


def _sections(document: Document) -> list[tuple[tuple[str, ...], list[str]]]:
    return [(section.headings, section.blocks) for section in document.sections]


def test_setext_headings_give_the_title_and_the_sections() -> None:
    document = read_markdown("Les dindes\n==========\n\nIntro.\n\nDémarrage\n---------\n\nTexte.\n", "F")
    assert document.title == "Les dindes"
    assert _sections(document) == [((), ["Intro."]), (("Démarrage",), ["Texte."])]


def test_front_matter_gives_the_title_and_the_first_h1_opens_a_section() -> None:
    document = read_markdown("---\ntitle: 'Fiche : la mue'\nauteur: OCTI\n---\n# Généralités\n\nTexte.\n", "F")
    assert document.title == "Fiche : la mue"
    assert _sections(document) == [(("Généralités",), ["Texte."])]


def test_a_broken_or_hostile_front_matter_is_ignored_not_fatal() -> None:
    bomb = "---\na: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\ntitle: [*b, *b, *b]\n---\n"
    document = read_markdown(bomb + "# Le vrai titre\n\nTexte.\n", "F")
    assert document.title == "Le vrai titre"
    broken = read_markdown("---\ntitle: [non fermé\n---\nTexte.\n", "Fallback")
    assert broken.title == "Fallback"
    assert _sections(broken) == [((), ["Texte."])]


def test_nested_lists_give_one_block_per_item_at_any_depth() -> None:
    text = ("# T\n\n"
            "- abreuvoirs\n"
            "    - pipettes\n"
            "    - cloches\n"
            "      qui fuient\n"
            "- mangeoires\n\n"
            "1. vider\n"
            "2. laver\n")
    assert _sections(read_markdown(text, "F")) == [
        ((), ["- abreuvoirs", "- pipettes", "- cloches qui fuient", "- mangeoires", "- vider", "- laver"])]


def test_a_loose_list_item_keeps_its_later_paragraphs_as_blocks() -> None:
    text = "# T\n\n- premier point\n\n  sa suite\n\n- second point\n"
    assert _sections(read_markdown(text, "F")) == [((), ["- premier point", "sa suite", "- second point"])]


def test_html_blocks_are_read_as_html() -> None:
    text = ("# T\n\n"
            "<div class=\"encadre\">\n"
            "<p>Un <b>encadré</b> &eacute;crit en HTML.</p>\n"
            "<script>alert('non')</script>\n"
            "<h2>Dans le HTML</h2>\n"
            "<p>Sous son titre.</p>\n"
            "</div>\n\n"
            "<!-- une note\nsur plusieurs lignes -->\n\n"
            "Un <span>mot</span> en ligne,<br>puis la suite.\n")
    assert _sections(read_markdown(text, "F")) == [
        ((), ["Un encadré écrit en HTML."]),
        (("Dans le HTML",), ["Sous son titre.", "Un mot en ligne, puis la suite."]),
    ]


def test_inline_markup_entities_and_escapes_become_plain_text() -> None:
    text = ("# T\n\n"
            "Poules &amp; coqs, **été** comme _hiver_, ~~jamais~~ `37,5 °C`, \\*pas d'emphase\\*, "
            "![une poule *rousse*](poule.png), [le guide][g] et <https://example.org/guide>.\n\n"
            "[g]: https://example.org\n")
    assert _sections(read_markdown(text, "F")) == [((), [
        "Poules & coqs, été comme hiver, jamais 37,5 °C, *pas d'emphase*, une poule rousse, "
        "le guide et https://example.org/guide."])]


def test_block_quotes_give_one_block_per_paragraph_and_code_stays_as_written() -> None:
    text = "# T\n\n> cité\n> encore\n>\n> autre paragraphe\n\n```\nétape 1\n  étape 2\n```\n"
    assert _sections(read_markdown(text, "F")) == [
        ((), ["cité encore", "autre paragraphe", "étape 1\n  étape 2"])]


def test_table_cells_keep_their_text_and_empty_cells_are_left_out() -> None:
    text = "# T\n\n| **Âge** | Température |\n|:--|--:|\n| J1 | 33 °C |\n| J7 |  |\n"
    assert _sections(read_markdown(text, "F")) == [
        ((), ["Âge : J1 ; Température : 33 °C", "Âge : J7"])]


def test_a_list_nested_thirty_deep_keeps_every_item() -> None:
    text = "# T\n\n" + "".join("  " * depth + f"- niveau {depth}\n" for depth in range(30))
    assert _sections(read_markdown(text, "F")) == [((), [f"- niveau {depth}" for depth in range(30)])]
