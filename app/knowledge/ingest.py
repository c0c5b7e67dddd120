"""Ingestion: read documents, cut them into chunks, write them to a knowledge store.

Readers
    Markdown (.md, .markdown), plain text (.txt), HTML (.html, .htm) and PDF (.pdf, through
    pypdf). Each reader turns a file into a `Document`: a title and a list of sections, each
    with its heading path and its paragraphs (blocks). A reader that cannot make sense of a
    file raises `IngestError` with a message meant for the person running the ingestion.

    * Markdown: the first level-1 heading (or a front-matter ``title:``) is the document title;
      the other headings open sections. HTML comments are dropped, links/emphasis/inline code
      are reduced to their text, list items become blocks, table rows become
      "column : value ; …" blocks.
    * Plain text: paragraphs are separated by blank lines; a short first line without final
      punctuation, standing alone, is taken as the title.
    * HTML: scripts, styles, navigation, footers, forms and the like are skipped; h1 gives the
      title (else <title>), h2–h6 open sections.
    * PDF: the text layer of each page; a page is a section headed "p. N". A PDF without any
      text layer (a scan) is refused with a clear message: run OCR first.

Chunker (`chunk_document`)
    Sections are never mixed in one chunk. Within a section, paragraphs are packed greedily
    up to `TARGET_CHARS`; a short chunk may grow up to `MAX_CHARS` to take the next paragraph
    whole. Paragraphs longer than the target are split into sentences, sentences longer than
    the target at spaces, so a chunk is never cut inside a word (the only exception: a single
    "word" longer than the target, e.g. a pasted blob, is cut hard). A chunk that continues a
    section starts with the last sentence(s) of the previous chunk (about `OVERLAP_CHARS`,
    a single sentence up to `OVERLAP_MAX_CHARS`). A tiny tail at the end of a section is
    appended to the previous chunk rather than standing alone. No chunk exceeds `MAX_CHARS`.

    Each chunk's title is "document title – section heading" (nested headings joined by
    " › "). The chunk text is the section's text itself; the title travels in `Chunk.title`.

Identity
    * `source` is the file path as given or as walked, through `pathlib` (so "./docs/a.md"
      becomes "docs/a.md"; relative paths stay relative, absolute ones absolute).
    * Chunk ids are the first 32 hex digits of sha256(source NUL position NUL text): stable as
      long as the document does not change, different as soon as a chunk's text does, and
      usable as a UUID (``uuid.UUID(hex=chunk.id)``).
    * A document's checksum is sha256 over `CHUNKER_VERSION` and the file bytes: a file whose
      bytes did not change is skipped, unless the chunker changed (bump `CHUNKER_VERSION`
      whenever a change here alters the chunks produced).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from app.knowledge.store import Chunk, KnowledgeStore

log = logging.getLogger(__name__)

CHUNKER_VERSION = "1"
TARGET_CHARS = 700
MAX_CHARS = 1200
MIN_CHARS = 350          # below this, a chunk takes the next block whole if it stays under MAX_CHARS
OVERLAP_CHARS = 150
OVERLAP_MAX_CHARS = 250  # a single last sentence up to this length is carried whole
TAIL_CHARS = 200         # a section's last piece shorter than this joins the previous chunk

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
TEXT_SUFFIXES = frozenset({".txt"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
PDF_SUFFIXES = frozenset({".pdf"})
SUPPORTED_SUFFIXES = MARKDOWN_SUFFIXES | TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES

TITLE_SEPARATOR = " – "
HEADING_SEPARATOR = " › "


class IngestError(Exception):
    """A file that cannot be ingested; the message says why, for a person."""


# --------------------------------------------------------------------------- documents


@dataclass(slots=True)
class Section:
    headings: tuple[str, ...] = ()          # heading path below the document title
    blocks: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Document:
    title: str
    sections: list[Section]

    @property
    def text_chars(self) -> int:
        return sum(len(block) for section in self.sections for block in section.blocks)


class _SectionBuilder:
    """Collects blocks under a heading stack (levels 1–6)."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, str]] = []
        self.sections: list[Section] = [Section()]

    def heading(self, level: int, text: str) -> None:
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, text))
        self.sections.append(Section(tuple(t for _, t in self.stack)))

    def block(self, text: str) -> None:
        text = _clean_space(text)
        if text:
            self.sections[-1].blocks.append(text)

    def build(self) -> list[Section]:
        return [section for section in self.sections if section.blocks]


