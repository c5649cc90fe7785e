"""Publishing what sources found: skip what is unchanged or forgotten, publish the rest.

Key = document id, value = the ``RawDocument``; a tombstone (null value) carries
its author in the ``author`` header so the stream can check it deletes only
that author's document.

A document whose identity changed names its old one in ``metadata["supersedes"]`` (a
note imported before imports had an identity: producers/exports/notes.py). Once the
new document is on the topic (or already known), the old one, if it is still the same
author's, is forgotten with a tombstone: replaced, not duplicated. The old id is derived
from the author's own slug, so a document can only ever supersede its own author's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from infra.kafka import DeliveryFailed, Publisher
from producers.harvest import Failure, Found, Harvest
from producers.ledger import Ledger
from schemas import ids as identities
from schemas.documents import RawDocument
from schemas.topics import RAW_DOCUMENTS

AUTHOR_HEADER = "author"
# Documents held before they are published and recorded: bounds memory on a large import
# (content of up to 64 Mi characters) and keeps the ledger's queries to a few hundred ids.
BATCH_DOCUMENTS = 500
BATCH_CHARS = 64 * 1024 * 1024


@dataclass
class Report:
    """``crawl --json`` / ``import --json`` (README's contract, with ``forgotten``)."""

    published: list[uuid.UUID] = field(default_factory=list)
    unchanged: list[uuid.UUID] = field(default_factory=list)
    forgotten: list[uuid.UUID] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    # Old documents forgotten because a new one superseded them (a note's old identity).
    replaced: list[uuid.UUID] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "published": [str(i) for i in self.published],
            "unchanged": [str(i) for i in self.unchanged],
            "forgotten": [str(i) for i in self.forgotten],
            "replaced": [str(i) for i in self.replaced],
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
    return publish_found(
        harvest.found(),
        publisher=publisher,
        ledger=ledger,
        force=force,
        now=now,
        unchanged=harvest.not_modified,
    )


def publish_found(
    found: Iterable[Found],
    *,
    publisher: Publisher,
    ledger: Ledger,
    force: bool,
    now: datetime,
    unchanged: Iterable[uuid.UUID] = (),
    batch_documents: int = BATCH_DOCUMENTS,
) -> Report:
    """Publishes documents as ``found`` yields them, a batch at a time; reports the rest.

    Only one batch of documents is held at once, and only the ids of those before it, so an
    export of any size is published in bounded memory. A batch is on the topic and in the
    ledger before ``found`` is asked for the next document.
    """
    report = Report(unchanged=list(unchanged))
    seen: set[uuid.UUID] = set()
    batch: dict[uuid.UUID, RawDocument] = {}
    batch_chars = 0
    for item in found:
        if isinstance(item, Failure):
            report.failed.append(item)
            continue
        if item.document_id in seen:
            continue  # two routes to one source: the first wins
        seen.add(item.document_id)
        batch[item.document_id] = item
        batch_chars += len(item.content)
        if len(batch) >= batch_documents or batch_chars >= BATCH_CHARS:
            _publish_batch(batch, report, publisher=publisher, ledger=ledger, force=force, now=now)
            batch, batch_chars = {}, 0
    _publish_batch(batch, report, publisher=publisher, ledger=ledger, force=force, now=now)
    return report


def _publish_batch(
    documents: dict[uuid.UUID, RawDocument],
    report: Report,
    *,
    publisher: Publisher,
    ledger: Ledger,
    force: bool,
    now: datetime,
) -> None:
    if not documents:
        return
    superseded = _superseded(documents.values())
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
    report.published += documents
    _replace(
        superseded, set(report.published) | set(report.unchanged), report, publisher, ledger, now
    )


def _superseded(documents: Iterable[RawDocument]) -> dict[uuid.UUID, tuple[str, uuid.UUID]]:
    """old id -> (author, the new document's id), for documents that name an old identity."""
    found = {}
    for document in documents:
        old_source = document.metadata.get("supersedes")
        if not isinstance(old_source, str) or not old_source:
            continue
        old = identities.document_id(document.author.slug, old_source)
        if old != document.document_id:
            found[old] = (document.author.slug, document.document_id)
    return found


def _replace(
    superseded: dict[uuid.UUID, tuple[str, uuid.UUID]],
    present: set[uuid.UUID],
    report: Report,
    publisher: Publisher,
    ledger: Ledger,
    now: datetime,
) -> None:
    """Forget each old document whose successor is on the topic or already known."""
    by_author: dict[str, list[uuid.UUID]] = {}
    for old, (author, new) in superseded.items():
        if new in present and old not in present:
            by_author.setdefault(author, []).append(old)
    for author, olds in by_author.items():
        gone = sorted(ledger.current(author, olds), key=str)
        if gone:
            publish_tombstones(author, gone, publisher=publisher, ledger=ledger, now=now)
            report.replaced += gone


def publish_tombstones(
    author: str, ids: list[uuid.UUID], *, publisher: Publisher, ledger: Ledger, now: datetime
) -> None:
    """Delete these documents everywhere: the stream removes their content and chunks."""
    ledger.record_forgotten(author, ids, now)
    for document_id in ids:
        publisher.publish(RAW_DOCUMENTS, str(document_id), None, headers={AUTHOR_HEADER: author})
    publisher.flush()
