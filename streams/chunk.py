"""Chunking: cleaned text -> passages sized in the embedder's own wordpieces.

Sizes are counted with the embedding model's tokenizer, never in characters or words:
all-MiniLM-L6-v2 reads at most 256 wordpieces and silently drops the rest, so a chunk
measured any other way could lose its end without anyone noticing.

How a chunk is cut: the text is tokenized once; every boundary between two tokens gets
a strength (inside a word < between words < sentence or line < paragraph or blank line
< heading or top-level definition); each chunk then ends at the strongest boundary that
keeps it within budget, and the next one starts a little before it (the overlap), at a
sentence or line boundary when one is near enough. Chunk texts are exact slices of the
cleaned text, so offsets can point a reader back into the document.

Guarantees (tests/streams/test_chunk.py checks each one):
- ``chunk.text == text[chunk.start:chunk.end]``, never empty, indexes 0..n-1;
- ``chunk.token_count`` is the counter's count of ``chunk.text`` itself and is at most
  ``max_tokens``: every chunk is counted again after it is cut, because a word cut in two
  can tokenize into more pieces than it had inside the word;
- every non-whitespace character of the text is in some chunk, in order;
- the same input gives the same chunks (point ids derive from chunk indexes).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from schemas.documents import DocumentKind

# all-MiniLM-L6-v2 reads 256 wordpieces, [CLS] and [SEP] included, so 254 are text. 200
# leaves headroom for a prefix the embedder may add (a title) and for the few pieces a
# chunk can gain when re-tokenized on its own. Shorter chunks embed faster (measured:
# 73 chunks/s at 60 tokens vs 24 at 240, batch 1) but carry less context per retrieved
# passage; 200 is about one substantial paragraph, the unit retrieval works best on.
MAX_TOKENS = 200
# ~15% of a chunk, one or two sentences: a fact cut by a boundary is still whole in one of
# the two chunks on either side of it.
OVERLAP_TOKENS = 30
# Code overlaps only where a block had to be split, and then by a few lines: enough to
# carry the signature or loop header a split-off part belongs to.
CODE_OVERLAP_LINES = 3

# Boundary strengths, for the boundary just before a token.
_TOKEN = 0  # inside a word: between the wordpieces of one word, or punctuation glued to it
_WORD = 1  # whitespace between tokens, or next to a CJK ideograph (a word of its own)
_SENTENCE = 2  # prose: a sentence or list item starts; code: a line starts
_PARAGRAPH = 3  # prose: after a blank line, around a code fence; code: after a blank line
_SECTION = 4  # prose: a Markdown heading; code: a top-level definition (Markdown: heading)
_EDGE = 5  # the start or end of the text

_LINE = _SENTENCE
_BLANK_LINE = _PARAGRAPH
_DEFINITION = _SECTION

_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r" {0,3}#{1,6}(?:[ \t]|$)")
# List items, block quotes and table rows each start a sentence-like unit.
_LIST_ITEM = re.compile(r"\s*(?:(?:[-*+•]|\d{1,9}[.)])[ \t]|>|\|)")
# A sentence ends at terminal punctuation (and closing quotes or brackets) followed by
# whitespace; CJK full stops need none. A lowercase letter next means an abbreviation
# ("e.g. this") or an ellipsis inside a sentence, not a new sentence.
_SENTENCE_END = re.compile(
    "[.!?\u2026]+[\"'\u201d\u2019\u00bb)\\]]*\\s+"  # Latin: closing quotes, brackets
    "|[\u3002\uff01\uff1f]+[\u300d\u300f\u201d\u2019)\\]]*\\s*"  # CJK full stops, no space needed
)
# Top-level definitions, at column 0 only: nested ones belong to the block around them.
_DEFINITION_LINE = re.compile(
    r"(?:async\s+def|def|class|(?:async\s+)?function|func|(?:pub(?:\([a-z:]+\))?\s+)?"
    r"(?:async\s+)?fn|export|impl|struct|enum|trait|interface)\s"
)
# Lines that belong to the definition below them: decorators, attributes, doc comments.
_DEFINITION_PREAMBLE = ("@", "#", "//", "/*", "*")
# BERT's basic tokenizer makes every CJK ideograph a word of its own.
_CJK = re.compile(
    "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002ceaf"
    "\U0002f800-\U0002fa1f]"
)


@dataclass(frozen=True)
class Chunk:
    """One passage: ``text == cleaned[start:end]`` (character offsets)."""

    index: int
    text: str
    token_count: int
    start: int
    end: int


class TokenCounter(Protocol):
    def offsets(self, text: str) -> list[tuple[int, int]]:
        """The character span of each token of ``text``, special tokens excluded."""
        ...


class FastTokenizer(Protocol):
    """What ``HFTokenCounter`` needs of a Hugging Face (fast) tokenizer."""

    def __call__(
        self,
        text: str,
        *,
        add_special_tokens: bool = ...,
        return_offsets_mapping: bool = ...,
        verbose: bool = ...,
    ) -> Mapping[str, Any]: ...


class HFTokenCounter:
    """A ``TokenCounter`` over a Hugging Face fast tokenizer (offsets need a fast one)."""

    def __init__(self, tokenizer: FastTokenizer) -> None:
        self._tokenizer = tokenizer

    def offsets(self, text: str) -> list[tuple[int, int]]:
        # verbose=False: a whole document is longer than the model's window on purpose
        # here, and transformers would otherwise warn that it will be truncated.
        encoding = self._tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        return [(int(start), int(end)) for start, end in encoding["offset_mapping"]]


def chunk(
    text: str,
    kind: DocumentKind,
    counter: TokenCounter,
    *,
    max_tokens: int = MAX_TOKENS,
    overlap_tokens: int = OVERLAP_TOKENS,
    language: str | None = None,
) -> list[Chunk]:
    """``text`` (cleaned) cut into chunks of at most ``max_tokens`` tokens of ``counter``.

    ``language`` is a repository file's ``metadata["language"]``: for "markdown", headings
    are where its chunks prefer to start; it is ignored for other kinds.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, not {max_tokens}")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError(f"overlap_tokens must be in [0, max_tokens), not {overlap_tokens}")
    return CHUNKERS[kind](text, counter, max_tokens, overlap_tokens, language)


