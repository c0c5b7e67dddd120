"""The chunker, shared by every format: a `Document`'s sections cut into `Chunk`s.

Sections are never mixed in one chunk. Within a section, paragraphs are packed greedily up
to `TARGET_CHARS`; a short chunk may grow up to `MAX_CHARS` to take the next paragraph
whole. Paragraphs longer than the target are split into sentences, sentences longer than
the target at spaces, so a chunk is never cut inside a word (the only exception: a single
"word" longer than the target, e.g. a pasted blob, is cut hard). A chunk that continues a
section starts with the last sentence(s) of the previous chunk (about `OVERLAP_CHARS`, a
single sentence up to `OVERLAP_MAX_CHARS`). A tiny tail at the end of a section is appended
to the previous chunk rather than standing alone. No chunk exceeds `MAX_CHARS`.

Each chunk's title is "document title – section heading" (nested headings joined by
" › "). The chunk text is the section's text itself; the title travels in `Chunk.title`.

Chunk ids are the first 32 hex digits of sha256(source NUL position NUL text): stable as
long as the document does not change, different as soon as a chunk's text does, and usable
as a UUID (``uuid.UUID(hex=chunk.id)``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from app.knowledge.ingest.document import Document
from app.knowledge.store import Chunk

TARGET_CHARS = 700
MAX_CHARS = 1200
MIN_CHARS = 350          # below this, a chunk takes the next block whole if it stays under MAX_CHARS
OVERLAP_CHARS = 150
OVERLAP_MAX_CHARS = 250  # a single last sentence up to this length is carried whole
TAIL_CHARS = 200         # a section's last piece shorter than this joins the previous chunk

TITLE_SEPARATOR = " – "
HEADING_SEPARATOR = " › "

_SENTENCE_END = re.compile(r"(?<=[.!?…])[»\"')\]]*\s+(?=[«\"'(\[]?\s?[A-ZÀ-ÖØ-Þ0-9])")


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph (a heuristic good enough for French and English prose)."""
    parts: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        piece = text[start:match.end()].strip()   # closing quotes/brackets stay with it
        if piece:
            parts.append(piece)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        parts.append(tail)
    return parts


def _split_words(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut at spaces (a longer word is cut hard)."""
    pieces: list[str] = []
    current = ""
    for word in text.split():
        while len(word) > limit:       # not a word any more: a blob without spaces
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:limit])
            word = word[limit:]
        if not word:
            continue
        if current and len(current) + 1 + len(word) > limit:
            pieces.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        pieces.append(current)
    return pieces


@dataclass(slots=True)
class _Unit:
    text: str
    new_paragraph: bool


def _units(blocks: Sequence[str], limit: int) -> list[_Unit]:
    units: list[_Unit] = []
    for block in blocks:
        if len(block) <= limit:
            units.append(_Unit(block, True))
            continue
        first = True
        for sentence in split_sentences(block):
            pieces = [sentence] if len(sentence) <= limit else _split_words(sentence, limit)
            for piece in pieces:
                units.append(_Unit(piece, first))
                first = False
    return units


def _join(text: str, unit: _Unit) -> str:
    if not text:
        return unit.text
    return f"{text}{chr(10) if unit.new_paragraph else ' '}{unit.text}"


def _overlap(text: str) -> str:
    """The last sentence(s) of a chunk, about OVERLAP_CHARS, to start the next one."""
    sentences = split_sentences(text.replace("\n", " "))
    if not sentences:
        return ""
    last = sentences[-1]
    if len(last) > OVERLAP_MAX_CHARS:
        words = last.split()
        kept: list[str] = []
        size = 0
        for word in reversed(words):
            if size + len(word) + 1 > OVERLAP_CHARS:
                break
            kept.insert(0, word)
            size += len(word) + 1
        return "… " + " ".join(kept) if kept else ""
    carried = [last]
    size = len(last)
    for sentence in reversed(sentences[:-1]):
        if size + 1 + len(sentence) > OVERLAP_CHARS:
            break
        carried.insert(0, sentence)
        size += 1 + len(sentence)
    return " ".join(carried)


def _chunk_section(blocks: Sequence[str]) -> list[str]:
    units = _units(blocks, TARGET_CHARS)
    chunks: list[str] = []
    current = ""       # text of the chunk being built (overlap included)
    fresh = ""         # the part of it that is new (no overlap)
    fresh_starts_paragraph = True
    for unit in units:
        candidate = _join(current, unit)
        if not fresh or len(candidate) <= TARGET_CHARS \
                or (len(current) < MIN_CHARS and len(candidate) <= MAX_CHARS):
            current = candidate
            fresh = _join(fresh, unit)
            continue
        chunks.append(current)
        fresh_starts_paragraph = unit.new_paragraph
        carried = _overlap(current)
        current = _join(carried, unit) if carried else unit.text
        if carried and len(current) > MAX_CHARS:   # cannot happen with unit ≤ TARGET, kept safe
            current = unit.text
        fresh = unit.text
    if fresh:
        if chunks and len(fresh) < TAIL_CHARS and len(chunks[-1]) + 1 + len(fresh) <= MAX_CHARS:
            chunks[-1] = f"{chunks[-1]}{chr(10) if fresh_starts_paragraph else ' '}{fresh}"
        else:
            chunks.append(current)
    return chunks


def section_title(document_title: str, headings: Sequence[str]) -> str:
    if not headings:
        return document_title
    return document_title + TITLE_SEPARATOR + HEADING_SEPARATOR.join(headings)


def chunk_id(source: str, position: int, text: str) -> str:
    return hashlib.sha256(f"{source}\x00{position}\x00{text}".encode()).hexdigest()[:32]


def chunk_document(document: Document, source: str) -> list[Chunk]:
    """Cut a document into chunks (see the module docstring for the rules)."""
    chunks: list[Chunk] = []
    for section in document.sections:
        title = section_title(document.title, section.headings)
        for text in _chunk_section(section.blocks):
            position = len(chunks)
            chunks.append(Chunk(chunk_id(source, position, text), source, title, text, position))
    return chunks

