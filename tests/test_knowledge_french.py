"""French normalisation: folding, stopwords, query terms and FTS5 quoting."""

from __future__ import annotations

import sqlite3

import pytest

from app.knowledge.french import (
    STOPWORDS,
    fold,
    fts_match_expression,
    is_stopword,
    query_terms,
    tokenize,
)

WEIRD_QUERIES = [
    "l'éclosion",
    "aujourd'hui",
    'il a dit "poule"',
    '"',
    '""""',
    "'",
    "poule-mère",
    "-poule",
    "poule AND coq",
    "poule OR coq",
    "NOT poule",
    "NEAR(poule coq, 3)",
    "poule*",
    "*",
    "^poule",
    "title:poule",
    "(((",
    "))",
    "{title text}: poule",
    "poule + coq - dinde",
    "'; DROP TABLE chunks; --",
    "\x00poule\x00",
    "🐔 poule 🥚",
    "Œufs à 37,7 °C ?",
    "ｐｏｕｌｅ",  # full-width letters, as some keyboards send
    "x" * 5000,
    "",
    "   ",
]


def test_fold_lowercases_and_strips_accents():
    assert fold("Éclosion À L'ÉTÉ, maïs, crème") == "eclosion a l'ete, mais, creme"
    assert fold("ÇA") == "ca"


def test_fold_expands_french_ligatures():
    # unicode61 keeps œ as a letter; folding it is what lets "oeuf" find "œuf".
    assert fold("Œuf, œufs, cæcum") == "oeuf, oeufs, caecum"


def test_tokenize_splits_like_the_word_tokenizer():
    assert tokenize("l'éclosion") == ["l", "eclosion"]
    assert tokenize("poule-mère, J21 (37,7°C)") == ["poule", "mere", "j21", "37", "7", "c"]
    assert tokenize("under_score") == ["under", "score"]


@pytest.mark.parametrize(
    "text",
    [
        "L'éclosion a lieu à J21, température 37,7 °C.",
        "Vérifiez l'HUMIDITÉ : 55 % puis 70 % (mirage à J7).",
        "Dinde, pintade, canard de Barbarie — prophylaxie sanitaire.",
        "Naïve coïncidence ; Noël ; façade ; garçon",
    ],
)
def test_tokens_match_fts5_unicode61_remove_diacritics_2(text):
    """Without ligatures, our tokens are exactly what FTS5 indexes from the raw text."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize=\"unicode61 remove_diacritics 2\")")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    db.execute("INSERT INTO t(x) VALUES (?)", (text,))
    fts_tokens = [row[0] for row in db.execute("SELECT term FROM v ORDER BY offset")]
    assert tokenize(text) == fts_tokens


def test_stopwords_cover_fillers_and_grammar_words_only():
    for word in ["euh", "bah", "alors", "bonjour", "dites", "voilà", "le", "des", "qu", "nous",
                 "est", "avez", "pour", "dans", "comment", "combien", "plaît"]:
        assert is_stopword(word), word
    # Domain words stay searchable, including those that look like grammar words.
    for word in ["poule", "œuf", "éclosion", "vaccin", "ventilation", "litière", "été", "vers",
                 "son", "bas", "température", "jours", "mue", "coq"]:
        assert not is_stopword(word), word
    assert all(word == fold(word) for word in STOPWORDS)


def test_query_terms_drop_fillers_elisions_and_duplicates():
    question = "Euh bonjour, alors voilà : combien de jours pour l'éclosion des œufs, l'éclosion ?"
    assert query_terms(question) == ["jours", "eclosion", "oeufs"]


def test_query_terms_keep_digits_but_not_single_letters():
    assert query_terms("vaccin à J1 ou 5 jours d'âge") == ["vaccin", "j1", "5", "jours", "age"]


def test_stopword_only_questions_have_no_terms():
    assert query_terms("Euh bonjour, alors, dites-moi, voilà quoi, hein ?") == []
    assert query_terms("") == []
    assert fts_match_expression([]) == ""


def test_query_terms_are_capped():
    terms = query_terms(" ".join(f"mot{i}" for i in range(100)))
    assert len(terms) == 32


def test_match_expression_quotes_every_term():
    assert fts_match_expression(["poule", "near", "and"]) == '"poule" OR "near" OR "and"'
    # Terms from query_terms never hold quotes, but the quoting holds for any string.
    assert fts_match_expression(['a"b', "c d"]) == '"a""b" OR "c d"'


@pytest.mark.parametrize("query", WEIRD_QUERIES)
def test_weird_queries_never_break_fts5(query):
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(title, text, tokenize=\"unicode61 remove_diacritics 2\")")
    db.execute("INSERT INTO t VALUES (?, ?)", (fold("Poule pondeuse"), fold("La poule et le coq, œufs à 37 °C.")))
    expression = fts_match_expression(query_terms(query))
    if expression:
        db.execute("SELECT rowid FROM t WHERE t MATCH ?", (expression,)).fetchall()


def test_operator_words_are_searched_as_words():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize=\"unicode61 remove_diacritics 2\")")
    db.executemany("INSERT INTO t(x) VALUES (?)", [("poule near coq",), ("dinde",)])
    rows = db.execute("SELECT x FROM t WHERE t MATCH ?", (fts_match_expression(query_terms("NEAR dinde*")),))
    assert sorted(r[0] for r in rows) == ["dinde", "poule near coq"]