# --- The plan: tokens and the strength of each boundary between them --------------------


@dataclass(frozen=True)
class _Plan:
    text: str
    spans: list[tuple[int, int]]
    # levels[k]: the strength of the boundary before token k; levels[n] is the text's end.
    levels: list[int]
    first: int  # the first and one past the last non-whitespace character
    last: int

    @property
    def size(self) -> int:
        return len(self.spans)

    def latest(self, low: int, high: int, level: int) -> int | None:
        """The last boundary in [low, high] at least that strong."""
        for k in range(high, low - 1, -1):
            if self.levels[k] >= level:
                return k
        return None

    def earliest(self, low: int, high: int, level: int) -> int | None:
        """The first boundary in [low, high] at least that strong."""
        for k in range(low, high + 1):
            if self.levels[k] >= level:
                return k
        return None

    def span(self, first: int, stop: int, *, keep_indent: bool) -> tuple[int, int]:
        """The characters of tokens [first, stop), with what lies between them and the next."""
        text = self.text
        start = self.first if first == 0 else self.spans[first][0]
        if keep_indent:  # code: a chunk starting a line keeps the line's indentation
            back = start
            while back > 0 and text[back - 1] in " \t":
                back -= 1
            if back == 0 or text[back - 1] == "\n":
                start = back
        if stop == self.size:
            return start, self.last
        # Up to the next token, less whitespace: characters the tokenizer skips (it drops
        # some symbols) stay in a chunk, so every visible character is in one.
        end = self.spans[stop][0]
        floor = self.spans[stop - 1][1]
        while end > floor and text[end - 1].isspace():
            end -= 1
        return start, end


