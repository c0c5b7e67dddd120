"""What Twilio puts in `From` when a caller withholds their number.

Either a word, or a number that spells one on a phone keypad (ANONYMOUS, RESTRICTED, BLOCKED,
UNKNOWN, UNAVAILABLE). Such a caller cannot be told apart from another, nor texted back.
"""

from __future__ import annotations

WITHHELD_WORDS = frozenset({"anonymous", "restricted", "blocked", "unknown", "unavailable", "private", "withheld"})
WITHHELD_NUMBERS = frozenset({"266696687", "7378742833", "2562533", "8656696", "86282452253"})


def withheld(number: str) -> bool:
    """Whether `number` (a `From` as Twilio sends it) stands for a withheld caller ID."""
    text = number.strip().lower()
    digits = "".join(ch for ch in text if ch.isdigit())
    return not digits or text in WITHHELD_WORDS or digits in WITHHELD_NUMBERS