def _clean_space(text: str) -> str:
    text = unicodedata.normalize("NFC", text).replace("\u00ad", "")
    return re.sub(r"[ \t\r\f\v\u00a0\u202f]+", " ", text).strip()


def _title_from_path(path: Path) -> str:
    stem = re.sub(r"[_\-]+", " ", path.stem).strip()
    return stem[:1].upper() + stem[1:] if stem else path.name


# --------------------------------------------------------------------------- decoding


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def decode_text(data: bytes, what: str = "text") -> str:
    """Bytes to text: UTF-8 (with or without BOM), else Windows-1252; refuses binary content."""
    if b"\x00" in data[:65536]:
        raise IngestError(f"not a {what} file: binary content (NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError as exc:
            raise IngestError(f"not a {what} file: neither UTF-8 nor Windows-1252 ({exc.reason})") from None
    sample = text[:65536]
    if sample and len(_CONTROL.findall(sample)) > max(2, len(sample) // 100):
        raise IngestError(f"not a {what} file: too many control characters (binary content?)")
    return text


# --------------------------------------------------------------------------- Markdown

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"^ {0,3}(?:[-*+]|\d{1,9}[.)])[ \t]+(.*)$")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_SETEXT_H1 = re.compile(r"^ {0,3}=+[ \t]*$")
_SETEXT_H2 = re.compile(r"^ {0,3}-+[ \t]*$")
_THEMATIC_BREAK = re.compile(r"^ {0,3}([-*_])([ \t]*\1){2,}[ \t]*$")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def _md_inline(text: str) -> str:
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", text)          # images → alt text
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)           # links → link text
    text = re.sub(r"\[([^\]]+)\]\[[^\]]*\]", r"\1", text)          # reference links
    text = re.sub(r"<https?://([^>]+)>", r"\1", text)              # autolinks
    text = re.sub(r"`+([^`]*)`+", r"\1", text)                     # inline code
    text = re.sub(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", r"\2", text)   # bold
    text = re.sub(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])", r"\1", text)  # italics (*x*)
    text = re.sub(r"(?<!\w)_(?=\S)(.+?)(?<=\S)_(?!\w)", r"\1", text)         # italics (_x_)
    text = re.sub(r"<br\s*/?>", " ", text, flags=re.IGNORECASE)
    text = re.sub(r"</?[A-Za-z][^>]*>", "", text)                  # stray inline HTML tags
    text = re.sub(r"\\([\\`*_{}\[\]()#+\-.!|>])", r"\1", text)     # backslash escapes
    return text


def _table_cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [_md_inline(cell.strip()) for cell in re.split(r"(?<!\\)\|", line)]


def read_markdown(text: str, fallback_title: str) -> Document:
    text = _HTML_COMMENT.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = text.split("\n")
    title: str | None = None
    i = 0
    # YAML front matter: skipped, except its title.
    if lines and lines[0].strip() == "---":
        for j in range(1, len(lines)):
            if lines[j].strip() in {"---", "..."}:
                for meta in lines[1:j]:
                    m = re.match(r"^title\s*:\s*(.+)$", meta.strip(), re.IGNORECASE)
                    if m:
                        title = m.group(1).strip().strip("'\"") or None
                i = j + 1
                break

    builder = _SectionBuilder()
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            builder.block(_md_inline(" ".join(part.strip() for part in paragraph)))
            paragraph.clear()

    def heading(level: int, raw: str) -> None:
        nonlocal title
        flush()
        text = _clean_space(_md_inline(raw))
        if not text:
            return
        if level == 1 and title is None and not builder.stack:
            title = text      # the document's title; text before it stays an untitled intro
            return
        builder.heading(level, text)

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        fence = _FENCE.match(line)
        if fence:
            flush()
            marker = fence.group(1)
            code: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(marker):
                code.append(lines[i])
                i += 1
            i += 1
            body = "\n".join(code).strip()
            if body:
                builder.sections[-1].blocks.append(body)
            continue
        atx = _ATX.match(line)
        if atx:
            heading(len(atx.group(1)), atx.group(2) or "")
            i += 1
            continue
        if not stripped:
            flush()
            i += 1
            continue
        setext = 1 if _SETEXT_H1.match(line) else 2 if _SETEXT_H2.match(line) else 0
        if paragraph and setext:
            raw = " ".join(paragraph)
            paragraph.clear()
            heading(setext, raw)
            i += 1
            continue
        if _THEMATIC_BREAK.match(line):
            flush()
            i += 1
            continue
        if "|" in stripped and i + 1 < len(lines) and _TABLE_SEPARATOR.match(lines[i + 1]) \
                and "-" in lines[i + 1]:
            flush()
            header = _table_cells(line)
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                cells = _table_cells(lines[i])
                pairs = [f"{h} : {c}" if h else c for h, c in zip(header, cells) if c]
                builder.block(" ; ".join(pairs))
                i += 1
            continue
        item = _LIST_ITEM.match(line)
        if item:
            flush()
            parts = [item.group(1).strip()]
            i += 1
            # continuation lines: indented, or lazily continuing the item's text
            while i < len(lines) and lines[i].strip() and not _LIST_ITEM.match(lines[i]) \
                    and not _ATX.match(lines[i]) and not _FENCE.match(lines[i]):
                parts.append(lines[i].strip())
                i += 1
            builder.block("- " + _md_inline(" ".join(parts)))
            continue
        if stripped.startswith(">"):
            paragraph.append(stripped.lstrip(">").strip())
            i += 1
            continue
        paragraph.append(stripped)
        i += 1
    flush()
    return Document(title or fallback_title, builder.build())


