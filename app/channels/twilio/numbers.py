"""Phone numbers as Twilio sends them in `From` and `To`: their digits, and what stands for a
withheld number.

A withheld caller ID is either a word, or a number that spells one on a phone keypad
(ANONYMOUS, RESTRICTED, BLOCKED, UNKNOWN, UNAVAILABLE). Such a caller cannot be told apart
from another, nor texted back.
"""

from __future__ import annotations

import re

WITHHELD_WORDS = frozenset({"anonymous", "restricted", "blocked", "unknown", "unavailable", "private", "withheld"})
WITHHELD_NUMBERS = frozenset({"266696687", "7378742833", "2562533", "8656696", "86282452253"})


E164 = re.compile(r"\+[1-9][0-9]{6,14}")
SEPARATORS = str.maketrans("", "", " .-()\u00a0")


def international(number: str) -> str | None:
    """`number` in E.164 (spaces, dots, dashes and brackets dropped), or None when it is not one
    (« 06 12… »: a national number cannot be matched with what Twilio sends)."""
    compact = number.translate(SEPARATORS)
    return compact if E164.fullmatch(compact) else None


def digits(number: str) -> str:
    """The number's digits, whatever the punctuation (« +33 6 12… », « 0612… »)."""
    return "".join(ch for ch in number if ch.isdigit())


def withheld(number: str) -> bool:
    """Whether `number` (a `From` as Twilio sends it) stands for a withheld caller ID."""
    text, only_digits = number.strip().lower(), digits(number)
    return not only_digits or text in WITHHELD_WORDS or only_digits in WITHHELD_NUMBERS
