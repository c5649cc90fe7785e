"""Publishing what sources found: skip what is unchanged or forgotten, publish the rest.

Key = document id, value = the ``RawDocument``; a tombstone (null value) carries
its author in the ``author`` header so the stream can check it deletes only
that author's document.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from infra.kafka import DeliveryFailed, Publisher
from producers.harvest import Failure, Harvest
from producers.ledger import Ledger
from schemas.documents import RawDocument
from schemas.topics import RAW_DOCUMENTS

AUTHOR_HEADER = "author"


@dataclass
class Report:
    """``crawl --json`` / ``import --json`` (DESIGN.md's contract, plus ``forgotten``)."""

    published: list[uuid.UUID] = field(default_factory=list)
    unchanged: list[uuid.UUID] = field(default_factory=list)
    forgotten: list[uuid.UUID] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "published": [str(i) for i in self.published],
            "unchanged": [str(i) for i in self.unchanged],
            "forgotten": [str(i) for i in self.forgotten],
            "failed": [{"source": f.source, "reason": f.reason} for f in self.failed],
        }


def publish_harvest(
    harvest: Harvest,
    *,
    publisher: Publisher,
    ledger: Ledger,
    force: bool,
    now: datetime,
) -> Report:
    report = Report(failed=list(harvest.failures), unchanged=list(harvest.not_modified))
    documents: dict[uuid.UUID, RawDocument] = {}
    for document in harvest.documents:
        documents.setdefault(document.document_id, document)  # two routes to one source
    if not force:
        for forgotten in sorted(ledger.forgotten(documents), key=str):
            report.forgotten.append(documents.pop(forgotten).document_id)
        versions = {i: d.content_hash for i, d in documents.items()}
        for unchanged in sorted(ledger.unchanged(versions), key=str):
            report.unchanged.append(documents.pop(unchanged).document_id)

    for document in documents.values():
        publisher.publish(RAW_DOCUMENTS, str(document.document_id), document)
    try:
        publisher.flush()
    except DeliveryFailed:
        undelivered = {u.key: u.reason for u in publisher.failed}
        for key, reason in undelivered.items():
            document_id = uuid.UUID(key.decode()) if key else None
            failed = documents.pop(document_id) if document_id in documents else None
            source = failed.canonical_source if failed else "(the broker)"
            report.failed.append(Failure(source, f"not delivered to Kafka: {reason}"))
        publisher.failed.clear()
    ledger.record_published(documents.values(), now)
    report.published = list(documents)
    return report


def publish_tombstones(
    author: str, ids: list[uuid.UUID], *, publisher: Publisher, ledger: Ledger, now: datetime
) -> None:
    """Delete these documents everywhere: the stream removes their content and chunks."""
    ledger.record_forgotten(author, ids, now)
    for document_id in ids:
        publisher.publish(RAW_DOCUMENTS, str(document_id), None, headers={AUTHOR_HEADER: author})
    publisher.flush()
