"""Markdown (.md, .markdown), parsed by markdown-it-py (CommonMark, with GFM tables and
strikethrough) and its front-matter plugin.

* Title: a YAML front matter's ``title``, else the first level-1 heading met before any
  other heading (text before it stays an untitled introduction), else the file name. The
  other headings, ATX or setext, open sections.
* Paragraphs and block quotes give one block per paragraph; links, emphasis, inline code and
  images are reduced to their text (an image to its alt text), entities are decoded, inline
  HTML tags are dropped (``<br>`` becomes a space), comments vanish.
* Every list item, at any depth, gives a block "- text" (its first paragraph; its other
  paragraphs follow as blocks of their own); ordered items too, their numbers dropped.
* A table row gives a block "column : value ; …" (empty cells left out).
* Fenced and indented code is kept as written, one block each.
* HTML blocks are read as HTML (see `html.py`): their text, without scripts, styles or
  comments; their headings open sections.
* Text nested deeper than 100 levels (quotes in lists in quotes…) is left out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.front_matter import front_matter_plugin

from app.knowledge.ingest.document import Document, SectionBuilder, clean_space
from app.knowledge.ingest.html import read_html_into

SUFFIXES = frozenset({".md", ".markdown"})

# CommonMark's preset stops at 20 levels of nesting and drops what lies deeper: a list nested
# ten deep already. 100 keeps real documents whole and the parser's recursion far below Python's.
_MAX_NESTING = 100
_PARSER = MarkdownIt("commonmark", {"maxNesting": _MAX_NESTING}) \
    .enable(["table", "strikethrough"]).use(front_matter_plugin)
_ITEM_MARK = "- "
_LINE_BREAK_TAG = re.compile(r"<br\b", re.IGNORECASE)


class _MarkdownSink:
    """Headings and blocks of a Markdown document, with its rule for the title."""

    def __init__(self, title: str | None) -> None:
        self.title = title
        self.builder = SectionBuilder()

    def heading(self, level: int, text: str) -> None:
        if level == 1 and self.title is None and not self.builder.stack:
            self.title = text
        else:
            self.builder.heading(level, text)

    def block(self, text: str) -> None:
        self.builder.block(text)


def _inline_text(tokens: Sequence[Token] | None) -> str:
    parts: list[str] = []
    for token in tokens or ():
        if token.type in {"text", "code_inline"}:
            parts.append(token.content)
        elif token.type in {"softbreak", "hardbreak"}:
            parts.append(" ")
        elif token.type == "image":
            parts.append(_inline_text(token.children))
        elif token.type == "html_inline" and _LINE_BREAK_TAG.match(token.content):
            parts.append(" ")
        # the other tokens are markup around text (link, emphasis) or inline HTML tags
    return "".join(parts)


def _front_matter_title(tokens: Sequence[Token]) -> str | None:
    if not tokens or tokens[0].type != "front_matter":
        return None
    try:
        meta = yaml.safe_load(tokens[0].content)
    except yaml.YAMLError:      # a broken header is no reason to refuse the text below it
        return None
    if not isinstance(meta, dict):
        return None
    for key, value in meta.items():
        # a scalar only: a nested value could be an alias bomb once turned into text
        if str(key).lower() == "title" and isinstance(value, (str, int, float)):
            return clean_space(str(value)) or None
    return None


def read_markdown(text: str, fallback_title: str) -> Document:
    tokens = _PARSER.parse(text)
    sink = _MarkdownSink(_front_matter_title(tokens))
    heading_level = 0              # inside a heading: its level
    item_mark = ""                 # "- " until the first paragraph of a list item takes it
    header: list[str] = []         # the table's column names
    row: list[str] = []            # the cells of the table row being read
    in_cell = False
    for token in tokens:
        kind = token.type
        if kind == "inline":
            content = clean_space(_inline_text(token.children))
            if heading_level:
                if content:
                    sink.heading(heading_level, content)
            elif in_cell:
                row.append(content)
            elif content:
                sink.block(item_mark + content)
                item_mark = ""
        elif kind == "heading_open":
            heading_level = int(token.tag[1:])
        elif kind == "heading_close":
            heading_level = 0
        elif kind == "list_item_open":
            item_mark = _ITEM_MARK
        elif kind == "list_item_close":
            item_mark = ""
        elif kind in {"th_open", "td_open"}:
            in_cell = True
        elif kind in {"th_close", "td_close"}:
            in_cell = False
        elif kind == "tr_close":
            if header:
                pairs = [f"{name} : {cell}" if name else cell for name, cell in zip(header, row) if cell]
                sink.block(" ; ".join(pairs))
            else:
                header = row
            row = []
        elif kind == "table_close":
            header = []
        elif kind in {"fence", "code_block"}:
            sink.builder.verbatim(token.content)
        elif kind == "html_block":
            read_html_into(token.content, sink)
    return Document(sink.title or fallback_title, sink.builder.build())
