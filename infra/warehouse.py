"""The document warehouse: MongoDB (or SecantusDB, which speaks its wire protocol).

The code only ever talks ``pymongo`` to a ``mongodb://`` URI.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import bson
import bson.errors
from bson.binary import UuidRepresentation
from pymongo import MongoClient, ReplaceOne, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from schemas.documents import RawDocument

RAW_DOCUMENTS = "raw_documents"
# Cleaned text, chunk count and freshness per indexed document (the trainer reads it).
CLEANED_DOCUMENTS = "cleaned_documents"
# Content-free records of forgotten documents: {_id: document_id, author, deleted_at}.
DELETIONS = "deletions"
# The feature pipeline's processed offsets: {_id: "topic:partition", offset, incarnation_id}.
STREAM_PROGRESS = "stream_progress"
# One record per generation request a worker started: its attempt count, and whether
# an answer (done or error) went out, so a redelivered request is answered once.
GENERATION_ATTEMPTS = "generation_attempts"

Document = dict[str, Any]


def connect(uri: str, timeout_ms: int = 5000) -> MongoClient[Document]:
    # tz_aware: timestamps come back as the aware datetimes our messages hold.
    # uuidRepresentation: UUIDs are stored as BSON's standard binary subtype 4.
    return MongoClient(
        uri,
        tz_aware=True,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
    )


def _raw_record(document: RawDocument) -> Document:
    record = document.model_dump(mode="python")
    record["_id"] = record.pop("document_id")
    return record


def _from_raw_record(record: Document) -> RawDocument:
    record["document_id"] = record.pop("_id")
    return RawDocument.model_validate(record)


def save_raw_document(db: Database[Document], document: RawDocument) -> None:
    """Upsert by document id: a replay writes the same record again, never a second one."""
    db[RAW_DOCUMENTS].replace_one({"_id": document.document_id}, _raw_record(document), upsert=True)


def load_raw_document(db: Database[Document], document_id: uuid.UUID) -> RawDocument | None:
    record = db[RAW_DOCUMENTS].find_one({"_id": document_id})
    return None if record is None else _from_raw_record(record)


@dataclass(frozen=True)
class IndexedVersion:
    author: str
    version: str
    chunk_count: int


def indexed_versions(
    db: Database[Document], ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, IndexedVersion]:
    """The indexed version of each of these documents that has one, and its chunk count."""
    found = db[CLEANED_DOCUMENTS].find(
        {"_id": {"$in": list(ids)}}, {"author": 1, "version": 1, "chunk_count": 1}
    )
    return {
        r["_id"]: IndexedVersion(str(r["author"]), str(r["version"]), int(r["chunk_count"]))
        for r in found
    }


# BSON's document limit; the cleaned record holds about as much text as the raw one.
BSON_MAX_BYTES = 16 * 1024 * 1024
_CODEC: bson.CodecOptions[Document] = bson.CodecOptions(
    tz_aware=True, uuid_representation=UuidRepresentation.STANDARD
)


def unstorable(document: RawDocument) -> str | None:
    """Why the warehouse could not store this document (None: it can)."""
    try:
        size = len(bson.encode(_raw_record(document), codec_options=_CODEC))
    except (bson.errors.InvalidDocument, OverflowError) as error:
        return f"the warehouse cannot store it: {error}"
    if size > BSON_MAX_BYTES:
        return f"it is {size} bytes as a warehouse record, over BSON's {BSON_MAX_BYTES}-byte limit"
    return None


def author_of(db: Database[Document], document_id: uuid.UUID) -> str | None:
    record = db[RAW_DOCUMENTS].find_one({"_id": document_id}, {"author.slug": 1})
    return None if record is None else str(record["author"]["slug"])


@dataclass(frozen=True)
class Cleaned:
    """A document as the feature pipeline indexed it."""

    document: RawDocument
    text: str
    chunk_count: int
    # The Kafka record's timestamp: freshness runs from it to ``indexed_at``.
    received_at: datetime | None


def save_indexed(db: Database[Document], indexed: list[Cleaned], indexed_at: datetime) -> None:
    """Upsert raw and cleaned records of these documents, in two bulk writes."""
    if not indexed:
        return
    raw, cleaned = [], []
    for item in indexed:
        document = item.document
        raw.append(ReplaceOne({"_id": document.document_id}, _raw_record(document), upsert=True))
        received = item.received_at
        cleaned_record = {
            "author": document.author.slug,
            "version": document.version,
            "kind": document.kind.value,
            "platform": document.platform,
            "title": document.title,
            "source_url": document.source_url,
            "published_at": document.published_at,
            "text": item.text,
            "chunk_count": item.chunk_count,
            "received_at": received,
            "indexed_at": indexed_at,
            "freshness_s": (indexed_at - received).total_seconds() if received else None,
        }
        cleaned.append(ReplaceOne({"_id": document.document_id}, cleaned_record, upsert=True))
    db[RAW_DOCUMENTS].bulk_write(raw, ordered=False)
    db[CLEANED_DOCUMENTS].bulk_write(cleaned, ordered=False)


def forget_document(
    db: Database[Document], document_id: uuid.UUID, author: str | None, at: datetime
) -> None:
    """Delete the document's content and leave only a content-free deletion record."""
    db[RAW_DOCUMENTS].delete_one({"_id": document_id})
    db[CLEANED_DOCUMENTS].delete_one({"_id": document_id})
    fields: dict[str, Any] = {"deleted_at": at}
    if author is not None:  # never erase an author the producer already recorded
        fields["author"] = author
    db[DELETIONS].update_one({"_id": document_id}, {"$set": fields}, upsert=True)


