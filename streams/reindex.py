"""Rebuild authors' collections from the warehouse (``llm-twin reindex``).

For a new embedding model, new chunk sizes or new cleaning rules. Each author's
collection is rebuilt beside the live one (a staging collection) from the raw
documents in the warehouse, and swapped in only when complete: searches see the
old collection until then, never a half-built one, and a failed rebuild leaves
the live collection untouched.

When a dataflow keeps writing to the live collection meanwhile (a Qdrant server
shared by several processes), the documents it indexed or forgot during the
rebuild are replayed onto the staging collection before the swap. A change that
lands in the moment between that catch-up and the swap is the one gap; the next
version of that document, or another reindex, repairs it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice

from pymongo.database import Database

from infra import warehouse
from schemas.documents import RawDocument
from streams import steps
from streams.chunk import Chunk, TokenCounter, chunk
from streams.clean import clean
from streams.sinks import points_of
from vectorstore.embedder import Embedder
from vectorstore.store import VectorStore

log = logging.getLogger(__name__)

# Documents embedded together: enough chunks to keep the encoder at its best batch size.
DOCUMENTS_PER_BATCH = 64


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
        self.store.begin_staging(author)
        try:
            filled = self._fill(author, warehouse.raw_documents_of(self.db, author))
            filled += self._catch_up(author, since=began)
            self.store.replace_with_staging(author)
        except BaseException:
            self.store.discard_staging(author)
            raise
        seconds = time.perf_counter() - started
        log.info("reindexed %s: %d documents, %d chunks", author, filled.documents, filled.chunks)
        return Rebuilt(author, filled.documents, filled.chunks, filled.skipped, seconds)

    def _catch_up(self, author: str, since: datetime) -> _Filled:
        """Replay onto staging what the live dataflow changed while the rebuild ran."""
        indexed, deleted = warehouse.changed_since(self.db, author, since)
        for document_id in deleted - indexed:
            self.store.delete_document(author, document_id, staging=True)
        if not indexed:
            return _Filled()
        documents = list(warehouse.raw_documents_of(self.db, author, indexed))
        for document in documents:
            self.store.delete_document(author, document.document_id, staging=True)
        # Counted already by the first pass, when the document was there.
        return _Filled(skipped=self._fill(author, iter(documents)).skipped)

    def _fill(self, author: str, documents: Iterator[RawDocument]) -> _Filled:
        filled = _Filled()
        while batch := list(islice(documents, DOCUMENTS_PER_BATCH)):
            filled += self._write(author, batch)
        return filled

    def _write(self, author: str, documents: Iterable[RawDocument]) -> _Filled:
        prepared: list[tuple[RawDocument, str, list[Chunk]]] = []
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
            prepared.append((document, text, chunks))
        texts = [c.text for _, _, chunks in prepared for c in chunks]
        vectors = self.embedder.encode(texts, batch_size=self.embed_batch_size)
        now = datetime.now(UTC)
        points = []
        start = 0
        for document, _, chunks in prepared:
            end = start + len(chunks)
            rows = [[float(x) for x in v] for v in vectors[start:end]]
            points += points_of(document, chunks, rows, self.embedder.model_name, now)
            start = end
        self.store.upsert(author, points, staging=True)
        for document, text, chunks in prepared:
            warehouse.refresh_cleaned_text(self.db, document, text=text, chunk_count=len(chunks))
        return _Filled(len(prepared), len(points), skipped)


def authors_to_rebuild(
    db: Database[warehouse.Document], store: VectorStore, author: str | None
) -> list[str]:
    """One author, or every author, that the warehouse or the store knows."""
    known = set(warehouse.authors(db)) | set(store.authors())
    if author is not None:
        return [author] if author in known else []
    return sorted(known)
