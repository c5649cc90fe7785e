"""What the producers remember, in the warehouse: what was published, forgotten, fetched.

A document is *unchanged* (not published again)
when the warehouse already holds its content hash, or when it was already
published to the same broker incarnation; a forgotten document is published
again only when forced.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.database import Database

from infra.warehouse import DELETIONS, RAW_DOCUMENTS, Document
from schemas.documents import RawDocument

PUBLICATIONS = "publications"
FETCH_CACHE = "fetch_cache"


Versions = dict[uuid.UUID, str]  # document id -> content hash


@dataclass(frozen=True)
class Validators:
    """A URL's last answer, for a conditional re-fetch, and the document versions it gave."""

    etag: str | None
    last_modified: str | None
    versions: Versions


class Ledger:
    def __init__(self, db: Database[Document], incarnation_id: str) -> None:
        self.db = db
        self.incarnation_id = incarnation_id

    def unchanged(self, wanted: Versions) -> set[uuid.UUID]:
        """The ids among ``wanted`` whose exact version needs no publishing."""
        ids = list(wanted)
        known = set()
        for record in self.db[RAW_DOCUMENTS].find({"_id": {"$in": ids}}, {"content_hash": 1}):
            if wanted.get(record["_id"]) == record.get("content_hash"):
                known.add(record["_id"])
        query = {"_id": {"$in": ids}, "incarnation_id": self.incarnation_id}
        for record in self.db[PUBLICATIONS].find(query, {"content_hash": 1}):
            if wanted.get(record["_id"]) == record.get("content_hash"):
                known.add(record["_id"])
        return known

    def forgotten(self, ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        found = self.db[DELETIONS].find({"_id": {"$in": list(ids)}}, {"_id": 1})
        return {record["_id"] for record in found}

    def record_published(self, documents: Iterable[RawDocument], at: datetime) -> None:
        operations = [
            UpdateOne(
                {"_id": d.document_id},
                {
                    "$set": {
                        "author": d.author.slug,
                        "content_hash": d.content_hash,
                        "incarnation_id": self.incarnation_id,
                        "published_at": at,
                        "source": d.canonical_source,
                    }
                },
                upsert=True,
            )
            for d in documents
        ]
        if operations:
            self.db[PUBLICATIONS].bulk_write(operations, ordered=False)
        # Publishing again on purpose (--force) lifts the deletion record.
        self.db[DELETIONS].delete_many({"_id": {"$in": [d.document_id for d in documents]}})

    def documents_of(self, author: str) -> set[uuid.UUID]:
        """Every document id known for ``author``: in the warehouse or published."""
        ids = {r["_id"] for r in self.db[RAW_DOCUMENTS].find({"author.slug": author}, {"_id": 1})}
        ids |= {r["_id"] for r in self.db[PUBLICATIONS].find({"author": author}, {"_id": 1})}
        return ids - self.forgotten(ids)

    def current(self, author: str, ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """Those of ``ids`` that are ``author``'s documents now: in the warehouse or
        published for this author, and not forgotten."""
        wanted = list(ids)
        selection = {"_id": {"$in": wanted}}
        found = {
            r["_id"]
            for r in self.db[RAW_DOCUMENTS].find(selection | {"author.slug": author}, {"_id": 1})
        }
        found |= {
            r["_id"] for r in self.db[PUBLICATIONS].find(selection | {"author": author}, {"_id": 1})
        }
        return found - self.forgotten(found)

    def record_forgotten(self, author: str, ids: Iterable[uuid.UUID], at: datetime) -> None:
        """Content-free deletion records: future snapshots exclude these, re-crawls skip them."""
        operations = [
            UpdateOne({"_id": i}, {"$set": {"author": author, "deleted_at": at}}, upsert=True)
            for i in ids
        ]
        if operations:
            self.db[DELETIONS].bulk_write(operations, ordered=False)
            self.db[FETCH_CACHE].delete_many({"documents.id": {"$in": list(ids)}})

    def validators(self, author: str, url: str) -> Validators | None:
        record = self.db[FETCH_CACHE].find_one({"_id": _cache_key(author, url)})
        if record is None:
            return None
        versions = {entry["id"]: entry["content_hash"] for entry in record["documents"]}
        return Validators(record.get("etag"), record.get("last_modified"), versions)

    def record_validators(
        self, author: str, url: str, validators: Validators, at: datetime
    ) -> None:
        if not (validators.etag or validators.last_modified):
            return
        record: dict[str, Any] = {
            "etag": validators.etag,
            "last_modified": validators.last_modified,
            "documents": [{"id": i, "content_hash": h} for i, h in validators.versions.items()],
            "fetched_at": at,
        }
        self.db[FETCH_CACHE].replace_one({"_id": _cache_key(author, url)}, record, upsert=True)


def _cache_key(author: str, url: str) -> str:
    # Per author: one author's 304 must never stand for another author's documents.
    return f"{author} {url}"
