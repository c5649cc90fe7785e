"""A document cut into training examples at its own structure, covering it end to end.

A short document is one example. A long one is cut where its author cut it:

- prose (articles, posts, notes, messages): at headings (Markdown ``#`` lines and
  underlined ones), then at paragraphs (blank lines; a fenced code block is one
  paragraph), then at sentence ends, and only a sentence longer than the budget at a
  space;
- code (repository files): at top-level definitions (a line that starts at column 0
  after a blank line), then at lines.

Paragraphs (definitions) are packed into pieces of at most ``PIECE_CHARS`` characters;
in prose a heading starts a new piece unless the piece so far is short. Each piece is an
exact slice of the text (only the whitespace between pieces is dropped), so every word of
the document is in exactly one piece. A piece knows the heading it sits under (for code,
the definition's first line), its place (``part`` of ``parts``) and the end of the text before it
(``context``, at most ``CONTEXT_CHARS``), which the training prompt shows so that a
middle piece is written as a continuation, not as a new beginning.

The budget is in characters because a snapshot is written before any tokenizer is
chosen: 1 200 characters are about 300 tokens of English prose for SmolLM2's tokenizer
(code runs denser), which leaves room in a 512-token sequence for the prompt and the
context. Training cuts again, at token level, a piece that does not fit (trainer/lora.py),
so nothing is ever truncated away.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PIECE_CHARS = 1200
CONTEXT_CHARS = 240
# A heading closes the piece so far only when it holds at least this much: a run of short
# sections stays one example instead of several tiny ones.
SHORT_PIECE_CHARS = PIECE_CHARS // 4
CODE_KINDS = frozenset({"repository_file"})

_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])[\"')\]\u201d\u2019]*\s+")
_SECTION_CHARS = 120


@dataclass(frozen=True)
class Piece:
    text: str
    section: str  # the heading (or, for code, the definition) it sits under; "" for none
    context: str  # the end of the text before it; "" for the first piece
    part: int  # 1-based
    parts: int


@dataclass(frozen=True)
class _Block:
    start: int
    end: int
    section: str
    opens_section: bool  # a heading (or a definition) begins here


def pieces(
    text: str,
    kind: str,
    *,
    budget: int = PIECE_CHARS,
    context_chars: int = CONTEXT_CHARS,
) -> list[Piece]:
    """``text`` as pieces of at most ``budget`` characters each; [] for blank text."""
    if not text.strip():
        return []
    if len(text.strip()) <= budget:
        return [Piece(text.strip(), "", "", 1, 1)]
    code = kind in CODE_KINDS
    blocks = _code_blocks(text) if code else _prose_blocks(text)
    spans: list[tuple[int, int, str]] = []  # start, end, section
    for block in _fitted(text, blocks, budget, code):
        if spans:
            start, end, section = spans[-1]
            grown = len(text[start : block.end].strip())
            heading_break = (
                not code
                and block.opens_section
                and len(text[start:end].strip()) >= SHORT_PIECE_CHARS
            )
            if grown <= budget and not heading_break:
                spans[-1] = (start, block.end, section or block.section)
                continue
        spans.append((block.start, block.end, block.section))
    out: list[Piece] = []
    for index, (start, end, section) in enumerate(spans):
        context = _tail(out[-1].text, context_chars) if out else ""
        out.append(Piece(text[start:end].strip(), section, context, index + 1, len(spans)))
    return [p for p in out if p.text]


def _prose_blocks(text: str) -> list[_Block]:
    """Paragraphs (a fence is one), each with the heading it sits under."""
    blocks: list[_Block] = []
    section = ""
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    start: int | None = None
    opens = False
    fenced = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if _FENCE.match(line):
            fenced = not fenced
        heading = None
        if not fenced:
            atx = _ATX_HEADING.match(line)
            if atx:
                heading = atx.group(1)
            elif (
                i + 1 < len(lines)
                and _SETEXT.match(lines[i + 1])
                and stripped
                and (i == 0 or not lines[i - 1].strip())
            ):
                heading = stripped
        if heading is not None:
            if start is not None:
                blocks.append(_Block(start, offsets[i], section, opens))
            section = heading[:_SECTION_CHARS]
            start, opens = offsets[i], True
            continue
        if not stripped and not fenced:
            if start is not None and text[start : offsets[i]].strip():
                blocks.append(_Block(start, offsets[i], section, opens))
                start, opens = None, False
            continue
        if start is None:
            start = offsets[i]
    if start is not None:
        blocks.append(_Block(start, len(text), section, opens))
    return _merge_headings(text, blocks)


def _is_heading_only(block: str) -> bool:
    lines = [line for line in block.splitlines() if line.strip()]
    return (
        len(lines) <= 2
        and bool(lines)
        and (
            bool(_ATX_HEADING.match(lines[0]))
            or (len(lines) == 2 and bool(_SETEXT.match(lines[1])))
        )
    )


def _merge_headings(text: str, blocks: list[_Block]) -> list[_Block]:
    """A heading on its own is joined to the paragraph after it: it is never a piece alone."""
    merged: list[_Block] = []
    for block in blocks:
        if merged and _is_heading_only(text[merged[-1].start : merged[-1].end]):
            head = merged.pop()
            block = _Block(head.start, block.end, head.section, True)
        merged.append(block)
    return merged


def _code_blocks(text: str) -> list[_Block]:
    """Top-level definitions (a line at column 0 after a blank line opens one)."""
    blocks: list[_Block] = []
    lines = text.splitlines(keepends=True)
    offset = 0
    start = 0
    section = ""
    previous_blank = True
    for line in lines:
        opens = previous_blank and bool(line.strip()) and not line[0].isspace()
        if opens and offset > start and text[start:offset].strip():
            blocks.append(_Block(start, offset, section, True))
            start = offset
        if opens:
            section = line.strip()[:_SECTION_CHARS]
        previous_blank = not line.strip()
        offset += len(line)
    if text[start:].strip():
        blocks.append(_Block(start, len(text), section, True))
    return blocks


def _fitted(text: str, blocks: list[_Block], budget: int, code: bool) -> list[_Block]:
    """Every block within ``budget``: a longer one cut at lines or sentences, then spaces."""
    out: list[_Block] = []
    for block in blocks:
        if len(text[block.start : block.end].strip()) <= budget:
            out.append(block)
            continue
        cuts = _cuts(text, block.start, block.end, code)
        first = True
        for start, end in _pack(text, cuts, budget):
            out.append(_Block(start, end, block.section, block.opens_section and first))
            first = False
    return out


def _cuts(text: str, start: int, end: int, code: bool) -> list[tuple[int, int]]:
    """The block's smallest natural units: lines for code, sentences for prose."""
    units: list[tuple[int, int]] = []
    if code:
        position = start
        for line in text[start:end].splitlines(keepends=True):
            units.append((position, position + len(line)))
            position += len(line)
    else:
        position = start
        for match in _SENTENCE_END.finditer(text, start, end):
            units.append((position, match.end()))
            position = match.end()
        if position < end:
            units.append((position, end))
    return units


def _pack(text: str, units: list[tuple[int, int]], budget: int) -> list[tuple[int, int]]:
    """Units packed into spans of at most ``budget`` characters; an over-long unit at spaces."""
    spans: list[tuple[int, int]] = []
    for start, end in units:
        for piece_start, piece_end in _at_spaces(text, start, end, budget):
            if spans and len(text[spans[-1][0] : piece_end].strip()) <= budget:
                spans[-1] = (spans[-1][0], piece_end)
            else:
                spans.append((piece_start, piece_end))
    return spans


def _at_spaces(text: str, start: int, end: int, budget: int) -> list[tuple[int, int]]:
    spans = []
    while len(text[start:end].strip()) > budget:
        limit = start + budget
        cut = text.rfind(" ", start + budget // 2, limit)
        cut = cut if cut > start else limit  # no space: a hard cut
        spans.append((start, cut))
        start = cut
    spans.append((start, end))
    return spans


def _tail(text: str, chars: int) -> str:
    """The last ``chars`` characters of ``text`` or fewer, starting at a word."""
    if len(text) <= chars:
        return text
    tail = text[-chars:]
    space = tail.find(" ")
    return "\u2026" + (tail[space + 1 :] if 0 <= space < chars // 2 else tail)
