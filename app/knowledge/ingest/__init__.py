"""Ingestion: read documents, cut them into chunks, write them to a knowledge store.

One module per format turns a file into a `Document` (a title and sections, each with its
heading path and its text blocks): `markdown` (.md, .markdown, markdown-it-py), `html`
(.html, .htm, selectolax), `pdf` (.pdf, pypdf) and `text` (.txt). A reader that cannot make
sense of a file raises `IngestError` with a message meant for the person running the
ingestion. `chunking` cuts any `Document` into chunks; this module walks paths, skips
unchanged files, writes the chunks to a store and, asked to, drops the documents whose files
are gone.

Identity
    * `source` is the file's path, its directory resolved, relative to the project directory
      when the file is under it, "sample_pack/<name>" for the sample pack (see `sources`):
      "docs/a.md", "./docs/a.md" and "/srv/octi/docs/a.md" name one document.
    * Chunk ids derive from source, position and text (see `chunking`).
    * A document's checksum is sha256 over `CHUNKER_VERSION` and the file bytes: a file whose
      bytes did not change is skipped, unless the readers or the chunker changed (bump
      `CHUNKER_VERSION` whenever a change in this package alters the chunks produced).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from app.knowledge.ingest import html, markdown, pdf, text
from app.knowledge.ingest.chunking import (
    HEADING_SEPARATOR,
    MAX_CHARS,
    MIN_CHARS,
    OVERLAP_CHARS,
    OVERLAP_MAX_CHARS,
    TAIL_CHARS,
    TARGET_CHARS,
    TITLE_SEPARATOR,
    chunk_document,
    chunk_id,
    section_title,
    split_sentences,
)
from app.knowledge.ingest.document import Document, IngestError, Section, decode_text, title_from_path
from app.knowledge.ingest.html import read_html
from app.knowledge.ingest.markdown import read_markdown
from app.knowledge.ingest.pdf import read_pdf
from app.knowledge.ingest.sources import file_source, located, source_file
from app.knowledge.ingest.text import read_text
from app.knowledge.store import Chunk, KnowledgeStore

__all__ = [
    "CHUNKER_VERSION", "HEADING_SEPARATOR", "HTML_SUFFIXES", "MARKDOWN_SUFFIXES", "MAX_CHARS",
    "MIN_CHARS", "OVERLAP_CHARS", "OVERLAP_MAX_CHARS", "PDF_SUFFIXES", "SUPPORTED_SUFFIXES",
    "TAIL_CHARS", "TARGET_CHARS", "TEXT_SUFFIXES", "TITLE_SEPARATOR", "Document", "IngestError",
    "IngestReport", "Progress", "Section", "chunk_document", "chunk_id", "collect_files",
    "decode_text", "delete_documents", "document_checksum", "ingest_file", "ingest_paths", "read_document",
    "read_html", "read_markdown", "read_pdf", "read_text", "section_title", "split_sentences",
]

log = logging.getLogger(__name__)

CHUNKER_VERSION = "2"   # 2: Markdown and HTML read by markdown-it-py and selectolax

MARKDOWN_SUFFIXES = markdown.SUFFIXES
TEXT_SUFFIXES = text.SUFFIXES
HTML_SUFFIXES = html.SUFFIXES
PDF_SUFFIXES = pdf.SUFFIXES
SUPPORTED_SUFFIXES = MARKDOWN_SUFFIXES | TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES
# A fiche, a guide or a scanned PDF is well under this; more is a mistake (or a trap) to refuse.
MAX_DOCUMENT_BYTES = 50 * 1024 * 1024


def read_document(path: Path, data: bytes) -> Document:
    """Parse a file's bytes according to its extension."""
    suffix = path.suffix.lower()
    fallback = title_from_path(path)
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