# --------------------------------------------------------------------------- plain text


def read_text(text: str, fallback_title: str) -> Document:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", text) if p.strip()]
    title = fallback_title
    if len(paragraphs) > 1:
        first = paragraphs[0].strip()
        if "\n" not in first and len(first) <= 100 and not re.search(r"[.!?:;,…]$", first):
            title = _clean_space(first)
            paragraphs = paragraphs[1:]
    builder = _SectionBuilder()
    for paragraph in paragraphs:
        builder.block(" ".join(line.strip() for line in paragraph.split("\n")))
    return Document(title, builder.build())


# --------------------------------------------------------------------------- HTML

_HTML_SKIP = frozenset({
    "script", "style", "nav", "noscript", "template", "svg", "iframe", "footer", "form",
    "button", "select", "textarea", "object", "canvas", "math",
})
_HTML_BLOCK = frozenset({
    "p", "div", "section", "article", "main", "header", "aside", "blockquote", "pre", "ul", "ol",
    "li", "dl", "dt", "dd", "table", "thead", "tbody", "tfoot", "tr", "figure", "figcaption",
    "address", "details", "summary", "hr", "br", "caption", "fieldset", "body", "html",
})
_HTML_VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "area", "base", "col",
                        "embed", "source", "track", "wbr", "param"})
_HEADING_TAG = re.compile(r"^h([1-6])$")


class _HTMLReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.builder = _SectionBuilder()
        self.title_tag = ""
        self.h1: str | None = None
        self.skip_depth = 0
        self.skip_stack: list[str] = []
        self.in_title = False
        self.heading_level: int | None = None
        self.heading_text: list[str] = []
        self.text: list[str] = []
        self.cells: list[str] | None = None

    def _flush(self) -> None:
        if self.text:
            self.builder.block("".join(self.text))
            self.text = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        hidden = "hidden" in attributes or attributes.get("aria-hidden") == "true" \
            or (attributes.get("role") or "") in {"navigation", "banner", "contentinfo"}
        if self.skip_depth or tag in _HTML_SKIP or (hidden and tag not in _HTML_VOID):
            if tag not in _HTML_VOID:
                self.skip_depth += 1
                self.skip_stack.append(tag)
            return
        if tag == "title":
            self.in_title = True
            return
        heading = _HEADING_TAG.match(tag)
        if heading:
            self._flush()
            self.heading_level = int(heading.group(1))
            self.heading_text = []
            return
        if tag in {"td", "th"}:
            self.text.append(" ")
            return
        if tag in _HTML_BLOCK:
            self._flush()
            if tag == "li":
                self.text.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if self.skip_depth:
            # close up to the matching skipped tag (tolerates unclosed children)
            if tag in self.skip_stack:
                while self.skip_stack:
                    self.skip_depth -= 1
                    if self.skip_stack.pop() == tag:
                        break
            return
        if tag == "title":
            self.in_title = False
            return
        heading = _HEADING_TAG.match(tag)
        if heading and self.heading_level is not None:
            text = _clean_space("".join(self.heading_text))
            level = self.heading_level
            self.heading_level = None
            if not text:
                return
            if level == 1 and self.h1 is None:
                self.h1 = text
            else:
                self.builder.heading(level, text)
            return
        if tag in {"td", "th"}:
            self.text.append(" ")
            return
        if tag in _HTML_BLOCK:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        if self.in_title:
            self.title_tag += data
        elif self.heading_level is not None:
            self.heading_text.append(data)
        else:
            self.text.append(data.replace("\n", " "))

    def close(self) -> None:
        super().close()
        self._flush()


