"""Plain text (.txt): paragraphs are separated by blank lines; a short first line without
final punctuation, standing alone, is taken as the title."""

from __future__ import annotations

import re

from app.knowledge.ingest.document import Document, SectionBuilder, clean_space

SUFFIXES = frozenset({".txt"})

_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_FINAL_PUNCTUATION = re.compile(r"[.!?:;,…]$")


def read_text(text: str, fallback_title: str) -> Document:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    paragraphs = [p for p in _BLANK_LINE.split(text) if p.strip()]
    title = fallback_title
    if len(paragraphs) > 1:
        first = paragraphs[0].strip()
        if "\n" not in first and len(first) <= 100 and not _FINAL_PUNCTUATION.search(first):
            title = clean_space(first)
            paragraphs = paragraphs[1:]
    builder = SectionBuilder()
    for paragraph in paragraphs:
        builder.block(" ".join(line.strip() for line in paragraph.split("\n")))
    return Document(title, builder.build())
