"""The farm vocabulary of the knowledge base, for the transcription model's `keywords`.

Everyday French is transcribed well without help; what a transcription model gets wrong is
the trade's own words (couveuse, coccidiose, picage, pododermatite). Those are the words the
corpus uses that ordinary French rarely does. Each word of the corpus is scored by how much
the corpus uses it (titles count extra: a fiche is titled by its subject) times how rare it
is in general French (wordfreq's Zipf scale: 6 for "avec", 3 for "litière", 0 for "picage").

Nothing here is a list of farm words: change the corpus and the vocabulary follows.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable

from wordfreq import zipf_frequency

from app.knowledge.french import fold, is_stopword

# Words at or above this Zipf frequency (about once per 100 000 words) are everyday French.
EVERYDAY_ZIPF = 3.8
MIN_LETTERS = 4
TITLE_WEIGHT = 3
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")


def farm_vocabulary(documents: Iterable[tuple[str, str]], limit: int) -> list[str]:
    """The `limit` words of (title, text) chunks most worth a transcription hint, best first,
    each spelt as the corpus most often spells it (accents kept)."""
    if limit <= 0:
        return []
    uses: Counter[str] = Counter()
    spellings: dict[str, Counter[str]] = defaultdict(Counter)
    for title, text in documents:
        for weight, part in ((TITLE_WEIGHT, title), (1, text)):
            for word in _WORD.findall(part):
                # -ez: the fiches' instructions ("repaillez"), not words a farmer says.
                if len(word) < MIN_LETTERS or is_stopword(word) or word.endswith("ez"):
                    continue
                key = fold(word)
                uses[key] += weight
                spellings[key][word] += weight
    _merge_plurals(uses, spellings)
    scores: dict[str, float] = {}
    for key, count in uses.items():
        spelling = _spelling(spellings[key])
        rarity = EVERYDAY_ZIPF - zipf_frequency(spelling, "fr")
        if rarity > 0:
            scores[spelling] = (1 + math.log(count)) * rarity
    return sorted(scores, key=lambda word: (-scores[word], word))[:limit]


def _merge_plurals(uses: Counter[str], spellings: dict[str, Counter[str]]) -> None:
    """"poussins" counts as "poussin" when both occur: one hint per word is enough."""
    for key in sorted(uses):
        if key[-1:] in ("s", "x") and key[:-1] in uses:
            uses[key[:-1]] += uses.pop(key)
            spellings[key[:-1]].update(spellings.pop(key))


def _spelling(forms: Counter[str]) -> str:
    """The most used form, in lower case unless the corpus always capitalises it (Gumboro)."""
    form = max(forms.items(), key=lambda item: (item[1], item[0]))[0]
    return form if all(f[:1].isupper() for f in forms) else form.lower()
