"""Importers for a person's own data exports: files in, ``RawDocument``s and failures out.

Each reader is a pure function of the files (no network, no broker):
``read_<format>(path, author, *, crawled_at, limits) -> Iterator[RawDocument | Failure]``,
where ``path`` is the export's folder or its zip as downloaded. Every one is an
``ExportReader`` (``reader``): its platform's module declares only which files it reads and
how each becomes documents. Readers yield as they read, so an export of any size is
published in bounded memory; a reader raises ``ExportRefused`` for a zip over ``limits``.
``stream_export`` picks the reader from what the export contains and reports every refusal
as a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol

from producers.exports import linkedin, medium, notes, substack, twitter
from producers.exports.archive import (
    DEFAULT_LIMITS,
    Archive,
    ExportRefused,
    ImportLimits,
    UnreadableFile,
)
from producers.harvest import Failure, Found, Harvest
from schemas.documents import Author


class Reader(Protocol):
    def __call__(
        self,
        path: Path,
        author: Author,
        *,
        crawled_at: datetime,
        limits: ImportLimits = ...,
        origin: str | None = ...,
    ) -> Iterator[Found]: ...


# What an export contains -> who reads it. First match wins; notes come last, because any
# export may carry a stray README.md or .txt file.
SIGNATURES: list[tuple[str, Callable[[Archive], bool], Reader]] = [
    ("an X/Twitter archive (data/tweets.js)", twitter.recognises, twitter.read_twitter),
    ("a LinkedIn export (Shares.csv or Articles/)", linkedin.recognises, linkedin.read_linkedin),
    ("a Substack export (posts.csv)", substack.recognises, substack.read_substack),
    ("a Medium export (posts/*.html)", medium.recognises, medium.read_medium),
    ("notes (*.md, *.markdown, *.txt)", notes.recognises, notes.read_notes),
]


def detect(path: Path, limits: ImportLimits = DEFAULT_LIMITS) -> Reader | None:
    """The reader for the export at ``path``; None when it is unreadable or unrecognised."""
    try:
        return _detect(path, limits)[0]
    except UnreadableFile:
        return None


def stream_export(
    path: Path,
    author: Author,
    *,
    crawled_at: datetime,
    limits: ImportLimits = DEFAULT_LIMITS,
    origin: str | None = None,
) -> Iterator[Found]:
    """The export's documents and failures as its reader finds them.

    Each entry the export refuses (a symlink out of the folder, a symlink member of a zip)
    is a failure first. A zip refused as a bomb or as too large (``ExportRefused``) is one
    failure saying so. Readers admit what they will read before reading it, so a zip
    refused on its declared sizes yields no document; one refused part way, as its bytes are
    counted, keeps the documents read before and the failure says nothing more was read.
    ``origin``: the import's identity (``import --as``); by default its resolved location
    (a note file's folder).
    """
    try:
        reader, refused = _detect(path, limits)
        for source, reason in refused:
            yield Failure(source, reason)
        if reader is None:
            expected = "; ".join(description for description, _, _ in SIGNATURES)
            yield Failure(str(path), f"not a recognised export: expected {expected}")
            return
        yield from reader(path, author, crawled_at=crawled_at, limits=limits, origin=origin)
    except UnreadableFile as error:
        yield Failure(str(path), str(error))
    except ExportRefused as error:
        yield Failure(str(path), str(error))


def read_export(
    path: Path, author: Author, *, crawled_at: datetime, limits: ImportLimits = DEFAULT_LIMITS
) -> Harvest:
    """``stream_export`` gathered into one harvest."""
    return Harvest.of(stream_export(path, author, crawled_at=crawled_at, limits=limits))


def _detect(path: Path, limits: ImportLimits) -> tuple[Reader | None, list[tuple[str, str]]]:
    """The export's reader, and the entries it refuses (where, why)."""
    if path.is_file() and notes.is_note(path.name):
        return notes.read_notes, []
    with Archive.open(path, limits) as archive:
        reader = next((read for _, recognises, read in SIGNATURES if recognises(archive)), None)
        return reader, archive.refused
