"""What every reader produces: a `Document` of sections of text blocks, and the helpers the
readers share (decoding bytes to text, cleaning white space, building the sections)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path


class IngestError(Exception):
    """A file that cannot be ingested; the message says why, for a person."""


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


class SectionBuilder:
    """Collects blocks under a heading stack (levels 1–6): a heading closes the headings of
    its level and below, and opens a section headed by the path of those left open."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, str]] = []
        self.sections: list[Section] = [Section()]

    def heading(self, level: int, text: str) -> None:
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, text))
        self.sections.append(Section(tuple(t for _, t in self.stack)))

    def block(self, text: str) -> None:
        """A paragraph of prose: white space collapsed, nothing added when it is empty."""
        text = clean_space(text)
        if text:
            self.sections[-1].blocks.append(text)

    def verbatim(self, text: str) -> None:
        """A block whose line breaks and indentation mean something (code), kept as written."""
        text = text.strip()
        if text:
            self.sections[-1].blocks.append(text)

    def build(self) -> list[Section]:
        return [section for section in self.sections if section.blocks]


_SPACES = re.compile(r"[ \t\r\f\v\u00a0\u202f]+")


def clean_space(text: str) -> str:
    """NFC, soft hyphens removed, runs of spaces (non-breaking ones included) made one space."""
    text = unicodedata.normalize("NFC", text).replace("\u00ad", "")
    return _SPACES.sub(" ", text).strip()


def title_from_path(path: Path) -> str:
    """"notes_de-visite.md" → "Notes de visite": the title of a document that names none."""
    stem = re.sub(r"[_\-]+", " ", path.stem).strip()
    return stem[:1].upper() + stem[1:] if stem else path.name


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