def _plan(text: str, counter: TokenCounter, breaks: dict[int, int]) -> _Plan:
    # A token with an empty span holds no character to cut at; the recount still sees it.
    spans = [(start, end) for start, end in counter.offsets(text) if end > start]
    levels = [_EDGE] * (len(spans) + 1)
    positions = sorted(breaks)
    j = 0
    for k in range(1, len(spans)):
        gap_start, gap_end = spans[k - 1][1], spans[k][0]
        gap = text[gap_start:gap_end]
        if any(character.isspace() for character in gap) or (
            _CJK.match(text[gap_end]) or (gap_start > 0 and _CJK.match(text[gap_start - 1]))
        ):
            level = _WORD
        else:
            level = _TOKEN
        # Units (sentences, lines...) start at their first visible character, which is the
        # next token's first character or a skipped character in the gap.
        while j < len(positions) and positions[j] < gap_start:
            j += 1
        while j < len(positions) and positions[j] <= gap_end:
            level = max(level, breaks[positions[j]])
            j += 1
        levels[k] = level
    stripped = text.rstrip()
    return _Plan(text, spans, levels, len(stripped) - len(stripped.lstrip()), len(stripped))


def _lines(text: str) -> list[tuple[int, str]]:
    """Each line with the offset of its first character."""
    lines: list[tuple[int, str]] = []
    start = 0
    for line in text.split("\n"):
        lines.append((start, line))
        start += len(line) + 1
    return lines


def _first_visible(start: int, line: str) -> int:
    return start + len(line) - len(line.lstrip())


def _mark(breaks: dict[int, int], position: int, level: int) -> None:
    if breaks.get(position, -1) < level:
        breaks[position] = level


# --- Packing, shared by prose and code ---------------------------------------------------

# cut(plan, first token, budget, limit) -> where the chunk ends (exclusive token index)
_Cut = Callable[[_Plan, int, int, int], int]
# overlap(plan, previous chunk's first token, this chunk's first new token, end) -> start
_Overlap = Callable[[_Plan, int, int, int], int]


def _pack(
    plan: _Plan,
    counter: TokenCounter,
    max_tokens: int,
    overlap_tokens: int,
    *,
    cut: _Cut,
    overlap: _Overlap,
    fresh_after: int,
    keep_indent: bool,
) -> list[Chunk]:
    """Chunks over the whole plan: cut, overlap, then recount and shrink until they fit.

    A chunk that starts at a boundary of strength ``fresh_after`` or more has no overlap
    and may use all of ``max_tokens``; any other leaves room for one.
    """
    if not plan.spans:
        if plan.first == plan.last:
            return []
        # Visible characters the tokenizer skips entirely: one chunk, nothing to split.
        text = plan.text[plan.first : plan.last]
        return [Chunk(0, text, len(counter.offsets(text)), plan.first, plan.last)]
    chunks: list[Chunk] = []
    previous = 0
    fresh = 0
    while fresh < plan.size:
        overlapping = plan.levels[fresh] < fresh_after
        budget = max_tokens - overlap_tokens if overlapping else max_tokens
        stop = cut(plan, fresh, budget, max_tokens)
        first = overlap(plan, previous, fresh, stop) if overlapping else fresh
        while True:
            start, end = plan.span(first, stop, keep_indent=keep_indent)
            text = plan.text[start:end]
            count = len(counter.offsets(text))
            if count <= max_tokens:
                break
            if first < fresh:
                first = fresh
            elif stop - fresh > 1:
                shorter = max(1, stop - fresh - (count - max_tokens))
                stop = cut(plan, fresh, shorter, shorter)
            else:
                raise ValueError(
                    f"one token of the text ({text!r}) counts as {count} on its own: "
                    f"max_tokens={max_tokens} is too small for this tokenizer"
                )
        chunks.append(Chunk(len(chunks), text, count, start, end))
        previous, fresh = first, stop
    return chunks


