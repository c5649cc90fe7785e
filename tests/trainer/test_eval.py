"""``evaluate`` on a trained tiny twin: perplexity, retrieval of held-out documents, style."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra import snapshots, warehouse
from schemas.training import Split
from streams.chunk import Chunk
from streams.sinks import points_of
from tests import tiny_model
from tests.trainer.test_training import PROJECTIONS, index
from trainer.evaluate import NothingToEvaluate, StoreRetrieval, evaluate
from trainer.lora import TrainConfig, train
from vectorstore.embedder import Embedder
from vectorstore.store import VectorStore

TOPICS = [
    "lighthouse",
    "violin",
    "glacier",
    "orchard",
    "satellite",
    "bakery",
    "volcano",
    "library",
    "harbour",
    "telescope",
    "vineyard",
    "railway",
    "beehive",
    "cathedral",
    "submarine",
    "greenhouse",
    "windmill",
    "canyon",
    "observatory",
    "marketplace",
    "quarry",
    "monastery",
    "aqueduct",
    "lagoon",
]


def document_text(topic: str, rng: random.Random) -> str:
    voice = ["indeed", "quietly", "splendid", "moorland", "kettle", "drizzle"]
    opening = " ".join(rng.choice(voice) for _ in range(12))
    closing = " ".join(rng.choice(voice) for _ in range(12))
    return (
        f"Indeed {opening}. The {topic} keeps its old {topic} bell near the {topic} gate. "
        f"Quietly {closing}."
    )


def test_evaluation_reports_perplexity_retrieval_and_style(
    mongodb_uri: str, tmp_path: Path
) -> None:
    author = f"zed-{uuid.uuid4().hex[:6]}"
    rng = random.Random(8)
    client = warehouse.connect(mongodb_uri)
    embedder = Embedder.load()
    try:
        db = client["eval_tests"]
        documents = index(db, author, [document_text(t, rng) for t in TOPICS])
        with VectorStore.open(str(tmp_path / "qdrant"), dimensions=embedder.dimensions) as store:
            store.ensure_collection(author)
            for document in documents:
                text = document.content
                chunk = Chunk(index=0, text=text, start=0, end=len(text), token_count=60)
                vectors = embedder.encode([text]).tolist()
                store.upsert(author, points_of(document, [chunk], vectors, "t", datetime.now(UTC)))
            built = snapshots.build(db, author, tmp_path / "snapshots", datetime.now(UTC))
            model = tiny_model.build(tmp_path / "model")
            config = TrainConfig(
                base_model=str(model),
                rank=8,
                alpha=16,
                learning_rate=1e-2,
                epochs=10,
                max_seq_tokens=160,
                target_modules=[*PROJECTIONS, "lm_head"],
            )
            adapter = train(built, config, tmp_path / "adapters", base_model_name="t").adapter
            report = evaluate(
                adapter,
                built,
                StoreRetrieval(store, embedder),
                base_model=str(model),
                author_name="Zed Moor",
                max_samples=4,
                max_new_tokens=24,
                judge=lambda references, drafts: float(len(drafts)),
            )
    finally:
        client.close()

    held_out = len(snapshots.rows(built, Split.TEST))
    assert report["samples"] == min(4, held_out) > 0
    assert report["perplexity"]["twin"] < report["perplexity"]["base"]
    assert set(report["style_similarity"]) == {"base", "twin", "human"}
    assert all(0.0 <= v <= 1.0 for v in report["style_similarity"].values())
    # The human ceiling: the author's own held-out documents read as theirs, and like them.
    assert report["attribution"]["human"] == 1.0
    assert report["attribution"]["base"] <= report["attribution"]["human"]
    styled = report["style_similarity"]
    assert styled["human"] > styled["twin"] > styled["base"]
    # The twin prefers its author's text to the reference writers' far more than the base.
    ratios = report["perplexity"]
    assert (
        ratios["twin"] / ratios["base"] < ratios["twin_on_reference"] / ratios["base_on_reference"]
    )
    assert set(report["copying"]) == {"max_overlap_chars", "ngram8_overlap", "base", "human"}
    assert set(report["repetition"]) == {"base", "twin", "human"}
    assert report["repetition"]["human"]["distinct_2"] is not None
    assert report["noise"]["style_similarity"] is not None
    assert report["decoding"]["no_repeat_ngram_size"] > 0  # the local defaults against loops
    # Every held-out document is found by its own middle sentence, near the top.
    assert report["retrieval"]["hit_at_5"] == 1.0
    assert report["retrieval"]["mrr"] > 0.5
    samples = float(report["samples"])
    assert report["judge"] == {"base": samples, "twin": samples}  # one draft per sample


def test_a_snapshot_without_held_out_documents_cannot_be_evaluated(
    mongodb_uri: str, tmp_path: Path
) -> None:
    from schemas.training import AdapterRegistered

    author = f"amy-{uuid.uuid4().hex[:6]}"
    client = warehouse.connect(mongodb_uri)
    try:
        db = client["eval_tests"]
        # Find one document whose id hashes to the training side.
        rng = random.Random(9)
        for attempt in range(50):
            documents = index(db, author, [document_text("meadow", rng)], first=attempt)
            if snapshots.split_of(documents[0].document_id) is Split.TRAIN:
                break
            warehouse.forget_document(db, documents[0].document_id, author, datetime.now(UTC))
        built = snapshots.build(db, author, tmp_path, datetime.now(UTC))
    finally:
        client.close()
    assert built.counts.test == 0
    adapter = AdapterRegistered(
        adapter_id="amy-a",
        author=author,
        snapshot_id=built.snapshot_id,
        base_model="t",
        path=str(tmp_path),
        created_at=datetime.now(UTC),
        config_hash="2" * 64,
    )
    with pytest.raises(NothingToEvaluate):
        evaluate(adapter, built, None, base_model="unused", author_name="Amy")  # type: ignore[arg-type]
