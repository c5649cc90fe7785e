"""The store sink against the real warehouse and Qdrant local mode: what a batch leaves behind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymongo.database import Database

from infra import warehouse
from schemas import serde
from schemas.dead_letters import DeadLetter
from schemas.documents import RawDocument
from schemas.ids import chunk_point_id
from streams.chunk import chunk
from streams.clean import clean
from streams.items import Delete, Incoming, Indexed, Prepared
from streams.run import EmbedderTokens
from streams.sinks import Progress, StoreWriter, points_of
from tests.factories import raw_document
from vectorstore.embedder import Embedder
from vectorstore.store import VectorStore

NOW = datetime(2026, 11, 30, tzinfo=UTC)


class Sink:
    def __init__(self, store: VectorStore, db: Database[warehouse.Document], embedder: Embedder):
        self.store = store
        self.db = db
        self.embedder = embedder
        self.letters: list[DeadLetter] = []
        self.offset = 0
        self.writer = StoreWriter(
            store, db, embedder.model_name, Progress(db, "test"), self.letters.append
        )

    def incoming(self, key: uuid.UUID, value: bytes | None) -> Incoming:
        self.offset += 1
        return Incoming("twin.raw-documents", 0, self.offset, str(key).encode(), value, NOW)

    def indexed(self, document: RawDocument) -> Indexed:
        cleaned = clean(document)
        chunks = chunk(cleaned, document.kind, EmbedderTokens(self.embedder))
        vectors = self.embedder.encode([c.text for c in chunks]).tolist()
        incoming = self.incoming(document.document_id, serde.encode(document))
        return Indexed(Prepared(document, cleaned, chunks, incoming), vectors)

    def delete(self, document: RawDocument, author: str | None) -> Delete:
        return Delete(document.document_id, author, self.incoming(document.document_id, None))

    def write(self, *items: Indexed | Delete) -> None:
        self.writer.write(list(items))

    def ids(self, author: str) -> set[uuid.UUID]:
        return self.store.point_ids(author)


@pytest.fixture
def sink(tmp_path: Path, mongodb_uri: str, embedder: Embedder) -> Iterator[Sink]:
    client = warehouse.connect(mongodb_uri)
    store = VectorStore.open(str(tmp_path / "qdrant"), dimensions=embedder.dimensions)
    try:
        yield Sink(store, client[f"sinks_{uuid.uuid4().hex[:8]}"], embedder)
    finally:
        store.close()
        client.close()


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.load()


def version(n: int, slug: str = "ada") -> RawDocument:
    words = " ".join(f"w{n}x{i}" for i in range(40 * n))
    return raw_document(slug=slug, source="https://example.org/evolving", content=words)


def ids_of(document: RawDocument, sink: Sink) -> set[uuid.UUID]:
    chunks = chunk(clean(document), document.kind, EmbedderTokens(sink.embedder))
    return {chunk_point_id(document.document_id, document.version, c.index) for c in chunks}


def test_the_last_change_of_a_document_in_a_batch_decides_what_is_stored(sink: Sink) -> None:
    v1, v2, v3 = version(1), version(2), version(3)
    # Forgotten, then published again: the document is back.
    sink.write(sink.indexed(v1), sink.delete(v1, "ada"), sink.indexed(v2))
    assert sink.ids("ada") == ids_of(v2, sink)
    assert warehouse.indexed_versions(sink.db, [v2.document_id])[v2.document_id].version == (
        v2.version
    )
    # Two newer versions at once: only the newest survives, nothing of the others.
    sink.write(sink.indexed(v1), sink.indexed(v3))
    assert sink.ids("ada") == ids_of(v3, sink)
    # Published, then forgotten: gone from both stores.
    sink.write(sink.indexed(v2), sink.delete(v2, "ada"))
    assert sink.ids("ada") == set()
    assert warehouse.load_raw_document(sink.db, v2.document_id) is None


def test_versions_a_crashed_run_stored_are_deleted_when_a_newer_one_arrives(sink: Sink) -> None:
    v1, v2 = version(1), version(2)
    crashed = sink.indexed(v1)
    # The crash came after the points were written and before the warehouse was.
    sink.store.ensure_collection("ada")
    sink.store.upsert("ada", points_of(v1, crashed.prepared.chunks, crashed.vectors, "m", NOW))
    sink.write(sink.indexed(v1), sink.indexed(v2))  # the replay, with what came next
    assert sink.ids("ada") == ids_of(v2, sink)


def test_a_tombstone_naming_another_author_deletes_nothing_and_is_dead_lettered(
    sink: Sink,
) -> None:
    document = version(2, slug="bob")
    sink.write(sink.indexed(document))
    # After a broker restart the stream no longer knows the owner; the warehouse does.
    sink.write(sink.delete(document, "alice"))
    assert sink.ids("bob") == ids_of(document, sink)
    assert warehouse.load_raw_document(sink.db, document.document_id) is not None
    (letter,) = sink.letters
    assert (letter.stage, letter.reason) == (
        "validate",
        "tombstone from alice for a document of bob",
    )


def test_a_document_claiming_another_authors_id_is_dead_lettered(sink: Sink) -> None:
    original = version(1, slug="bob")
    sink.write(sink.indexed(original))
    forged = original.model_copy(
        update={"author": original.author.model_copy(update={"slug": "mallory"})}
    )
    sink.write(sink.indexed(forged))
    assert sink.ids("mallory") == set()
    stored = warehouse.load_raw_document(sink.db, original.document_id)
    assert stored is not None and stored.author.slug == "bob"
    (letter,) = sink.letters
    assert "belongs to bob, not mallory" in letter.reason
