"""Where the dataflow's results go. Every write is idempotent: a replay after a crash
rewrites the same points and records, it never adds a second copy.

Order per document: upsert the new version's points, then delete the previous
version's (so a search never finds the document missing), then the warehouse.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)
from pymongo.database import Database

from infra import warehouse
from infra.kafka import Publisher
from schemas.dead_letters import DeadLetter
from schemas.documents import RawDocument
from schemas.ids import chunk_point_id
from schemas.topics import DEAD_LETTERS
from streams.chunk import Chunk
from streams.items import STORE_PARTITION, Delete, Indexed, Skipped
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
        dead_letter: Callable[[DeadLetter], None],
        on_indexed: Callable[[Counter[str]], None] | None = None,
    ) -> None:
        self.store = store
        self.on_indexed = on_indexed
        self.db = db
        self.model = model
        self.progress = progress
        self.dead_letter = dead_letter
        # Qdrant local mode is one client shared by every worker thread of the process.
        self._lock = threading.Lock()

    def write(self, items: list[StoreItem]) -> None:
        with self._lock:
            self._write(items)

    def _write(self, items: list[StoreItem]) -> None:
        now = datetime.now(UTC)
        # A backlog brings several changes of one document in one batch, in order:
        # only the last one decides what is stored; the versions before it are
        # deleted in case an earlier, crashed run stored them.
        latest: dict[uuid.UUID, Indexed | Delete] = {}
        superseded: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
        for item in items:
            if isinstance(item, Skipped):
                continue
            key = _document_id(item)
            if isinstance(before := latest.get(key), Indexed):
                superseded[key] |= _point_ids(before)
            latest[key] = item
        known = warehouse.indexed_versions(self.db, latest)
        for key, item in list(latest.items()):
            if not isinstance(item, Indexed) or key not in known:
                continue
            owner, author = known[key].author, item.prepared.document.author.slug
            if owner != author:
                # Ids are UUIDv5 of author + source: another author's id is forged or corrupt.
                reason = f"document {key} belongs to {owner}, not {author}"
                self.dead_letter(item.incoming.reject("validate", reason).letter)
                del latest[key]

        indexed = [i for i in latest.values() if isinstance(i, Indexed)]
        by_author: dict[str, list[ChunkPoint]] = defaultdict(list)
        for item in indexed:
            document = item.prepared.document
            by_author[document.author.slug] += points_of(
                document, item.prepared.chunks, item.vectors, self.model, now
            )
        for author, points in by_author.items():
            self.store.ensure_collection(author)
            self.store.upsert(author, points)
        for item in indexed:
            document = item.prepared.document
            stale = superseded[document.document_id] | _indexed_ids(
                document.document_id, known.get(document.document_id)
            )
            self.store.delete_points(document.author.slug, stale - _point_ids(item))
        warehouse.save_indexed(
            self.db,
            [
                warehouse.Cleaned(
                    item.prepared.document,
                    item.prepared.cleaned,
                    len(item.prepared.chunks),
                    item.incoming.timestamp,
                )
                for item in indexed
            ],
            now,
        )

        for deletion in (i for i in latest.values() if isinstance(i, Delete)):
            self._delete(deletion, known.get(deletion.document_id), superseded, now)
        self.progress.record(
            (i.incoming.topic, i.incoming.partition, i.incoming.offset) for i in items
        )
        if self.on_indexed is not None and indexed:
            self.on_indexed(Counter(i.prepared.document.author.slug for i in indexed))

    def _delete(
        self,
        deletion: Delete,
        indexed: warehouse.IndexedVersion | None,
        superseded: dict[uuid.UUID, set[uuid.UUID]],
        now: datetime,
    ) -> None:
        document_id = deletion.document_id
        owner = indexed.author if indexed else warehouse.author_of(self.db, document_id)
        if owner is not None and deletion.author != owner:
            # The stream forgets owners with each broker incarnation; the warehouse does not.
            reason = f"tombstone from {deletion.author} for a document of {owner}"
            self.dead_letter(deletion.incoming.reject("validate", reason).letter)
            return
        owner = owner or deletion.author
        if owner is None:
            log.info("tombstone for %s, which was never indexed", document_id)
        elif indexed is not None:
            stale = superseded[document_id] | _indexed_ids(document_id, indexed)
            self.store.delete_points(owner, stale)
        else:  # no record of its chunks: find them (a filtered delete scans the collection)
            self.store.delete_document(owner, document_id)
        warehouse.forget_document(self.db, document_id, owner, now)


def _document_id(item: Indexed | Delete) -> uuid.UUID:
    return item.prepared.document.document_id if isinstance(item, Indexed) else item.document_id


def _point_ids(item: Indexed) -> set[uuid.UUID]:
    document = item.prepared.document
    return {
        chunk_point_id(document.document_id, document.version, c.index)
        for c in item.prepared.chunks
    }


def _indexed_ids(
    document_id: uuid.UUID, indexed: warehouse.IndexedVersion | None
) -> set[uuid.UUID]:
    if indexed is None:
        return set()
    return {chunk_point_id(document_id, indexed.version, n) for n in range(indexed.chunk_count)}


class _BackgroundWrites:
    """Runs a writer's batches in order on a thread of its own, so the worker can
    embed the next batch meanwhile; ``drain`` waits for every write and re-raises
    the first failure."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer
        self._queue: queue.Queue[list[StoreItem] | None] = queue.Queue()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="store-writes", daemon=True)
        self._thread.start()

    def submit(self, items: list[StoreItem]) -> None:
        self._raise_failure()
        self._queue.put(items)

    def drain(self) -> None:
        self._queue.join()
        self._raise_failure()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise RuntimeError("writing to the stores failed") from self._failure

    def _run(self) -> None:
        while (items := self._queue.get()) is not None:
            try:
                if self._failure is None:  # after a failure, nothing more is written
                    self.writer.write(items)
            except BaseException as error:
                log.exception("writing a batch to the stores failed")
                self._failure = error
            finally:
                self._queue.task_done()
        self._queue.task_done()


