"""The source a file is stored under, and the file a stored source names.

A document's source is its file's path with the directory resolved (symbolic links, "." and
"..") and the file's own name kept, so every spelling of one file names one document, and a
link to a file names the link (pointed at a new version, it replaces the document). It is
written:

- "sample_pack/<name>" for a document of the sample pack, wherever the application is installed;
- relative to the project directory (the one holding `app/`) for a file under it, e.g.
  "docs/eau.md": what `octi kb ingest docs/` run there has always stored, short in the passages
  the model is given, and the same on every host sharing a Weaviate collection wherever each
  keeps the project;
- absolute otherwise, e.g. "/srv/fiches/eau.md".

Earlier versions stored the path as given ("../fiches/eau.md", "/srv/octi/docs/eau.md"):
ingestion replaces such a document when it meets its file under that spelling again, and
`octi kb ingest --prune` drops the ones left under the directories it walks (see ingest_paths).
"""

from __future__ import annotations

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[3]
SAMPLE_PACK_DIR = Path(__file__).resolve().parents[1] / "sample_pack"
SAMPLE_PACK_PREFIX = "sample_pack/"


def located(path: Path) -> Path:
    """`path` with its directory resolved and its own name kept (blocking: reads symbolic links)."""
    return path.parent.resolve() / path.name


def file_source(path: Path) -> str:
    """The source of the file at `path` (blocking, as `located`)."""
    resolved = located(path)
    for root, prefix in ((SAMPLE_PACK_DIR, SAMPLE_PACK_PREFIX), (PROJECT_DIR, "")):
        if resolved.is_relative_to(root):
            return prefix + resolved.relative_to(root).as_posix()
    return resolved.as_posix()


def source_file(source: str) -> Path:
    """The file a stored source names, read as `file_source` writes them."""
    if source.startswith(SAMPLE_PACK_PREFIX):
        return SAMPLE_PACK_DIR / source.removeprefix(SAMPLE_PACK_PREFIX)
    path = Path(source)
    return path if path.is_absolute() else PROJECT_DIR / path
