"""French text normalisation for keyword search, shared by both stores.

The keyword leg must treat "éclosion", "Eclosion" and "ECLOSION" alike, and must not let
phone filler ("euh, bonjour, alors voilà...") match every chunk. Both stores index text
through `fold` and search with `query_terms`, so the embedded store (SQLite FTS5) and
Weaviate (word tokenizer over folded copies of the text) see the same tokens.

`fold` is a superset of FTS5 `unicode61 remove_diacritics 2`: same lowercasing and accent
removal, plus the French ligatures (œ -> oe, æ -> ae), which unicode61 keeps as letters
(so without this "oeuf" would never find "œuf").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

__all__ = [
    "FOLD_VERSION",
    "STOPWORDS",
    "fold",
    "fts_match_expression",
    "is_stopword",
    "query_terms",
    "tokenize",
]

# Bump when `fold` or `tokenize` change: indexes built with the old rules must be rebuilt
# (the embedded store checks it on open).
FOLD_VERSION = 1

# Letters and digits only: like Weaviate's `word` tokenizer and FTS5 unicode61, anything
# else (apostrophes, hyphens, quotes, operators, punctuation) separates tokens.
_TOKEN = re.compile(r"[^\W_]+")

# Ligatures have no Unicode decomposition, so NFKD alone leaves them in place.
_LIGATURES = str.maketrans({"œ": "oe", "æ": "ae"})

# Cap on query terms: a rambling transcript must not turn into a 200-way OR.
MAX_QUERY_TERMS = 32

_STOPWORDS_SOURCE = """
le la les l un une des du de d au aux ce cet cette ces
je j tu il elle on nous vous ils elles me m te t se s lui leur leurs y en
moi toi soi eux ça ca cela ceci celui celle ceux celles ci là ici
qui que qu quoi dont où
mon ma mes ton ta tes sa ses notre nos votre vos
à dans par pour sur sous avec sans chez entre contre depuis pendant avant après selon envers via
et ou mais donc or ni car si comme quand lorsque puisque parce
ne n pas plus moins non oui rien jamais aucun aucune
suis es est sommes êtes sont étais était étions étiez étaient être sera seront serait seraient
serai serais serons serez soit soient sois
ai as a avons avez ont avais avait avions aviez avaient avoir eu aura auront aurait auraient
aurai aurais aurons aurez aie ait ayez aient
fais fait faites font faire
peux peut pouvez peuvent pourrait pourrais pouvoir
dois doit devez doivent devrais devrait
veux veut voulez voudrais voudrait aimerais aimerait
sais sait savez savoir
faut falloir
quel quelle quels quelles comment pourquoi combien
tout tous toute toutes très trop peu aussi encore déjà bien juste vraiment
même autre autres chaque quelque quelques tel telle
euh heu hum hmm bah ben beh bon bref enfin alors voilà voila hein ouais ok okay accord
genre truc machin quoi
bonjour bonsoir salut allô allo merci madame monsieur dites dis excusez pardon
svp plaît plait question
"""

def fold(text: str) -> str:
    """Lowercase and strip accents (and French ligatures), keeping every other character."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return stripped.lower().translate(_LIGATURES)


def tokenize(text: str) -> list[str]:
    """Folded tokens, split on anything that is not a letter or digit (no stopword removal)."""
    return _TOKEN.findall(fold(text))


# Folded, so lookups match whatever accents the transcript carried.
STOPWORDS: frozenset[str] = frozenset(token for word in _STOPWORDS_SOURCE.split() for token in tokenize(word))


def is_stopword(token: str) -> bool:
    return fold(token) in STOPWORDS


def _keep(token: str) -> bool:
    # One letter tokens are elision leftovers (l', d', j', qu') or noise; single digits
    # are kept because "J1" / "5 jours" questions carry them on their own.
    if len(token) == 1 and not token.isdigit():
        return False
    return token not in STOPWORDS


def query_terms(text: str) -> list[str]:
    """The search terms of a question: folded, stopwords and one-letter tokens dropped, deduplicated."""
    seen: dict[str, None] = {}
    for token in tokenize(text):
        if _keep(token) and token not in seen:
            seen[token] = None
            if len(seen) >= MAX_QUERY_TERMS:
                break
    return list(seen)


def _quote(term: str) -> str:
    # An FTS5 string: inside double quotes nothing is an operator (AND, NEAR, *, ^, :, ...).
    return '"' + term.replace('"', '""') + '"'


def fts_match_expression(terms: Iterable[str]) -> str:
    """An FTS5 MATCH expression OR-ing every term, each quoted; "" when there is no term."""
    return " OR ".join(_quote(term) for term in terms if term)
