"""Where the dataflow's results go. Every write is idempotent: a replay after a crash
rewrites the same points and records, it never adds a second copy.

Order per document: upsert the new version's points, then delete the previous
version's (so a search never finds the document missing), then the warehouse.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from pymongo.database import Database

from infra import warehouse
from infra.kafka import Publisher
from schemas.dead_letters import DeadLetter
from schemas.documents import RawDocument
from schemas.ids import chunk_point_id
from schemas.topics import DEAD_LETTERS
from streams.chunk import Chunk
from streams.items import Delete, Indexed, Skipped
from vectorstore.store import ChunkPoint, VectorStore

log = logging.getLogger(__name__)

StoreItem = Indexed | Delete | Skipped


class Progress:
    """Records the highest processed offset per partition, for ``llm-twin status``'s lag."""

    def __init__(self, db: Database[warehouse.Document], incarnation_id: str) -> None:
        self.db = db
        self.incarnation_id = incarnation_id

    def record(self, positions: Iterable[tuple[str, int, int]]) -> None:
        highest: dict[tuple[str, int], int] = {}
        for topic, partition, offset in positions:
            key = (topic, partition)
            highest[key] = max(offset, highest.get(key, -1))
        if highest:
            warehouse.record_progress(self.db, self.incarnation_id, highest)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def points_of(
    document: RawDocument,
    chunks: Sequence[Chunk],
    vectors: Sequence[Sequence[float]],
    embedding_model: str,
    indexed_at: datetime,
) -> list[ChunkPoint]:
    """One point per chunk, with the payload vectorstore/store.py documents."""
    return [
        ChunkPoint(
            id=chunk_point_id(document.document_id, document.version, c.index),
            vector=vector,
            payload={
                "author": document.author.slug,
                "document_id": str(document.document_id),
                "version": document.version,
                "chunk_index": c.index,
                "kind": document.kind.value,
                "title": document.title,
                "source_url": document.source_url,
                "text": c.text,
                "crawled_at": _iso(document.crawled_at),
                "published_at": _iso(document.published_at),
                "indexed_at": _iso(indexed_at),
                "embedding_model": embedding_model,
            },
        )
        for c, vector in zip(chunks, vectors, strict=True)
    ]


class StoreWriter:
    """Writes one batch of indexed documents and deletions to Qdrant and the warehouse."""

    def __init__(
        self,
        store: VectorStore,
        db: Database[warehouse.Document],
        model: str,
        progress: Progress,
    ) -> None:
        self.store = store
        self.db = db
        self.model = model
        self.progress = progress
        # Qdrant local mode is one client shared by every worker thread of the process.
        self._lock = threading.Lock()

    def write(self, items: list[StoreItem]) -> None:
        with self._lock:
            self._write(items)

    def _write(self, items: list[StoreItem]) -> None:
        now = datetime.now(UTC)
        indexed = [i for i in items if isinstance(i, Indexed)]
        by_author: dict[str, list[ChunkPoint]] = defaultdict(list)
        for item in indexed:
            author = item.prepared.document.author.slug
            by_author[author] += points_of(
                item.prepared.document, item.prepared.chunks, item.vectors, self.model, now
            )
        for author, points in by_author.items():
            self.store.ensure_collection(author)
            self.store.upsert(author, points)

        ids = [item.prepared.document.document_id for item in indexed]
        previous = warehouse.versions_of(self.db, ids)
        for item in indexed:
            document = item.prepared.document
            if previous.get(document.document_id, document.version) != document.version:
                self.store.delete_other_versions(
                    document.author.slug, document.document_id, document.version
                )
            warehouse.save_raw_document(self.db, document)
            warehouse.save_cleaned_document(
                self.db,
                document,
                text=item.prepared.cleaned,
                chunk_count=len(item.prepared.chunks),
                received_at=item.prepared.incoming.timestamp,
                indexed_at=now,
            )

        for deletion in (i for i in items if isinstance(i, Delete)):
            owner = deletion.author or warehouse.author_of(self.db, deletion.document_id)
            if owner is not None:
                self.store.delete_document(owner, deletion.document_id)
            warehouse.forget_document(self.db, deletion.document_id, owner, now)
        positions = [i.incoming for i in items]
        self.progress.record((p.topic, p.partition, p.offset) for p in positions)


class _StorePartition(StatelessSinkPartition[StoreItem]):
    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    def write_batch(self, items: list[StoreItem]) -> None:
        self.writer.write(items)


class StoreSink(DynamicSink[StoreItem]):
    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[StoreItem]:
        return _StorePartition(self.writer)


class _DeadLetterPartition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, publisher: Publisher, progress: Progress) -> None:
        self.publisher = publisher
        self.progress = progress

    def write_batch(self, items: list[DeadLetter]) -> None:
        for letter in items:
            log.warning(
                "dead letter from %s[%d]@%d at %s: %s",
                letter.source_topic,
                letter.source_partition,
                letter.source_offset,
                letter.stage,
                letter.reason,
            )
            self.publisher.publish(DEAD_LETTERS, letter.key, letter)
        # Delivered before the epoch (and its offsets) can be snapshotted.
        self.publisher.flush()
        self.progress.record((d.source_topic, d.source_partition, d.source_offset) for d in items)


class DeadLetterSink(DynamicSink[DeadLetter]):
    def __init__(self, make_publisher: Callable[[], Publisher], progress: Progress) -> None:
        self.make_publisher = make_publisher
        self.progress = progress

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[DeadLetter]:
        return _DeadLetterPartition(self.make_publisher(), self.progress)
