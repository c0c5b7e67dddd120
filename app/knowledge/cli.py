"""`octi kb …`: fill, query and measure the knowledge base from a terminal.

    octi kb ingest PATH…                      ingest files/directories (.md .markdown .txt .html .htm .pdf)
    octi kb search "question" [--limit N] [--json]
    octi kb stats [--json]
    octi kb eval [--limit 5] [--json] [--questions FILE] [--min-recall R]

The store is the configured one (`open_store(get_settings())`). Before search, stats and
eval, an empty store is seeded with the sample pack. Sources are the paths as given, except
for the sample pack's own files, stored as "sample_pack/<name>" like the seeded copies
(`octi kb ingest app/knowledge/sample_pack` refreshes them rather than duplicating them). Exit codes: 0 success; 1 some file
failed to ingest (or eval below --min-recall); 2 usage error or store unavailable.
`cli()` runs its own event loop: call it from synchronous code only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import textwrap
from collections.abc import Sequence
from typing import TextIO

from app.config import get_settings
from app.knowledge.errors import KnowledgeUnavailable
from app.knowledge.evaluate import evaluate, load_questions
from app.knowledge.ingest import SUPPORTED_SUFFIXES, ingest_paths
from app.knowledge.seed import ensure_seeded, source_for
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="octi kb", description="Manage OCTI's knowledge base.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    ingest = commands.add_parser(
        "ingest", help="ingest files and directories",
        description=f"Ingest documents ({' '.join(sorted(SUPPORTED_SUFFIXES))}); directories are walked. "
                    "Unchanged files are skipped, changed ones replaced.")
    ingest.add_argument("paths", nargs="+", metavar="PATH")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")

    search = commands.add_parser("search", help="search the knowledge base")
    search.add_argument("question")
    search.add_argument("--limit", type=int, default=None, help="passages to show (default: RAG_TOP_K)")
    search.add_argument("--json", action="store_true", help="print a JSON list")

    stats = commands.add_parser("stats", help="documents, chunks, backend, vectors")
    stats.add_argument("--json", action="store_true", help="print a JSON object")

    evaluation = commands.add_parser("eval", help="measure retrieval on the evaluation set")
    evaluation.add_argument("--limit", type=int, default=5, help="passages searched per question (default 5)")
    evaluation.add_argument("--json", action="store_true", help="print the report as JSON")
    evaluation.add_argument("--questions", help="another evaluation set (JSON)")
    evaluation.add_argument("--min-recall", type=float, default=None,
                            help="exit 1 when recall@5 is below this (0–1)")
    return parser


async def _seed(store: KnowledgeStore, err: TextIO) -> None:
    """Seed the sample pack into an empty store (or finish an interrupted seeding)."""
    if await store.count() == 0:
        err.write("knowledge base empty: ingesting the sample pack…\n")
        err.flush()
    written = await ensure_seeded(store)
    if written:
        err.write(f"sample pack ingested ({written} chunks)\n")


async def _ingest(store: KnowledgeStore, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    progress = None if args.quiet else ProgressBar(err)
    report = await ingest_paths(store, args.paths, progress=progress, source_for=source_for)
    for source, message in report.failed:
        err.write(f"failed: {source}: {message}\n")
    out.write(report.summary() + "\n")
    return 1 if report.failed else 0


async def _search(store: KnowledgeStore, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    limit = args.limit if args.limit is not None else get_settings().rag_top_k
    if limit < 1:
        err.write("octi kb search: --limit must be at least 1\n")
        return 2
    await _seed(store, err)
    passages = await store.search(args.question, limit=limit)
    if args.json:
        payload = [{"id": p.id, "source": p.source, "title": p.title, "text": p.text,
                    "score": round(p.score, 6), "position": p.position} for p in passages]
        out.write(json.dumps(payload, ensure_ascii=False, indent=2) + "\n")
        return 0
    if not passages:
        out.write("no passage found\n")
        return 0
    for rank, p in enumerate(passages, start=1):
        out.write(f"{rank}. [{p.score:.3f}] {p.title}\n")
        out.write(f"   {p.source} #{p.position}\n")
        for paragraph in p.text.split("\n"):
            out.write(textwrap.fill(paragraph, width=100, initial_indent="   ", subsequent_indent="   ") + "\n")
        out.write("\n")
    return 0


async def _stats(store: KnowledgeStore, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    settings = get_settings()
    await _seed(store, err)
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
    if args.json:
        out.write(json.dumps(info, ensure_ascii=False, indent=2) + "\n")
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
    out.write("\n".join(lines) + "\n")
    return 0 if health.ok else 2


async def _eval(store: KnowledgeStore, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.limit < 1:
        err.write("octi kb eval: --limit must be at least 1\n")
        return 2
    try:
        questions = await asyncio.to_thread(load_questions, args.questions)
    except (OSError, ValueError) as exc:
        err.write(f"octi kb eval: cannot load the evaluation set: {exc}\n")
        return 2
    await _seed(store, err)
    report = await evaluate(store, questions, limit=args.limit)
    if args.json:
        out.write(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) + "\n")
    else:
        found_1 = sum(1 for r in report.results if r.rank == 1)
        found_5 = sum(1 for r in report.results if r.rank is not None and r.rank <= 5)
        out.write(f"questions: {report.total} (top {report.limit} passages each)\n")
        out.write(f"recall@1:  {report.recall_at_1:.3f} ({found_1}/{report.total})\n")
        out.write(f"recall@5:  {report.recall_at_5:.3f} ({found_5}/{report.total})\n")
        out.write(f"MRR:       {report.mrr:.3f}\n")
        misses = report.misses
        out.write(f"misses:    {len(misses)}\n")
        for miss in misses:
            out.write(f"  - {miss.question}\n    expected {miss.expected_source}, got: "
                      f"{', '.join(miss.retrieved) or 'nothing'}\n")
    if args.min_recall is not None and report.recall_at_5 < args.min_recall:
        err.write(f"recall@5 {report.recall_at_5:.3f} is below --min-recall {args.min_recall}\n")
        return 1
    return 0


_COMMANDS = {"ingest": _ingest, "search": _search, "stats": _stats, "eval": _eval}


async def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from app.knowledge.stores import open_store

    try:
        store = open_store(get_settings())
    except (ValueError, KnowledgeUnavailable) as exc:
        err.write(f"octi kb: cannot open the knowledge store: {exc}\n")
        return 2
    try:
        return await _COMMANDS[args.command](store, args, out, err)
    except KnowledgeUnavailable as exc:
        err.write(f"octi kb: knowledge store unavailable: {exc}\n")
        return 2
    finally:
        try:
            await store.close()
        except Exception as exc:  # closing must not hide the command's result
            err.write(f"octi kb: error while closing the store: {exc}\n")


def cli(argv: Sequence[str] | None = None) -> int:
    """Entry point of `octi kb`; `argv` are the arguments after "kb"."""
    from app.cli import run_async_command

    return run_async_command(_parser(), _run, argv)