def _html_charset(data: bytes) -> str | None:
    match = re.search(rb"<meta[^>]+charset\s*=\s*[\"']?([A-Za-z0-9_\-]+)", data[:4096], re.IGNORECASE)
    return match.group(1).decode("ascii").lower() if match else None


def read_html(data: bytes, fallback_title: str) -> Document:
    charset = _html_charset(data)
    text: str | None = None
    if charset and charset not in {"utf-8", "utf8"}:
        try:
            text = data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            text = None
    if text is None:
        text = decode_text(data, "HTML")
    reader = _HTMLReader()
    reader.feed(text)
    reader.close()
    title = reader.h1 or _clean_space(reader.title_tag) or fallback_title
    return Document(title, reader.builder.build())


# --------------------------------------------------------------------------- PDF


def _pdf_page_blocks(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    blocks = []
    for paragraph in re.split(r"\n[ \t]*\n", text):
        lines = [line.strip() for line in paragraph.split("\n") if line.strip()]
        if not lines:
            continue
        joined = lines[0]
        for line in lines[1:]:
            # a word hyphenated at the end of a line: "incu-" + "bation" → "incubation"
            if re.search(r"[a-zà-ÿ]-$", joined) and re.match(r"[a-zà-ÿ]", line):
                joined = joined[:-1] + line
            else:
                joined += " " + line
        blocks.append(joined)
    return blocks


def read_pdf(data: bytes, fallback_title: str) -> Document:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise IngestError("encrypted PDF: a password is needed")
            except IngestError:
                raise
            except Exception as exc:
                raise IngestError(f"encrypted PDF that cannot be opened ({exc})") from None
        pages = list(reader.pages)
    except IngestError:
        raise
    except Exception as exc:  # pypdf raises many kinds on damaged files
        raise IngestError(f"not a readable PDF ({type(exc).__name__}: {exc})") from None
    if not pages:
        raise IngestError("PDF without pages")

    title = fallback_title
    try:
        meta_title = (reader.metadata or {}).get("/Title")
    except Exception:  # broken metadata is not a reason to refuse the text
        meta_title = None
    if isinstance(meta_title, str):
        meta_title = re.sub(r"^Microsoft (Word|PowerPoint) - ", "", meta_title).strip()
        if meta_title and not re.search(r"\.(docx?|pptx?|odt)$", meta_title, re.IGNORECASE):
            title = _clean_space(meta_title)

    sections: list[Section] = []
    failed_pages = 0
    for number, page in enumerate(pages, start=1):
        try:
            page_text = page.extract_text() or ""
        except Exception as exc:  # pypdf raises many kinds on damaged content streams
            log.debug("page %d: no text (%s)", number, exc)
            failed_pages += 1
            continue
        blocks = [b for b in (_clean_space(b) for b in _pdf_page_blocks(page_text)) if b]
        if blocks:
            sections.append(Section((f"p. {number}",), blocks))
    if not sections:
        if failed_pages == len(pages):
            raise IngestError("PDF whose pages cannot be read (damaged content)")
        raise IngestError(
            f"PDF without a text layer ({len(pages)} page(s), no extractable text): "
            "probably a scan; run it through OCR first")
    return Document(title, sections)


# --------------------------------------------------------------------------- dispatch


def read_document(path: Path, data: bytes) -> Document:
    """Parse a file's bytes according to its extension."""
    suffix = path.suffix.lower()
    fallback = _title_from_path(path)
    if suffix in MARKDOWN_SUFFIXES:
        return read_markdown(decode_text(data, "Markdown"), fallback)
    if suffix in TEXT_SUFFIXES:
        return read_text(decode_text(data, "text"), fallback)
    if suffix in HTML_SUFFIXES:
        return read_html(data, fallback)
    if suffix in PDF_SUFFIXES:
        return read_pdf(data, fallback)
    raise IngestError(f"unsupported file type {suffix or '(no extension)'!r}; "
                      f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}")


# --------------------------------------------------------------------------- chunker

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


def document_checksum(data: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(f"octi-chunker/{CHUNKER_VERSION}\x00".encode())
    digest.update(data)
    return "sha256:" + digest.hexdigest()


# --------------------------------------------------------------------------- ingestion


@dataclass(slots=True)
class IngestReport:
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    chunks_written: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def files(self) -> int:
        return len(self.added) + len(self.replaced) + len(self.unchanged) + len(self.failed)

    def summary(self) -> str:
        return (f"{len(self.added)} added, {len(self.replaced)} replaced, "
                f"{len(self.unchanged)} unchanged, {len(self.failed)} failed; "
                f"{self.chunks_written} chunks written")


# progress(done, total, source, outcome) after each file; outcome is one of
# "added", "replaced", "unchanged", "failed".
Progress = Callable[[int, int, str, str], None]


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def collect_files(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files to ingest under `paths` (directories walked, sorted; hidden entries skipped),
    and the paths refused straight away (missing, unsupported type)."""
    files: list[Path] = []
    refused: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        key = str(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found: list[Path] = []
            for root, dirs, names in os.walk(path, onerror=lambda e: refused.append(
                    (str(e.filename or path), f"cannot list directory: {e.strerror or e}"))):
                dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
                for name in names:
                    if not _is_hidden(name) and Path(name).suffix.lower() in SUPPORTED_SUFFIXES:
                        found.append(Path(root) / name)
            for file in sorted(found, key=lambda p: p.parts):
                add(file)
        elif path.exists():
            if path.suffix.lower() in SUPPORTED_SUFFIXES:
                add(path)
            else:
                refused.append((str(path), f"unsupported file type {path.suffix or '(no extension)'!r}; "
                                           f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}"))
        else:
            refused.append((str(path), "no such file or directory"))
    return files, refused


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except PermissionError:
        raise IngestError("cannot read: permission denied") from None
    except IsADirectoryError:
        raise IngestError("cannot read: is a directory") from None
    except FileNotFoundError:
        raise IngestError("cannot read: file disappeared") from None
    except OSError as exc:
        raise IngestError(f"cannot read: {exc.strerror or exc}") from None


def _chunks_from_bytes(path: Path, data: bytes, source: str) -> list[Chunk]:
    try:
        document = read_document(path, data)
    except IngestError:
        raise
    except RecursionError:
        raise IngestError("document too deeply nested to read") from None
    chunks = chunk_document(document, source)
    if not chunks:
        raise IngestError("no text found in the document")
    return chunks


async def ingest_file(store: KnowledgeStore, path: str | os.PathLike[str], *,
                      source: str | None = None) -> tuple[str, int]:
    """Ingest one file; returns (outcome, chunks written), outcome "added", "replaced" or
    "unchanged". Raises IngestError for a file that cannot be read; store errors propagate.

    `source` defaults to the path as given (through pathlib)."""
    path = Path(path)
    source = source or str(path)
    data = await asyncio.to_thread(_read_bytes, path)
    checksum = document_checksum(data)
    previous = await store.document_checksum(source)
    if previous == checksum:
        return "unchanged", 0
    chunks = await asyncio.to_thread(_chunks_from_bytes, path, data, source)
    await store.replace_document(source, checksum, chunks)
    return ("added" if previous is None else "replaced"), len(chunks)


async def ingest_paths(store: KnowledgeStore, paths: Iterable[str | os.PathLike[str]], *,
                       progress: Progress | None = None,
                       source_for: Callable[[Path], str] | None = None) -> IngestReport:
    """Ingest files and directories (walked recursively, supported extensions only).

    Idempotent: an unchanged file (same bytes, same chunker version) is skipped; a changed
    one replaces what the store held for its source. A file that cannot be read, parsed or
    stored becomes a `failed` entry with a message; the others go on. `source_for` maps a
    file path to its source (default: the path as given or walked)."""
    report = IngestReport()

    def plan() -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
        files, refused = collect_files(list(paths))
        return [(path, source_for(path) if source_for else str(path)) for path in files], refused

    files, refused = await asyncio.to_thread(plan)   # walking and resolving touch the disk
    total = len(files) + len(refused)
    done = 0
    for source, message in refused:
        report.failed.append((source, message))
        done += 1
        if progress:
            progress(done, total, source, "failed")
    for path, source in files:
        try:
            outcome, written = await ingest_file(store, path, source=source)
        except IngestError as exc:
            outcome, written = "failed", 0
            report.failed.append((source, str(exc)))
        except Exception as exc:  # a store error for this file: reported, the others go on
            log.warning("ingestion of %s failed", source, exc_info=True)
            outcome, written = "failed", 0
            report.failed.append((source, f"store error: {type(exc).__name__}: {exc}"))
        else:
            getattr(report, outcome).append(source)
            report.chunks_written += written
        done += 1
        if progress:
            progress(done, total, source, outcome)
    return report