def _overlap_room(
    previous: int, fresh: int, stop: int, max_tokens: int, overlap_tokens: int
) -> int:
    # Never more than the chunk has room for, and never the whole previous chunk (each
    # chunk starts later than the one before).
    return min(overlap_tokens, max_tokens - (stop - fresh), fresh - previous - 1)


# --- Prose: articles, notes, posts, messages --------------------------------------------


def _prose_breaks(text: str) -> dict[int, int]:
    breaks: dict[int, int] = {}
    fences: list[tuple[int, int]] = []  # code inside prose: lines, not sentences
    glued: list[int] = []  # the start of what follows a heading: never cut right after one
    fence: str | None = None
    fence_start = 0
    blank_before = after_heading = False
    for start, line in _lines(text):
        stripped = line.strip()
        if not stripped:
            blank_before = True
            continue
        first = _first_visible(start, line)
        if after_heading:
            glued.append(first)
            after_heading = False
        if fence is not None:
            _mark(breaks, first, _SENTENCE)
            if set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                fence = None
                fences.append((fence_start, start + len(line)))
                blank_before = True  # what follows a fence is a new block
            continue
        opener = _FENCE.match(line)
        if opener:
            fence, fence_start = opener.group(1), start
            _mark(breaks, first, _PARAGRAPH)
        elif _HEADING.match(line):
            _mark(breaks, first, _SECTION)
            after_heading = True
        elif blank_before:
            _mark(breaks, first, _PARAGRAPH)
        elif _LIST_ITEM.match(line):
            _mark(breaks, first, _SENTENCE)
        blank_before = False
    if fence is not None:
        fences.append((fence_start, len(text)))
    fence_starts = [start for start, _ in fences]
    for match in _SENTENCE_END.finditer(text):
        position = match.end()
        if position >= len(text) or text[position].islower():
            continue
        inside = bisect.bisect_right(fence_starts, match.start()) - 1
        if inside >= 0 and match.start() < fences[inside][1]:
            continue
        _mark(breaks, position, _SENTENCE)
    for position in glued:
        breaks[position] = _WORD
    return breaks