def document_checksum(data: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(f"octi-chunker/{CHUNKER_VERSION}\x00".encode())
    digest.update(data)
    return "sha256:" + digest.hexdigest()


@dataclass(slots=True)
class IngestReport:
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    chunks_written: int = 0
    removed: list[str] = field(default_factory=list)  # documents dropped: files gone, or older spellings

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def files(self) -> int:
        return len(self.added) + len(self.replaced) + len(self.unchanged) + len(self.failed)

    def summary(self) -> str:
        removed = f"; {len(self.removed)} removed" if self.removed else ""
        return (f"{len(self.added)} added, {len(self.replaced)} replaced, "
                f"{len(self.unchanged)} unchanged, {len(self.failed)} failed; "
                f"{self.chunks_written} chunks written{removed}")


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
    """The file's bytes; a FIFO, a device (a link to /dev/zero) or a file past
    MAX_DOCUMENT_BYTES is refused before it is read, as reading it would hang or fill memory."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise IngestError("cannot read: not a regular file")
        if info.st_size > MAX_DOCUMENT_BYTES:
            raise IngestError(f"too large: {info.st_size} bytes, over {MAX_DOCUMENT_BYTES}")
        with path.open("rb") as file:
            data = file.read(MAX_DOCUMENT_BYTES + 1)  # it may have grown since
        if len(data) > MAX_DOCUMENT_BYTES:
            raise IngestError(f"too large: over {MAX_DOCUMENT_BYTES} bytes")
        return data
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
    except Exception as exc:  # a parser's bug on a strange file fails that file, not the run
        log.warning("reading %s failed", source, exc_info=True)
        raise IngestError(f"cannot parse the document ({type(exc).__name__}: {exc})") from None
    chunks = chunk_document(document, source)
    if not chunks:
        raise IngestError("no text found in the document")
    return chunks


async def ingest_file(store: KnowledgeStore, path: str | os.PathLike[str], *,
                      source: str | None = None) -> tuple[str, int]:
    """Ingest one file; returns (outcome, chunks written), outcome "added", "replaced" or
    "unchanged". Raises IngestError for a file that cannot be read; store errors propagate.

    `source` defaults to the file's (see `sources`)."""
    path = Path(path)
    source = source or await asyncio.to_thread(file_source, path)
    data = await asyncio.to_thread(_read_bytes, path)
    checksum = document_checksum(data)
    previous = await store.document_checksum(source)
    if previous == checksum:
        return "unchanged", 0
    chunks = await asyncio.to_thread(_chunks_from_bytes, path, data, source)
    await store.replace_document(source, checksum, chunks)
    return ("added" if previous is None else "replaced"), len(chunks)


async def ingest_paths(store: KnowledgeStore, paths: Iterable[str | os.PathLike[str]], *,
                       progress: Progress | None = None, prune: bool = False) -> IngestReport:
    """Ingest files and directories (walked recursively, supported extensions only).

    Idempotent: an unchanged file (same bytes, same chunker version) is skipped; a changed
    one replaces what the store held for its source. A file that cannot be read, parsed or
    stored becomes a `failed` entry with a message; the others go on. A document an earlier
    version stored under the path as given (not its source) is dropped once its file is
    stored under its source. With `prune`, so are the stored documents under the directories
    walked whose file is gone, or stored under its source as well (spelt another way before)."""
    report = IngestReport()
    given = [Path(path) for path in paths]

    def plan() -> tuple[list[tuple[Path, str, str | None]], list[tuple[str, str]], list[Path]]:
        files, refused = collect_files(given)
        planned: dict[str, Path] = {}
        for path in files:
            planned.setdefault(file_source(path), path)  # a file named twice is ingested once
        directories = [path.resolve() for path in given if path.is_dir()]
        return [(path, source, _older_spelling(path, source)) for source, path in planned.items()], \
            refused, directories

    files, refused, directories = await asyncio.to_thread(plan)   # walking and resolving touch the disk
    total = len(files) + len(refused)
    done = 0
    for source, message in refused:
        report.failed.append((source, message))
        done += 1
        if progress:
            progress(done, total, source, "failed")
    for path, source, older in files:
        try:
            outcome, written = await ingest_file(store, path, source=source)
            if older is not None and await store.document_checksum(older) is not None:
                await store.delete_document(older)
                report.removed.append(older)
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
    if prune and directories:
        report.removed += await _prune(store, directories)
    return report


def _older_spelling(path: Path, source: str) -> str | None:
    """The source earlier versions gave the file, the path as given, when it is not its source
    and cannot be another file's: read as a source now, it names this file or none."""
    as_given = str(path)
    if as_given == source:
        return None
    named = source_file(as_given)
    return as_given if located(named) == located(path) or _gone(named) else None


async def _prune(store: KnowledgeStore, directories: list[Path]) -> list[str]:
    """Drop the stored documents under `directories` whose file is gone, or whose file is
    stored under its source as well; the sources dropped."""
    stored = await store.sources()

    def stale() -> list[str]:  # resolving and looking at files touch the disk
        known = set(stored)
        found = []
        for source in stored:
            path = source_file(source)
            if not any(located(path).is_relative_to(directory) for directory in directories):
                continue
            if _gone(path):
                found.append(source)
            elif (current := file_source(path)) != source and current in known:
                found.append(source)
        return found

    removed = await asyncio.to_thread(stale)
    for source in removed:
        await store.delete_document(source)
    return removed


def _gone(path: Path) -> bool:
    """Whether the file is certainly not there (a file that cannot be looked at is kept)."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:  # there, but not to be looked at (permission denied...)
        pass
    return False


async def delete_documents(store: KnowledgeStore, names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Delete documents named by their source as stored, or else by their file's path;
    returns (sources deleted, names that matched no stored document)."""
    deleted: list[str] = []
    unknown: list[str] = []
    for name in names:
        source = name
        if await store.document_checksum(source) is None:
            source = await asyncio.to_thread(file_source, Path(name))
            if await store.document_checksum(source) is None:
                unknown.append(name)
                continue
        await store.delete_document(source)
        deleted.append(source)
    return deleted, unknown
