"""Values as exports give them, made uniform: tidy text, aware timestamps, post headlines."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, time

# C0 controls other than tab and newline, and DEL: never part of writing, and some
# (NUL) break the stores downstream.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BLANK_RUNS = re.compile(r"\n{3,}")
HEADLINE_CHARS = 100


def tidy(text: str) -> str:
    """NFC text with Unix line ends, no trailing spaces, one blank line between paragraphs."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip()


def in_utc(moment: datetime | date) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already, a date is its midnight."""
    if not isinstance(moment, datetime):
        moment = datetime.combine(moment, time())
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_timestamp(value: str) -> datetime:
    """An ISO 8601 date or date-time ("2023-05-04 10:12:55", "2024-03-01T08:00:00.000Z").

    Raises ValueError naming the value when it is not one.
    """
    try:
        return in_utc(datetime.fromisoformat(value.strip()))
    except ValueError:
        raise ValueError(f"unreadable timestamp {value.strip()!r}") from None


def headline(text: str) -> str:
    """A title for writing that has none (a post, a tweet): its first line, shortened."""
    first = next((line.strip() for line in text.split("\n") if line.strip()), "")
    if len(first) <= HEADLINE_CHARS:
        return first
    cut = first[: HEADLINE_CHARS - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,.;:") + "…"