def _prose_cut(plan: _Plan, fresh: int, budget: int, limit: int) -> int:
    """Whole sentences up to the budget, ending at a heading or paragraph when one is late
    enough to keep the chunk at least half full; a sentence that fits no chunk is split
    between words (between tokens when it has no spaces)."""
    if plan.size - fresh <= budget:
        return plan.size
    high = fresh + budget
    half = fresh + max(1, budget // 2)
    for level in (_SECTION, _PARAGRAPH):
        stop = plan.latest(half, high, level)
        if stop is not None:
            return stop
    stop = plan.latest(fresh + 1, high, _SENTENCE)
    if stop is not None:
        return stop
    # A whole sentence longer than the budget that still fits within the limit stays
    # whole, at the cost of the overlap (the rest of a sentence already split does not:
    # it is split again, with overlap).
    if plan.levels[fresh] >= _SENTENCE:
        if plan.size - fresh <= limit:
            return plan.size
        stop = plan.latest(fresh + 1, fresh + limit, _SENTENCE)
        if stop is not None:
            return stop
    stop = plan.latest(half, high, _WORD)
    return high if stop is None else stop


def _prose_overlap(max_tokens: int, overlap_tokens: int) -> _Overlap:
    def overlap(plan: _Plan, previous: int, fresh: int, stop: int) -> int:
        room = _overlap_room(previous, fresh, stop, max_tokens, overlap_tokens)
        if room <= 0:
            return fresh
        # The most whole sentences that fit in the room; else the most whole words.
        for level in (_SENTENCE, _WORD):
            first = plan.earliest(fresh - room, fresh - 1, level)
            if first is not None:
                return first
        return fresh

    return overlap


def _chunk_prose(
    text: str, counter: TokenCounter, max_tokens: int, overlap_tokens: int, _: str | None
) -> list[Chunk]:
    plan = _plan(text, counter, _prose_breaks(text))
    return _pack(
        plan,
        counter,
        max_tokens,
        overlap_tokens,
        cut=_prose_cut,
        overlap=_prose_overlap(max_tokens, overlap_tokens),
        fresh_after=_EDGE,  # only the first chunk has nothing to overlap with
        keep_indent=False,
    )


# --- Code: repository files --------------------------------------------------------------


def _code_breaks(text: str, markdown: bool) -> dict[int, int]:
    breaks: dict[int, int] = {}
    fence: str | None = None  # Markdown: a "# comment" inside a fence is not a heading
    preamble: int | None = None  # where the decorators/comments just above begin
    blank_before = False
    for start, line in _lines(text):
        stripped = line.strip()
        if not stripped:
            blank_before, preamble = True, None
            continue
        first = _first_visible(start, line)
        _mark(breaks, first, _BLANK_LINE if blank_before else _LINE)
        blank_before = False
        if markdown:
            if fence is not None:
                if set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                    fence = None
            elif opener := _FENCE.match(line):
                fence = opener.group(1)
            elif _HEADING.match(line):
                _mark(breaks, first, _DEFINITION)
        elif _DEFINITION_LINE.match(line):
            _mark(breaks, first if preamble is None else preamble, _DEFINITION)
            preamble = None
        elif line.startswith(_DEFINITION_PREAMBLE) or stripped.startswith("*"):
            preamble = first if preamble is None else preamble
        else:
            preamble = None
    return breaks


def _code_cut(plan: _Plan, fresh: int, budget: int, limit: int) -> int:
    """Whole top-level blocks up to the budget; a block that fits no chunk is split at a
    blank line (when late enough), else at a line, and a line that fits no chunk between
    words, else between tokens."""
    if plan.size - fresh <= budget:
        return plan.size
    high = fresh + budget
    half = fresh + max(1, budget // 2)
    for low, level in ((fresh + 1, _DEFINITION), (half, _BLANK_LINE), (fresh + 1, _LINE)):
        stop = plan.latest(low, high, level)
        if stop is not None:
            return stop
    stop = plan.latest(half, high, _WORD)
    return high if stop is None else stop


def _code_overlap(max_tokens: int, overlap_tokens: int) -> _Overlap:
    def overlap(plan: _Plan, previous: int, fresh: int, stop: int) -> int:
        room = _overlap_room(previous, fresh, stop, max_tokens, overlap_tokens)
        lines = [k for k in range(fresh - room, fresh) if plan.levels[k] >= _LINE]
        return lines[-CODE_OVERLAP_LINES:][0] if room > 0 and lines else fresh

    return overlap


def _chunk_code(
    text: str, counter: TokenCounter, max_tokens: int, overlap_tokens: int, language: str | None
) -> list[Chunk]:
    plan = _plan(text, counter, _code_breaks(text, markdown=language == "markdown"))
    return _pack(
        plan,
        counter,
        max_tokens,
        overlap_tokens,
        cut=_code_cut,
        overlap=_code_overlap(max_tokens, overlap_tokens),
        fresh_after=_DEFINITION,  # a chunk that starts a block overlaps nothing
        keep_indent=True,
    )


# (text, counter, max_tokens, overlap_tokens, language) -> chunks
_Chunker = Callable[[str, TokenCounter, int, int, str | None], list[Chunk]]

CHUNKERS: dict[DocumentKind, _Chunker] = {
    DocumentKind.ARTICLE: _chunk_prose,
    DocumentKind.NOTE: _chunk_prose,
    DocumentKind.POST: _chunk_prose,
    DocumentKind.MESSAGE: _chunk_prose,
    DocumentKind.REPOSITORY_FILE: _chunk_code,
}
