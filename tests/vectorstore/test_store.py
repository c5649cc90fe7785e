"""Per-author collections against real Qdrant local mode, with real MiniLM vectors."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from schemas.ids import chunk_point_id, document_id
from vectorstore.embedder import Embedder
from vectorstore.store import PAYLOAD_KEYS, ChunkPoint, VectorStore, collection_name

TEXTS = {
    "kafka": "Kafka partitions let several consumers in a group share the load of one topic.",
    "bread": "A sourdough loaf needs a lively starter and a long, cool overnight proof.",
    "running": "Marathon training builds mileage slowly, with one long run every week.",
    "rust": "Rust's borrow checker rejects code that keeps two mutable references alive.",
}


def chunk_points(
    embedder: Embedder, author: str, source: str, version: str, texts: list[str]
) -> list[ChunkPoint]:
    document = document_id(author, source)
    vectors = embedder.encode(texts)
    points = []
    for index, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        payload = {
            "author": author,
            "document_id": str(document),
            "version": version,
            "chunk_index": index,
            "kind": "article",
            "title": source,
            "source_url": f"https://example.org/{source}",
            "text": text,
            "crawled_at": "2026-01-02T03:04:05+00:00",
            "published_at": None,
            "indexed_at": "2026-01-02T03:04:06+00:00",
            "embedding_model": embedder.model_name,
        }
        assert set(payload) == set(PAYLOAD_KEYS)
        points.append(ChunkPoint(chunk_point_id(document, version, index), vector, payload))
    return points


@pytest.fixture
def store(tmp_path: Path, embedder: Embedder) -> Iterator[VectorStore]:
    opened = VectorStore.open(str(tmp_path / "qdrant"), dimensions=embedder.dimensions)
    try:
        yield opened
    finally:
        opened.close()


def ids(points: list[ChunkPoint]) -> set[uuid.UUID]:
    return {point.id for point in points}


def test_search_returns_the_relevant_chunk_first(store: VectorStore, embedder: Embedder) -> None:
    store.ensure_collection("ada")
    points = {
        topic: chunk_points(embedder, "ada", topic, "v1", [text])[0]
        for topic, text in TEXTS.items()
    }
    store.upsert("ada", list(points.values()))

    for query, topic in [
        ("how long should bread dough rise", "bread"),
        ("sharing a topic's messages between consumers", "kafka"),
        ("preparing to run 42 kilometres", "running"),
    ]:
        hits = store.search("ada", embedder.encode_query(query), k=4)
        assert hits[0].id == points[topic].id, query
        assert hits[0].payload["text"] == TEXTS[topic]
        assert hits[0].score > hits[1].score


def test_authors_never_see_each_others_points(store: VectorStore, embedder: Embedder) -> None:
    written = {}
    for author in ("ada", "bob"):
        store.ensure_collection(author)
        written[author] = chunk_points(embedder, author, "same-page", "v1", list(TEXTS.values()))
        store.upsert(author, written[author])
    assert ids(written["ada"]).isdisjoint(ids(written["bob"]))
    assert store.authors() == ["ada", "bob"]

    query = embedder.encode_query("Kafka consumers")
    for author in ("ada", "bob"):
        # k above the number of points: every point the author can reach.
        hits = store.search(author, query, k=50)
        assert {hit.id for hit in hits} == ids(written[author])
        assert {hit.payload["author"] for hit in hits} == {author}
        assert store.count(author) == len(TEXTS)


def test_upsert_refuses_a_point_of_another_author(store: VectorStore, embedder: Embedder) -> None:
    store.ensure_collection("ada")
    bobs = chunk_points(embedder, "bob", "page", "v1", [TEXTS["rust"]])
    with pytest.raises(ValueError, match="bob"):
        store.upsert("ada", bobs)
    assert store.count("ada") == 0


def test_delete_other_versions_keeps_exactly_the_new_version(
    store: VectorStore, embedder: Embedder
) -> None:
    store.ensure_collection("ada")
    old = chunk_points(embedder, "ada", "essay", "v1", ["one", "two", "three"])
    new = chunk_points(embedder, "ada", "essay", "v2", ["one, revised", "two, revised"])
    other = chunk_points(embedder, "ada", "other", "v1", ["unrelated", "still unrelated"])
    store.upsert("ada", old + new + other)

    essay = document_id("ada", "essay")
    assert store.delete_other_versions("ada", essay, keep_version="v2") == len(old)
    assert store.point_ids("ada") == ids(new) | ids(other)
    # Nothing left to delete: a replay of the same update is harmless.
    assert store.delete_other_versions("ada", essay, keep_version="v2") == 0
    assert store.point_ids("ada") == ids(new) | ids(other)


def test_delete_document_removes_all_of_it_and_nothing_else(
    store: VectorStore, embedder: Embedder
) -> None:
    for author in ("ada", "bob"):
        store.ensure_collection(author)
    gone = chunk_points(embedder, "ada", "essay", "v1", ["one", "two"])
    gone += chunk_points(embedder, "ada", "essay", "v2", ["one again"])
    kept = chunk_points(embedder, "ada", "other", "v1", ["unrelated"])
    bobs = chunk_points(embedder, "bob", "essay", "v1", ["one", "two"])
    store.upsert("ada", gone + kept)
    store.upsert("bob", bobs)

    assert store.delete_document("ada", document_id("ada", "essay")) == len(gone)
    assert store.point_ids("ada") == ids(kept)
    assert store.point_ids("bob") == ids(bobs)


def test_upserting_the_same_ids_again_overwrites(store: VectorStore, embedder: Embedder) -> None:
    store.ensure_collection("ada")
    points = chunk_points(embedder, "ada", "essay", "v1", list(TEXTS.values()))
    store.upsert("ada", points)
    store.upsert("ada", points)
    assert store.count("ada") == len(points)

    renamed = [
        ChunkPoint(point.id, point.vector, {**point.payload, "title": "renamed"})
        for point in points
    ]
    store.upsert("ada", renamed)
    assert store.count("ada") == len(points)
    hits = store.search("ada", embedder.encode_query("sourdough"), k=10)
    assert {hit.payload["title"] for hit in hits} == {"renamed"}


@pytest.mark.parametrize(
    "slug", ["../x", "Ada", "", "a_b", "ada\n", "-ada", "a" * 64, "twin_ada_chunks", "a/b"]
)
def test_a_bad_slug_never_names_a_collection(store: VectorStore, slug: str) -> None:
    with pytest.raises(ValueError, match="slug"):
        collection_name(slug)
    with pytest.raises(ValueError, match="slug"):
        store.ensure_collection(slug)
    with pytest.raises(ValueError, match="slug"):
        store.search(slug, [0.0] * store.dimensions, k=1)


def test_search_for_an_author_without_a_collection_is_empty(
    store: VectorStore, embedder: Embedder
) -> None:
    store.ensure_collection("ada")
    store.upsert("ada", chunk_points(embedder, "ada", "essay", "v1", [TEXTS["kafka"]]))
    assert store.search("nobody", embedder.encode_query("Kafka"), k=5) == []
    assert store.count("nobody") == 0
    assert store.delete_document("nobody", document_id("nobody", "essay")) == 0


def test_any_other_search_failure_is_raised(store: VectorStore, embedder: Embedder) -> None:
    store.ensure_collection("ada")
    store.upsert("ada", chunk_points(embedder, "ada", "essay", "v1", [TEXTS["kafka"]]))
    with pytest.raises(ValueError):
        store.search("ada", [1.0, 0.0, 0.0], k=5)


def test_reopening_the_directory_sees_the_same_points(tmp_path: Path, embedder: Embedder) -> None:
    location = str(tmp_path / "qdrant")
    points = chunk_points(embedder, "ada", "essay", "v1", list(TEXTS.values()))
    with VectorStore.open(location, dimensions=embedder.dimensions) as store:
        store.ensure_collection("ada")
        store.upsert("ada", points)

    with VectorStore.open(location, dimensions=embedder.dimensions) as store:
        assert store.authors() == ["ada"]
        assert store.point_ids("ada") == ids(points)
        hits = store.search("ada", embedder.encode_query("borrow checker"), k=1)
        assert hits[0].payload["text"] == TEXTS["rust"]


def test_a_collection_of_another_size_is_refused(tmp_path: Path, embedder: Embedder) -> None:
    location = str(tmp_path / "qdrant")
    with VectorStore.open(location, dimensions=embedder.dimensions) as store:
        store.ensure_collection("ada")
        store.ensure_collection("ada")  # idempotent
    with (
        VectorStore.open(location, dimensions=8) as store,
        pytest.raises(ValueError, match="reindex"),
    ):
        store.ensure_collection("ada")


def test_staging_replaces_the_live_collection_only_when_asked(
    tmp_path: Path, embedder: Embedder
) -> None:
    location = str(tmp_path / "qdrant")
    old = chunk_points(embedder, "ada", "essay", "v1", [TEXTS["kafka"], TEXTS["bread"]])
    new = chunk_points(embedder, "ada", "essay", "v2", list(TEXTS.values()))
    query = embedder.encode_query("Kafka consumer groups")
    with VectorStore.open(location, dimensions=embedder.dimensions) as store:
        store.ensure_collection("ada")
        store.upsert("ada", old)
        store.begin_staging("ada")
        store.upsert("ada", new, staging=True)

        # While the rebuild runs, readers see the old collection only.
        assert {hit.id for hit in store.search("ada", query, k=10)} == ids(old)
        assert store.count("ada", staging=True) == len(new)
        assert store.authors() == ["ada"]

        store.replace_with_staging("ada")
        assert {hit.id for hit in store.search("ada", query, k=10)} == ids(new)
        assert store.count("ada", staging=True) == 0
        with pytest.raises(LookupError):
            store.replace_with_staging("ada")
    # The replaced collection is deleted, not left behind on disk.
    assert len(list((tmp_path / "qdrant" / "collection").iterdir())) == 1

    with VectorStore.open(location, dimensions=embedder.dimensions) as store:
        assert store.point_ids("ada") == ids(new)
        # An abandoned rebuild leaves the live collection as it was.
        store.begin_staging("ada")
        store.upsert("ada", old, staging=True)
        store.discard_staging("ada")
        assert store.point_ids("ada") == ids(new)
        assert store.point_ids("ada", staging=True) == set()


def test_a_rebuild_started_again_starts_empty(
    store: VectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    store.begin_staging("ada")
    store.upsert("ada", chunk_points(embedder, "ada", "essay", "v1", ["half done"]), staging=True)
    store.begin_staging("ada")
    assert store.count("ada", staging=True) == 0
    # The half-done collection is deleted, not left behind on disk.
    assert len(list((tmp_path / "qdrant" / "collection").iterdir())) == 1
    fresh = chunk_points(embedder, "ada", "essay", "v2", ["all of it"])
    store.upsert("ada", fresh, staging=True)
    # An author with no live collection yet gets the rebuilt one.
    store.replace_with_staging("ada")
    assert store.point_ids("ada") == ids(fresh)


def test_drop_removes_the_author_and_only_that_author(
    store: VectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    for author in ("ada", "ada-b"):
        store.ensure_collection(author)
        store.upsert(author, chunk_points(embedder, author, "essay", "v1", [TEXTS["bread"]]))
    store.begin_staging("ada")
    store.drop("ada")
    assert store.authors() == ["ada-b"]
    assert store.search("ada", embedder.encode_query("bread"), k=3) == []
    assert store.count("ada", staging=True) == 0
    assert store.count("ada-b") == 1
    # The author's points are gone from disk too, not only out of sight.
    left = [path.name for path in (tmp_path / "qdrant" / "collection").iterdir()]
    assert len(left) == 1
    assert left[0].startswith("twin_ada-b_chunks_")


def test_open_refuses_settings_that_cannot_mean_a_store(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="API key"):
        VectorStore.open(str(tmp_path / "qdrant"), "secret", dimensions=4)
    with pytest.raises(ValueError, match="http"):
        VectorStore.open("grpc://localhost:6334", dimensions=4)


def test_scores_are_the_cosine_similarity_of_query_and_chunk(
    store: VectorStore, embedder: Embedder
) -> None:
    store.ensure_collection("ada")
    points = chunk_points(embedder, "ada", "essay", "v1", list(TEXTS.values()))
    store.upsert("ada", points)
    query = embedder.encode_query("bread dough")
    by_id = {point.id: point.vector for point in points}
    for hit in store.search("ada", query, k=len(points)):
        expected = float(np.dot(np.asarray(query), np.asarray(by_id[hit.id])))
        assert hit.score == pytest.approx(expected, abs=1e-5)


def test_upsert_refuses_a_vector_that_is_not_unit_length(
    store: VectorStore, embedder: Embedder
) -> None:
    store.ensure_collection("ada")
    point = chunk_points(embedder, "ada", "essay", "v1", [TEXTS["kafka"]])[0]
    doubled = ChunkPoint(point.id, [2 * x for x in point.vector], point.payload)
    with pytest.raises(ValueError, match="unit vector"):
        store.upsert("ada", [doubled])
    assert store.count("ada") == 0


def test_a_directory_open_in_another_process_is_reported_as_busy(
    store: VectorStore, tmp_path: Path
) -> None:
    probe = (
        "import sys\n"
        "from vectorstore.store import StoreBusy, VectorStore\n"
        "try:\n"
        f"    VectorStore.open({str(tmp_path / 'qdrant')!r}, dimensions=4)\n"
        "except StoreBusy as busy:\n"
        "    print(busy)\n"
        "    sys.exit(7)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 7, result.stderr
    assert "open in another process" in result.stdout
