"""The whole dataflow in-process, with Bytewax's testing harness and the real embedder."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from schemas import serde
from schemas.dead_letters import DeadLetter
from schemas.documents import RawDocument
from schemas.ids import chunk_point_id
from streams.dataflow import build_flow
from streams.items import Delete, Incoming, Indexed, Skipped
from streams.run import EmbedderTokens
from streams.steps import Limits
from tests.factories import raw_document
from vectorstore.embedder import Embedder

NOW = datetime(2026, 11, 29, tzinfo=UTC)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.load()


class Records:
    """Kafka-like records at consecutive offsets of one partition."""

    def __init__(self) -> None:
        self.items: list[Incoming] = []

    def add(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> int:
        offset = len(self.items)
        self.items.append(Incoming("twin.raw-documents", 0, offset, key, value, NOW, headers))
        return offset

    def document(self, document: RawDocument) -> int:
        return self.add(str(document.document_id).encode(), serde.encode(document))


def run(
    embedder: Embedder, records: Records, limits: Limits | None = None
) -> tuple[list[Indexed | Delete | Skipped], list[DeadLetter]]:
    keyed: list[tuple[str, Indexed | Delete | Skipped]] = []
    letters: list[DeadLetter] = []
    flow = build_flow(
        TestingSource(records.items),
        TestingSink(keyed),
        TestingSink(letters),
        encoder=embedder,
        counter=EmbedderTokens(embedder),
        limits=limits or Limits(),
    )
    run_main(flow)
    assert {key for key, _ in keyed} <= {"store"}
    return [item for _, item in keyed], letters


def test_documents_are_chunked_embedded_and_garbage_is_dead_lettered_with_a_reason(
    embedder: Embedder,
) -> None:
    records = Records()
    good = raw_document(source="https://example.org/good")
    long = raw_document(source="https://example.org/long", content="A sentence. " * 400)
    records.document(good)
    garbage = {
        records.add(str(uuid.uuid4()).encode(), b"{not json"): "not JSON",
        records.add(str(uuid.uuid4()).encode(), json.dumps({"title": 1}).encode()): "Field",
        records.add(str(uuid.uuid4()).encode(), b"\xff\xfe\x00"): "not UTF-8",
        records.add(b"not-a-uuid", serde.encode(good)): "not a document id",
        records.add(None, serde.encode(good)): "no key",
        records.add(str(good.document_id).upper().encode(), serde.encode(good)): "must be written",
        records.add(str(uuid.uuid4()).encode(), None, (("author", b"../etc"),)): "not an author",
        records.document(
            raw_document(source="https://example.org/nul").model_copy(
                update={"metadata": {"a\x00b": 1}}
            )
        ): "the warehouse cannot store it",
        records.add(str(uuid.uuid4()).encode(), serde.encode(good)): "is not the document's id",
        records.document(
            raw_document(source="https://example.org/big", content="word " * 3000)
        ): "over the 10000-byte document limit",
        records.document(
            raw_document(source="https://example.org/empty", content=" \n\u200b\n ")
        ): "empty after cleaning",
    }
    records.document(long)

    stored, letters = run(embedder, records, Limits(max_document_bytes=10_000))

    reasons = {letter.source_offset: letter.reason for letter in letters}
    assert set(reasons) == set(garbage)
    for offset, expected in garbage.items():
        assert expected in reasons[offset], (offset, reasons[offset])
    assert {letter.stage for letter in letters} <= {"decode", "validate", "clean"}

    indexed = {i.prepared.document.document_id: i for i in stored if isinstance(i, Indexed)}
    assert set(indexed) == {good.document_id, long.document_id}
    assert len(indexed[good.document_id].prepared.chunks) == 1
    long_chunks = indexed[long.document_id].prepared.chunks
    assert len(long_chunks) > 5
    for item in indexed.values():
        assert len(item.vectors) == len(item.prepared.chunks)
        assert all(len(vector) == embedder.dimensions for vector in item.vectors)
        assert all(embedder.count_tokens(c.text) <= 200 for c in item.prepared.chunks)


def test_versions_tombstones_and_foreign_tombstones(embedder: Embedder) -> None:
    records = Records()
    first = raw_document(source="https://example.org/doc", content="First version of the text.")
    second = raw_document(source="https://example.org/doc", content="Second version of it.")
    key = str(first.document_id).encode()
    records.document(first)
    replay = records.document(first)
    records.document(second)
    foreign = records.add(key, None, (("author", b"mallory"),))
    records.add(key, None, (("author", b"ada"),))
    never_seen = uuid.uuid4()
    records.add(str(never_seen).encode(), None, (("author", b"ada"),))
    # Without an author header, a tombstone could delete anybody's document.
    headerless = records.add(key, None)

    stored, letters = run(embedder, records)

    kinds = [type(item).__name__ for item in stored]
    assert kinds == ["Indexed", "Skipped", "Indexed", "Delete", "Delete"]
    assert isinstance(stored[1], Skipped)
    assert stored[1].incoming.offset == replay
    versions = [i.prepared.document.version for i in stored if isinstance(i, Indexed)]
    assert versions == [first.version, second.version]
    delete = stored[3]
    assert isinstance(delete, Delete)
    assert delete.author == "ada"  # from the stream's own state
    unknown = stored[4]
    assert isinstance(unknown, Delete)
    assert (unknown.document_id, unknown.author) == (never_seen, "ada")
    reasons = {letter.source_offset: letter.reason for letter in letters}
    assert set(reasons) == {foreign, headerless}
    assert "tombstone from mallory" in reasons[foreign]
    assert "needs an author header" in reasons[headerless]


def test_point_ids_are_deterministic(embedder: Embedder) -> None:
    document = raw_document(source="https://example.org/ids", content="Stable. " * 300)
    runs = []
    for _ in range(2):
        records = Records()
        records.document(document)
        stored, _ = run(embedder, records)
        (item,) = stored
        assert isinstance(item, Indexed)
        runs.append(
            [
                chunk_point_id(document.document_id, document.version, c.index)
                for c in item.prepared.chunks
            ]
        )
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == len(runs[0])
