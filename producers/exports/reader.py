"""The one way an export is read; each platform declares only its mapping.

A platform's ``ExportReader`` names the kinds of file it reads (``Files``): which files of
the export they are, how one splits into records (the file whole, the rows of a CSV, the
tweets of an archive) and how a record becomes a document. Calling the reader opens the
export, says so when it holds none of those files, admits every file it will read before
reading any (so a zip refused on its declared sizes yields nothing), and yields each
document or failure as it is read.

A failure names where it happened: the export for one that cannot be opened, the file
(``export.zip:Top/Shares.csv``) for one that cannot be read, and the record within it
(``…/Shares.csv#row 6``) for one that is broken. A file that breaks off part way keeps the
documents read before. ``ExportRefused`` is never caught here: nothing more is read from a
refused zip, and ``stream_export`` reports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from producers.exports import csv_rows
from producers.exports.archive import DEFAULT_LIMITS, Archive, ImportLimits, UnreadableFile
from producers.harvest import Failure, Found
from schemas.documents import Author, RawDocument

R = TypeVar("R")


@dataclass(frozen=True)
class Reading:
    """The file a record comes from, and what every document read from it shares."""

    archive: Archive
    name: str
    author: Author
    crawled_at: datetime
    # The import's identity: the name the person gave it, else where it is (resolved). Two
    # folders that both hold index.txt are two origins, so two documents.
    origin: str = ""


def resolved_location(path: Path) -> str:
    """An import's identity when the person gives it no name: its resolved path."""
    return str(path.resolve())


@dataclass(frozen=True)
class BadRecord:
    """A record that cannot be read at all (a malformed CSV row); the reason says why."""

    reason: str


# A file's records, each with where it sits in the file ("#row 6"; "" for the file whole).
Records = Iterator[tuple[str, R | BadRecord]]


@dataclass(frozen=True)
class Files(Generic[R]):
    """One kind of file in an export, and how each becomes documents."""

    # The export's files of this kind, in the order they are read.
    names: Callable[[Archive], list[str]]
    # A file's records; raises UnreadableFile when the file (from there on) cannot be read.
    records: Callable[[Archive, str], Records[R]]
    # A record's document; None for one that is not the author's published writing (a
    # draft, a repost), ValueError for one that is broken.
    document: Callable[[R, Reading], RawDocument | None]


def _nothing_more(archive: Archive) -> list[str]:
    return []


@dataclass(frozen=True)
class ExportReader:
    """A platform's export: its files and their mapping. Called, it reads an export."""

    # The failure for an export that holds none of ``files``: "no …: not a … export".
    missing: str
    files: Sequence[Files[Any]]
    # Files the mapping opens itself (the post bodies a Substack table names), admitted
    # with the rest so that the zip is judged before any of it is read.
    also_reads: Callable[[Archive], list[str]] = _nothing_more
    opens: Callable[[Path, ImportLimits], Archive] = Archive.open
    # The identity of an import given no name (``import --as``).
    origin_of: Callable[[Path], str] = resolved_location

    def __call__(
        self,
        path: Path,
        author: Author,
        *,
        crawled_at: datetime,
        limits: ImportLimits = DEFAULT_LIMITS,
        origin: str | None = None,
    ) -> Iterator[Found]:
        origin = origin or self.origin_of(path)
        try:
            archive = self.opens(path, limits)
        except UnreadableFile as error:
            yield Failure(str(path), str(error))
            return
        with archive:
            found = [(kind, kind.names(archive)) for kind in self.files]
            if not any(names for _, names in found):
                yield Failure(str(path), self.missing)
                return
            archive.admit(
                [*(name for _, names in found for name in names), *self.also_reads(archive)]
            )
            for kind, names in found:
                for name in names:
                    reading = Reading(archive, name, author, crawled_at, origin)
                    yield from _read_file(kind, reading)


def _read_file(kind: Files[R], reading: Reading) -> Iterator[Found]:
    source = reading.archive.source(reading.name)
    try:
        for where, record in kind.records(reading.archive, reading.name):
            if isinstance(record, BadRecord):
                yield Failure(f"{source}{where}", record.reason)
                continue
            try:
                document = kind.document(record, reading)
            except ValueError as error:
                yield Failure(f"{source}{where}", str(error))
                continue
            if document is not None:
                yield document
    except UnreadableFile as error:
        yield Failure(source, str(error))


def whole_text(archive: Archive, name: str) -> Records[str]:
    """The file as one record: its text."""
    yield "", archive.read_text(name)


def table(columns: Sequence[str]) -> Callable[[Archive, str], Records[dict[str, str]]]:
    """A CSV file's rows as records, by column; the file must have ``columns``."""

    def rows(archive: Archive, name: str) -> Records[dict[str, str]]:
        for row in csv_rows.rows(archive.read_text(name), columns):
            where = f"#row {row.number}"
            yield where, BadRecord(row.reason) if isinstance(row, csv_rows.BadRow) else row.fields

    return rows
