"""`octi kb …`: fill, query and measure the knowledge base from a terminal.

    octi kb ingest PATH… [--prune]            ingest files/directories (.md .markdown .txt .html .htm .pdf)
    octi kb delete SOURCE…                    remove documents
    octi kb search "question" [--limit N] [--json]
    octi kb stats [--json]
    octi kb eval [--limit 5] [--json] [--questions FILE] [--min-recall R]

The store is the configured one (`open_store(get_settings())`). Before search, stats and
eval, an empty store is seeded with the sample pack. A document's source is its file's
resolved path, relative to the project directory when under it, "sample_pack/<name>" for the
sample pack (see ingest/sources.py), so any spelling of a path names the same document.
Exit codes: 0 success; 1 some file failed to ingest, a SOURCE to delete is not stored (or
eval below --min-recall); 2 usage error or store unavailable.
Each command runs its own event loop: invoke it from synchronous code only.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn, TextIO

import click

from app.cli_support import OrderedGroup, run_coroutine
from app.config import get_settings
from app.knowledge.errors import KnowledgeUnavailable
from app.knowledge.evaluate import evaluate, load_questions
from app.knowledge.ingest import SUPPORTED_SUFFIXES, delete_documents, ingest_paths
from app.knowledge.seed import ensure_seeded
from app.knowledge.store import KnowledgeStore


class ProgressBar:
    """A one-line text bar on a terminal; one line per file when the stream is not a tty."""

    WIDTH = 24

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last_len = 0

    def __call__(self, done: int, total: int, source: str, outcome: str) -> None:
        filled = self.WIDTH * done // total if total else self.WIDTH
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        line = f"[{bar}] {done}/{total} {outcome:<9} {source}"
        if self.tty:
            padding = " " * max(0, self._last_len - len(line))
            self.stream.write("\r" + line + padding)
            self._last_len = len(line)
            if done == total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


@click.group(name="kb", cls=OrderedGroup)
def cli() -> None:
    """Manage OCTI's knowledge base."""


@cli.command(short_help="ingest files and directories",
             help=f"Ingest documents ({' '.join(sorted(SUPPORTED_SUFFIXES))}); directories are walked. "
                  "Unchanged files are skipped, changed ones replaced.")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--prune", is_flag=True,
              help="also remove the stored documents under the directories given whose file is gone")
def ingest(paths: tuple[str, ...], quiet: bool, prune: bool) -> None:
    _run(lambda store: _ingest(store, paths, quiet, prune))


@cli.command(short_help="remove documents",
             help="Remove documents from the knowledge base, each named by its source (as `octi kb search` "
                  "shows it) or by its file's path.")
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
def delete(sources: tuple[str, ...]) -> None:
    _run(lambda store: _delete(store, sources))


@cli.command()
@click.argument("question")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="passages to show (default: RAG_TOP_K)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
def search(question: str, limit: int | None, as_json: bool) -> None:
    """search the knowledge base"""
    _run(lambda store: _search(store, question, limit, as_json))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print a JSON object")
def stats(as_json: bool) -> None:
    """documents, chunks, backend, vectors"""
    _run(lambda store: _stats(store, as_json))


@cli.command(name="eval")
@click.option("--limit", type=click.IntRange(min=1), default=5, help="passages searched per question (default 5)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--questions", type=click.Path(dir_okay=False, path_type=Path),
              help="another evaluation set (JSON)")
@click.option("--min-recall", type=float, default=None, help="exit 1 when recall@5 is below this (0–1)")
def measure_retrieval(limit: int, as_json: bool, questions: Path | None, min_recall: float | None) -> None:
    """measure retrieval on the evaluation set"""
    _run(lambda store: _eval(store, limit, as_json, questions, min_recall))


async def _seed(store: KnowledgeStore) -> None:
    """Seed the sample pack into an empty store (or finish an interrupted seeding)."""
    if await store.count() == 0:
        click.echo("knowledge base empty: ingesting the sample pack…", err=True)
    written = await ensure_seeded(store)
    if written:
        click.echo(f"sample pack ingested ({written} chunks)", err=True)


async def _ingest(store: KnowledgeStore, paths: tuple[str, ...], quiet: bool, prune: bool) -> int:
    progress = None if quiet else ProgressBar(sys.stderr)
    report = await ingest_paths(store, paths, progress=progress, prune=prune)
    for source, message in report.failed:
        click.echo(f"failed: {source}: {message}", err=True)
    for source in report.removed:
        click.echo(f"removed: {source}")
    click.echo(report.summary())
    return 1 if report.failed else 0


