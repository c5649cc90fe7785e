"""Cleaning per kind: what is removed from writing, and code left as it was written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.documents import Author, DocumentKind, RawDocument
from streams.clean import CLEANERS, clean

PROSE = [DocumentKind.ARTICLE, DocumentKind.NOTE, DocumentKind.POST, DocumentKind.MESSAGE]


def document(kind: DocumentKind, content: str) -> RawDocument:
    return RawDocument.build(
        author=Author(slug="ada", display_name="Ada Lovelace"),
        kind=kind,
        platform="test",
        canonical_source=f"test:{kind}:{hash(content)}",
        title="A document",
        content=content,
        crawled_at=datetime(2026, 11, 29, tzinfo=UTC),
    )


def test_every_kind_has_a_cleaner() -> None:
    assert set(CLEANERS) == set(DocumentKind)


# --- Prose: articles, notes, posts, messages --------------------------------------------

PROSE_RULES = [
    pytest.param("Cafe\u0301 and re\u0301sume\u0301", "Café and résumé", id="nfc"),
    pytest.param(
        "zero\u200bwidth soft\u00adhyphen \ufeffbom \u200ertl",
        "zerowidth softhyphen bom rtl",
        id="zero-width",
    ),
    pytest.param("nul\x00 bell\x07 esc\x1b[0m c1\x85x", "nul bell esc[0m c1\nx", id="controls"),
    pytest.param("a\tb\n\tindented", "a\tb\n\tindented", id="tabs-kept"),
    pytest.param("one\r\ntwo\rthree\u2028four", "one\ntwo\nthree\nfour", id="line-endings"),
    pytest.param("a    b \u00a0\u00a0 c\u3000d", "a b c d", id="space-runs"),
    pytest.param("- item\n    - nested  item", "- item\n    - nested item", id="indent-kept"),
    pytest.param("a\n\n\n\n\nb\n \n\t\n\nc", "a\n\nb\n\nc", id="blank-runs"),
    pytest.param("a  \nb\t\n", "a\nb", id="trailing-whitespace"),
    pytest.param("\n\n  \nstart\n\n", "start", id="outer-blank-lines"),
    pytest.param(
        "See ![Kafka topic layout](https://x.org/t.png) here.",
        "See Kafka topic layout here.",
        id="image-alt-kept",
    ),
    pytest.param(
        "![image](a.png)\n![IMG_2034.JPG](b.jpg)\n![](c.png)\n"
        '![Screenshot 2024-05-01 at 10.31.07 AM](d.png "shot")\nText.',
        "Text.",
        id="image-generic-alt-dropped",
    ),
    pytest.param(
        'Read [the KIP](https://cwiki.apache.org/KIP-848 "KIP") and '
        "[Kafka](https://en.wikipedia.org/wiki/Kafka_(software)).",
        "Read the KIP and Kafka.",
        id="links",
    ),
    pytest.param("[![flow diagram](a.png)](https://x.org)", "flow diagram", id="linked-image"),
    pytest.param(
        "[](https://x.org/a) and <https://y.org/b>",
        "https://x.org/a and https://y.org/b",
        id="bare-links",
    ),
    pytest.param(
        "Use `[x](y)` and `![a](b)` in Markdown.",
        "Use `[x](y)` and `![a](b)` in Markdown.",
        id="inline-code-kept",
    ),
    pytest.param(
        "Intro.\n\n```python\ndef f(a,   b):  \n\n\n\n    return [x](y)\n```\nAfter  it.",
        "Intro.\n\n```python\ndef f(a,   b):\n\n\n\n    return [x](y)\n```\nAfter it.",
        id="fenced-code-kept",
    ),
    pytest.param(
        "Read https://example.org/post?utm_source=x&id=3&fbclid=abc#Part-2. Then "
        "https://Example.org/A?q=Kafka+Streams&utm_medium=y, and https://x.org/?gclid=1.",
        "Read https://example.org/post?id=3#Part-2. Then "
        "https://Example.org/A?q=Kafka+Streams, and https://x.org/.",
        id="url-tracking-removed",
    ),
    pytest.param(
        "https://github.com/o/r/blob/main/README.md?plain=1#L10 (see it)",
        "https://github.com/o/r/blob/main/README.md?plain=1#L10 (see it)",
        id="url-kept",
    ),
    pytest.param(
        "Shipped the new ingestion today.\n\n#kafka #streams #dataengineering",
        "Shipped the new ingestion today.\n\n#kafka #streams #dataengineering",
        id="hashtags-kept",
    ),
    pytest.param(
        "Family 👨\u200d👩\u200d👧 and می\u200cخواهم",  # noqa: RUF001
        "Family 👨\u200d👩\u200d👧 and می\u200cخواهم",  # noqa: RUF001
        id="joiners-kept",
    ),
]


@pytest.mark.parametrize("kind", PROSE)
@pytest.mark.parametrize(("raw", "expected"), PROSE_RULES)
def test_prose_rules(kind: DocumentKind, raw: str, expected: str) -> None:
    assert clean(document(kind, raw)) == expected


@pytest.mark.parametrize("kind", PROSE)
@pytest.mark.parametrize(("raw", "expected"), PROSE_RULES)
def test_cleaning_prose_twice_changes_nothing(kind: DocumentKind, raw: str, expected: str) -> None:
    once = clean(document(kind, raw))
    assert clean(document(kind, once)) == once


@pytest.mark.parametrize("kind", list(DocumentKind))
@pytest.mark.parametrize("raw", ["", "  \n\n\t \r\n", "\ufeff\n", "\u00a0\u3000"])
def test_nothing_left_is_empty(kind: DocumentKind, raw: str) -> None:
    assert clean(document(kind, raw)) == ""


@pytest.mark.parametrize("kind", PROSE)
def test_prose_of_invisible_characters_is_empty(kind: DocumentKind) -> None:
    assert clean(document(kind, "\u200b\ufeff\x00\u2060\n\u00ad")) == ""


@pytest.mark.parametrize("kind", PROSE)
def test_an_image_only_document_is_empty(kind: DocumentKind) -> None:
    assert clean(document(kind, "![image](https://x.org/a.png)\n\n![](b.png)")) == ""


# --- Messages: someone else's words and boilerplate go ----------------------------------

REPLY = """Sounds good, ship it on Friday.