class _StorePartition(StatefulSinkPartition[StoreItem, None]):
    def __init__(self, writer: StoreWriter) -> None:
        self.writes = _BackgroundWrites(writer)

    def write_batch(self, values: list[StoreItem]) -> None:
        self.writes.submit(values)

    def snapshot(self) -> None:
        # Bytewax commits an epoch's input offsets and state only after every
        # snapshot of that epoch returned: its writes must be in the stores by then.
        self.writes.drain()

    def close(self) -> None:
        self.writes.stop()


class StoreSink(FixedPartitionedSink[StoreItem, None]):
    """One partition, ``"store"``: every change goes through one ordered writer.

    Items arrive keyed (``(key, item)``); any key routes to the one partition.
    """

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    def list_parts(self) -> list[str]:
        return [STORE_PARTITION]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> StatefulSinkPartition[StoreItem, None]:
        return _StorePartition(self.writer)


class DeadLetters:
    """Publishes dead letters, delivered before the epoch (and its offsets) can be snapshotted."""

    def __init__(self, publisher: Publisher, progress: Progress) -> None:
        self.publisher = publisher
        self.progress = progress

    def send(self, letter: DeadLetter) -> None:
        self.send_all([letter])

    def send_all(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            log.warning(
                "dead letter from %s[%d]@%d at %s: %s",
                letter.source_topic,
                letter.source_partition,
                letter.source_offset,
                letter.stage,
                letter.reason,
            )
            self.publisher.publish(DEAD_LETTERS, letter.key, letter)
        self.publisher.flush()


class _DeadLetterPartition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, dead_letters: DeadLetters) -> None:
        self.dead_letters = dead_letters

    def write_batch(self, items: list[DeadLetter]) -> None:
        self.dead_letters.send_all(items)
        self.dead_letters.progress.record(
            (d.source_topic, d.source_partition, d.source_offset) for d in items
        )


class DeadLetterSink(DynamicSink[DeadLetter]):
    def __init__(self, dead_letters: DeadLetters) -> None:
        self.dead_letters = dead_letters

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[DeadLetter]:
        return _DeadLetterPartition(self.dead_letters)
