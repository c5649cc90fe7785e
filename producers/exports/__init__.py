"""Importers for a person's own data exports: files in, ``RawDocument``s and failures out.

Each reader is a pure function of the files (no network, no broker):
``read_<format>(path, author, *, crawled_at) -> Harvest``, where ``path`` is the export's
folder or its zip as downloaded. ``read_export`` picks the reader from what the export
contains.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from producers.exports import linkedin, medium, notes, substack, twitter
from producers.exports.archive import Archive, UnreadableFile
from producers.harvest import Failure, Harvest
from schemas.documents import Author


class Reader(Protocol):
    def __call__(self, path: Path, author: Author, *, crawled_at: datetime) -> Harvest: ...


# What an export contains -> who reads it. First match wins; notes come last, because any
# export may carry a stray README.md or .txt file.
SIGNATURES: list[tuple[str, Callable[[Archive], bool], Reader]] = [
    ("an X/Twitter archive (data/tweets.js)", twitter.recognises, twitter.read_twitter),
    ("a LinkedIn export (Shares.csv or Articles/)", linkedin.recognises, linkedin.read_linkedin),
    ("a Substack export (posts.csv)", substack.recognises, substack.read_substack),
    ("a Medium export (posts/*.html)", medium.recognises, medium.read_medium),
    ("notes (*.md, *.markdown, *.txt)", notes.recognises, notes.read_notes),
]


def detect(path: Path) -> Reader | None:
    """The reader for the export at ``path``; None when it is unreadable or unrecognised."""
    try:
        return _detect(path)
    except UnreadableFile:
        return None


def read_export(path: Path, author: Author, *, crawled_at: datetime) -> Harvest:
    try:
        reader = _detect(path)
    except UnreadableFile as error:
        return Harvest(failures=[Failure(str(path), str(error))])
    if reader is None:
        expected = "; ".join(description for description, _, _ in SIGNATURES)
        return Harvest(
            failures=[Failure(str(path), f"not a recognised export: expected {expected}")]
        )
    return reader(path, author, crawled_at=crawled_at)


def _detect(path: Path) -> Reader | None:
    if path.is_file() and notes.is_note(path.name):
        return notes.read_notes
    with Archive.open(path) as archive:
        return next((read for _, recognises, read in SIGNATURES if recognises(archive)), None)
