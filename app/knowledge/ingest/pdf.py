"""PDF (.pdf), through pypdf: the text layer of each page; a page is a section headed "p. N".

A PDF without any text layer (a scan) is refused with a clear message: run OCR first. The
title comes from the document's metadata, unless it is only a word processor's file name.
"""

from __future__ import annotations

import io
import logging
import re

from app.knowledge.ingest.document import Document, IngestError, Section, clean_space

log = logging.getLogger(__name__)

SUFFIXES = frozenset({".pdf"})

_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_HYPHENATED_END = re.compile(r"[a-zà-ÿ]-$")
_LOWERCASE_START = re.compile(r"[a-zà-ÿ]")
_OFFICE_PREFIX = re.compile(r"^Microsoft (Word|PowerPoint) - ")
_OFFICE_FILE_NAME = re.compile(r"\.(docx?|pptx?|odt)$", re.IGNORECASE)


def _page_blocks(text: str) -> list[str]:
    """A page's paragraphs, each on one line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    blocks = []
    for paragraph in _BLANK_LINE.split(text):
        lines = [line.strip() for line in paragraph.split("\n") if line.strip()]
        if not lines:
            continue
        joined = lines[0]
        for line in lines[1:]:
            # a word hyphenated at the end of a line: "incu-" + "bation" → "incubation"
            if _HYPHENATED_END.search(joined) and _LOWERCASE_START.match(line):
                joined = joined[:-1] + line
            else:
                joined += " " + line
        blocks.append(joined)
    return blocks


def read_pdf(data: bytes, fallback_title: str) -> Document:
    from pypdf import PdfReader   # imported on first use: most ingestions hold no PDF

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
        meta_title = _OFFICE_PREFIX.sub("", meta_title).strip()
        if meta_title and not _OFFICE_FILE_NAME.search(meta_title):
            title = clean_space(meta_title)

    sections: list[Section] = []
    failed_pages = 0
    for number, page in enumerate(pages, start=1):
        try:
            page_text = page.extract_text() or ""
        except Exception as exc:  # pypdf raises many kinds on damaged content streams
            log.debug("page %d: no text (%s)", number, exc)
            failed_pages += 1
            continue
        blocks = [b for b in (clean_space(b) for b in _page_blocks(page_text)) if b]
        if blocks:
            sections.append(Section((f"p. {number}",), blocks))
    if not sections:
        if failed_pages == len(pages):
            raise IngestError("PDF whose pages cannot be read (damaged content)")
        raise IngestError(
            f"PDF without a text layer ({len(pages)} page(s), no extractable text): "
            "probably a scan; run it through OCR first")
    return Document(title, sections)