Thanks,
Ada

On Mon, 3 Jun 2024 at 10:12, Bob <bob@example.org> wrote:
> Can we ship the Kafka move this week?
>> And the dashboards?

-- \r
Ada Lovelace
Analytical Engines Ltd"""


def test_a_message_loses_quotes_attribution_and_signature() -> None:
    assert clean(document(DocumentKind.MESSAGE, REPLY)) == (
        "Sounds good, ship it on Friday.\n\nThanks,\nAda"
    )


def test_other_prose_keeps_block_quotes_and_dashes() -> None:
    cleaned = clean(document(DocumentKind.ARTICLE, REPLY))
    assert "> Can we ship the Kafka move this week?" in cleaned
    assert "Analytical Engines Ltd" in cleaned


def test_a_bare_double_dash_far_from_the_end_is_not_a_signature() -> None:
    text = "Options:\n--\n" + "\n".join(f"line {i}" for i in range(10))
    assert clean(document(DocumentKind.MESSAGE, text)) == text


def test_a_message_that_only_quotes_is_empty() -> None:
    assert clean(document(DocumentKind.MESSAGE, "> +1\n> agreed")) == ""


# --- Notes: wiki links ------------------------------------------------------------------


def test_note_wiki_links_become_their_text() -> None:
    raw = "See [[Kafka consumers|consumers]] and [[Bytewax]].\n![[diagram.png]]\n![[Other note]]"
    assert clean(document(DocumentKind.NOTE, raw)) == "See consumers and Bytewax.\n\nOther note"


def test_wiki_links_are_a_notes_rule() -> None:
    raw = "See [[Bytewax]]."
    assert clean(document(DocumentKind.ARTICLE, raw)) == raw


# --- Code: byte for byte, apart from line endings, BOM and the end of the file ----------

SOURCE = (
    "#!/usr/bin/env python3\n"
    "\n"
    "\n"
    "\n"
    "def f(a,   b):  \n"  # runs of spaces and trailing spaces: kept
    "\treturn [link](https://x.org?utm_source=a)  # ![image](a.png)\n"
    '    s = "Cafe\u0301 \u200b zero-width \x0c form feed"\n'  # not NFC, invisible chars: kept
    "    # #kafka\n"
    "\n"
    "> not a quote\n"
    "-- \n"
    "not a signature\n"
)


def test_code_is_kept_byte_for_byte() -> None:
    assert clean(document(DocumentKind.REPOSITORY_FILE, SOURCE)) == SOURCE.rstrip()


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(SOURCE.replace("\n", "\r\n"), id="crlf"),
        pytest.param(SOURCE.replace("\n", "\r"), id="cr"),
        pytest.param("\ufeff" + SOURCE, id="bom"),
        pytest.param(SOURCE + "\n\n  \n", id="trailing-blank-lines"),
        pytest.param(SOURCE.rstrip("\n"), id="no-final-newline"),
    ],
)
def test_code_differs_only_in_line_endings_bom_and_the_end(variant: str) -> None:
    assert clean(document(DocumentKind.REPOSITORY_FILE, variant)) == SOURCE.rstrip()


def test_code_keeps_leading_blank_lines_and_indentation() -> None:
    source = "\n\n    indented = True\n"
    assert clean(document(DocumentKind.REPOSITORY_FILE, source)) == "\n\n    indented = True"
