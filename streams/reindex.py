"""Rebuild authors' collections from the warehouse (``llm-twin reindex``).

For a new embedding model, new chunk sizes or new cleaning rules. Each author's
collection is rebuilt beside the live one (a staging collection) from the raw
documents in the warehouse, and swapped in only when complete: searches see the
old collection until then, never a half-built one, and a failed rebuild leaves
the live collection untouched.

When a dataflow keeps writing to the live collection meanwhile (a Qdrant server
shared by several processes), the documents it indexed or forgot during the
rebuild (from a little before it began: the two processes' clocks and write
times differ) are replayed onto the staging collection before the swap, and once
more onto the new live collection after it, for what landed in between. The
warehouse's cleaned text and chunk counts are refreshed only after the swap, so
they always describe the live collection (the dataflow deletes old versions by
their chunk count).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice

from pymongo.database import Database

from infra import warehouse
from schemas.documents import RawDocument
from schemas.ids import chunk_point_id
from streams import steps
from streams.chunk import Chunk, TokenCounter, chunk
from streams.clean import clean
from streams.sinks import points_of
from vectorstore.embedder import Embedder
from vectorstore.store import VectorStore

log = logging.getLogger(__name__)

# Documents embedded together: enough chunks to keep the encoder at its best batch size.
DOCUMENTS_PER_BATCH = 64
# How far before its start a rebuild looks for changes the live dataflow made.
CATCH_UP_SLACK = timedelta(minutes=5)


@dataclass(frozen=True)
class Rebuilt:
    author: str
    documents: int
    chunks: int
    # Documents with nothing left to index under the current rules (empty after cleaning).
    skipped: int
    seconds: float


@dataclass(frozen=True)
class _Filled:
    documents: int = 0
    chunks: int = 0
    skipped: int = 0

    def __add__(self, other: _Filled) -> _Filled:
        return _Filled(
            self.documents + other.documents,
            self.chunks + other.chunks,
            self.skipped + other.skipped,
        )


class Reindexer:
    def __init__(
        self,
        db: Database[warehouse.Document],
        store: VectorStore,
        embedder: Embedder,
        counter: TokenCounter,
        limits: steps.Limits,
        embed_batch_size: int = 64,
    ) -> None:
        self.db = db
        self.store = store
        self.embedder = embedder
        self.counter = counter
        self.limits = limits
        self.embed_batch_size = embed_batch_size

    def rebuild(self, author: str) -> Rebuilt:
        """Rebuild ``author``'s collection from the warehouse and swap it in."""
        began, started = datetime.now(UTC), time.perf_counter()
        since = began - CATCH_UP_SLACK
        counts: dict[uuid.UUID, tuple[str, int]] = {}
        self.store.begin_staging(author)
        try:
            documents = warehouse.raw_documents_of(self.db, author)
            filled = self._fill(author, documents, counts, staging=True)
            filled += self._catch_up(author, since, counts, staging=True)
            self.store.replace_with_staging(author)
        except BaseException:
            self.store.discard_staging(author)
            raise
        self._catch_up(author, since, counts, staging=False)
        for document in warehouse.raw_documents_of(self.db, author):
            version, count = counts.get(document.document_id, ("", 0))
            if version == document.version:
                text = clean(document)
                warehouse.refresh_cleaned_text(self.db, document, text=text, chunk_count=count)
        seconds = time.perf_counter() - started
        log.info("reindexed %s: %d documents, %d chunks", author, filled.documents, filled.chunks)
        return Rebuilt(author, filled.documents, filled.chunks, filled.skipped, seconds)

    def _catch_up(
        self,
        author: str,
        since: datetime,
        counts: dict[uuid.UUID, tuple[str, int]],
        *,
        staging: bool,
    ) -> _Filled:
        """Replay what the live dataflow changed since ``since`` (idempotent).

        Only what differs from what this rebuild wrote is redone, by point id:
        a filtered delete scans the whole collection in local mode.
        """
        indexed, deleted = warehouse.changed_since(self.db, author, since)
        for document_id in deleted - indexed:
            if document_id in counts:
                self._delete_written(author, document_id, counts.pop(document_id), staging)
        changed = [
            document
            for document in warehouse.raw_documents_of(self.db, author, indexed)
            if counts.get(document.document_id, ("", 0))[0] != document.version
        ]
        for document in changed:
            if document.document_id in counts:
                written = counts.pop(document.document_id)
                self._delete_written(author, document.document_id, written, staging)
        # Counted already by the first pass, when the document was there.
        return _Filled(skipped=self._fill(author, iter(changed), counts, staging).skipped)

    def _delete_written(
        self, author: str, document_id: uuid.UUID, written: tuple[str, int], staging: bool
    ) -> None:
        version, count = written
        ids = (chunk_point_id(document_id, version, n) for n in range(count))
        self.store.delete_points(author, ids, staging=staging)

    def _fill(
        self,
        author: str,
        documents: Iterator[RawDocument],
        counts: dict[uuid.UUID, tuple[str, int]],
        staging: bool,
    ) -> _Filled:
        filled = _Filled()
        while batch := list(islice(documents, DOCUMENTS_PER_BATCH)):
            filled += self._write(author, batch, counts, staging)
        return filled

    def _write(
        self,
        author: str,
        documents: Iterable[RawDocument],
        counts: dict[uuid.UUID, tuple[str, int]],
        staging: bool,
    ) -> _Filled:
        prepared: list[tuple[RawDocument, list[Chunk]]] = []
        skipped = 0
        for document in documents:
            text = clean(document)
            chunks = (
                chunk(
                    text,
                    document.kind,
                    self.counter,
                    max_tokens=self.limits.max_chunk_tokens,
                    overlap_tokens=self.limits.overlap_tokens,
                )
                if text.strip()
                else []
            )
            if not chunks:
                skipped += 1
                log.warning("%s: nothing to index under the current rules", document.document_id)
                continue
            prepared.append((document, chunks))
        texts = [c.text for _, chunks in prepared for c in chunks]
        vectors = self.embedder.encode(texts, batch_size=self.embed_batch_size)
        now = datetime.now(UTC)
        points = []
        start = 0
        for document, chunks in prepared:
            end = start + len(chunks)
            rows = [[float(x) for x in v] for v in vectors[start:end]]
            points += points_of(document, chunks, rows, self.embedder.model_name, now)
            counts[document.document_id] = (document.version, len(chunks))
            start = end
        self.store.upsert(author, points, staging=staging)
        return _Filled(len(prepared), len(points), skipped)


def authors_to_rebuild(
    db: Database[warehouse.Document], store: VectorStore, author: str | None
) -> list[str]:
    """One author, or every author, that the warehouse or the store knows."""
    known = set(warehouse.authors(db)) | set(store.authors())
    if author is not None:
        return [author] if author in known else []
    return sorted(known)