def record_progress(
    db: Database[Document], incarnation_id: str, offsets: dict[tuple[str, int], int]
) -> None:
    """The highest offset processed per partition ($max: a replay never moves it back)."""
    for (topic, partition), offset in offsets.items():
        db[STREAM_PROGRESS].update_one(
            {"_id": f"{incarnation_id}:{topic}:{partition}"},
            {
                "$max": {"offset": offset},
                "$set": {"incarnation_id": incarnation_id, "topic": topic, "partition": partition},
            },
            upsert=True,
        )


def progress(db: Database[Document], incarnation_id: str) -> dict[tuple[str, int], int]:
    found = db[STREAM_PROGRESS].find({"incarnation_id": incarnation_id})
    return {(r["topic"], r["partition"]): r["offset"] for r in found}


def authors(db: Database[Document]) -> list[str]:
    """Every author with a document in the warehouse, sorted."""
    return sorted(str(slug) for slug in db[RAW_DOCUMENTS].distinct("author.slug"))


def raw_documents_of(
    db: Database[Document], author: str, ids: Iterable[uuid.UUID] | None = None
) -> Iterator[RawDocument]:
    """The author's current raw documents (all, or those of ``ids``), in id order."""
    selection: dict[str, Any] = {"author.slug": author}
    if ids is not None:
        selection["_id"] = {"$in": list(ids)}
    for record in db[RAW_DOCUMENTS].find(selection).sort("_id", 1):
        yield _from_raw_record(record)


def changed_since(
    db: Database[Document], author: str, at: datetime
) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """The author's documents indexed, and those forgotten, at or after ``at``."""
    indexed = db[CLEANED_DOCUMENTS].find({"author": author, "indexed_at": {"$gte": at}}, {"_id": 1})
    deleted = db[DELETIONS].find({"author": author, "deleted_at": {"$gte": at}}, {"_id": 1})
    return {r["_id"] for r in indexed}, {r["_id"] for r in deleted}


def refresh_cleaned_text(
    db: Database[Document], document: RawDocument, *, text: str, chunk_count: int
) -> None:
    """A reindex's new cleaning of a version; a newer version written meanwhile is left alone."""
    db[CLEANED_DOCUMENTS].update_one(
        {"_id": document.document_id, "version": document.version},
        {"$set": {"text": text, "chunk_count": chunk_count}},
    )


def begin_attempt(
    db: Database[Document], request_id: uuid.UUID, started_at: datetime
) -> int | None:
    """The attempt number for answering ``request_id`` now (1, 2, ...); None if already answered.

    A request redelivered after its worker died gets the next number: its new
    tokens start at seq 0 under that attempt, and clients drop the old ones.
    One round trip: this is on every request's path to its first token.
    """
    update = {
        "$inc": {"attempt": 1},
        "$set": {"started_at": started_at},
        "$setOnInsert": {"answered": False},
    }
    try:
        record = db[GENERATION_ATTEMPTS].find_one_and_update(
            {"_id": request_id}, update, upsert=True, return_document=ReturnDocument.AFTER
        )
    except DuplicateKeyError:  # two workers inserted at once: the other record stands
        record = db[GENERATION_ATTEMPTS].find_one_and_update(
            {"_id": request_id}, update, return_document=ReturnDocument.AFTER
        )
    if record is None or record.get("answered"):
        return None
    return int(record["attempt"])


def finish_attempt(db: Database[Document], request_id: uuid.UUID, answered_at: datetime) -> None:
    db[GENERATION_ATTEMPTS].update_one(
        {"_id": request_id}, {"$set": {"answered": True, "answered_at": answered_at}}
    )


def display_name(db: Database[Document], author: str) -> str | None:
    """The name ``author`` writes under, from their newest raw document; None if unknown."""
    record = db[RAW_DOCUMENTS].find_one(
        {"author.slug": author}, {"author.display_name": 1}, sort=[("crawled_at", -1)]
    )
    return None if record is None else str(record["author"]["display_name"])
