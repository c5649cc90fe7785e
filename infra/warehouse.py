"""The document warehouse: MongoDB (or SecantusDB, which speaks its wire protocol).

The code only ever talks ``pymongo`` to a ``mongodb://`` URI.
"""

from __future__ import annotations

import uuid
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from schemas.documents import RawDocument

RAW_DOCUMENTS = "raw_documents"

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


def save_raw_document(db: Database[Document], document: RawDocument) -> None:
    """Upsert by document id: a replay writes the same record again, never a second one."""
    record = document.model_dump(mode="python")
    record["_id"] = record.pop("document_id")
    db[RAW_DOCUMENTS].replace_one({"_id": document.document_id}, record, upsert=True)


def load_raw_document(db: Database[Document], document_id: uuid.UUID) -> RawDocument | None:
    record = db[RAW_DOCUMENTS].find_one({"_id": document_id})
    if record is None:
        return None
    record["document_id"] = record.pop("_id")
    return RawDocument.model_validate(record)