async def _delete(store: KnowledgeStore, names: tuple[str, ...]) -> int:
    deleted, unknown = await delete_documents(store, names)
    for source in deleted:
        click.echo(f"removed: {source}")
    for name in unknown:
        click.echo(f"not stored: {name}", err=True)
    click.echo(f"{len(deleted)} removed, {len(unknown)} not stored")
    return 1 if unknown else 0


async def _search(store: KnowledgeStore, question: str, limit: int | None, as_json: bool) -> int:
    await _seed(store)
    passages = await store.search(question, limit=limit if limit is not None else get_settings().rag_top_k)
    if as_json:
        payload = [{"id": p.id, "source": p.source, "title": p.title, "text": p.text,
                    "score": round(p.score, 6), "position": p.position} for p in passages]
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return 0
    if not passages:
        click.echo("no passage found")
        return 0
    for rank, p in enumerate(passages, start=1):
        click.echo(f"{rank}. [{p.score:.3f}] {p.title}")
        click.echo(f"   {p.source} #{p.position}")
        for paragraph in p.text.split("\n"):
            click.echo(textwrap.fill(paragraph, width=100, initial_indent="   ", subsequent_indent="   "))
        click.echo()
    return 0


async def _stats(store: KnowledgeStore, as_json: bool) -> int:
    settings = get_settings()
    await _seed(store)
    health = await store.health()
    documents = health.extra.get("documents")
    location = health.extra.get("path") or health.extra.get("url") \
        or (settings.weaviate_url if health.backend == "weaviate" else None)
    info = {
        "backend": health.backend,
        "ok": health.ok,
        "documents": documents,
        "chunks": health.chunks,
        "vectors": health.vectors,
        "detail": health.detail,
        "data_dir": str(settings.data_dir.resolve()),
        "location": location,
    }
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False, indent=2))
        return 0
    vectors = "on (hybrid: keywords + vectors)" if health.vectors else "off (keywords only)"
    lines = [
        f"backend:   {health.backend}" + ("" if health.ok else "  (NOT OK)"),
        f"documents: {documents if documents is not None else 'unknown'}",
        f"chunks:    {health.chunks}",
        f"vectors:   {vectors}",
    ]
    if health.detail:
        lines.append(f"detail:    {health.detail}")
    lines.append(f"data dir:  {info['data_dir']}")
    if location:
        lines.append(f"store:     {location}")
    click.echo("\n".join(lines))
    return 0 if health.ok else 2


async def _eval(store: KnowledgeStore, limit: int, as_json: bool, questions_path: Path | None,
                min_recall: float | None) -> int:
    try:
        questions = await asyncio.to_thread(load_questions, questions_path)
    except (OSError, ValueError) as exc:
        click.echo(f"octi kb eval: cannot load the evaluation set: {exc}", err=True)
        return 2
    await _seed(store)
    report = await evaluate(store, questions, limit=limit)
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        found_1 = sum(1 for r in report.results if r.rank == 1)
        found_5 = sum(1 for r in report.results if r.rank is not None and r.rank <= 5)
        click.echo(f"questions: {report.total} (top {report.limit} passages each)")
        click.echo(f"recall@1:  {report.recall_at_1:.3f} ({found_1}/{report.total})")
        click.echo(f"recall@5:  {report.recall_at_5:.3f} ({found_5}/{report.total})")
        click.echo(f"MRR:       {report.mrr:.3f}")
        misses = report.misses
        click.echo(f"misses:    {len(misses)}")
        for miss in misses:
            click.echo(f"  - {miss.question}\n    expected {miss.expected_source}, got: "
                       f"{', '.join(miss.retrieved) or 'nothing'}")
    if min_recall is not None and report.recall_at_5 < min_recall:
        click.echo(f"recall@5 {report.recall_at_5:.3f} is below --min-recall {min_recall}", err=True)
        return 1
    return 0


def _run(action: Callable[[KnowledgeStore], Awaitable[int]]) -> NoReturn:
    """Run `action` on the configured knowledge store and exit with its code."""
    sys.exit(run_coroutine(_on_store(action)))


async def _on_store(action: Callable[[KnowledgeStore], Awaitable[int]]) -> int:
    from app.knowledge.stores import open_store

    try:
        store = open_store(get_settings())
    except (ValueError, KnowledgeUnavailable) as exc:
        click.echo(f"octi kb: cannot open the knowledge store: {exc}", err=True)
        return 2
    try:
        return await action(store)
    except KnowledgeUnavailable as exc:
        click.echo(f"octi kb: knowledge store unavailable: {exc}", err=True)
        return 2
    finally:
        try:
            await store.close()
        except Exception as exc:  # closing must not hide the command's result
            click.echo(f"octi kb: error while closing the store: {exc}", err=True)
