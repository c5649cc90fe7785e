"""The trainer as a consumer of twin.dataset.snapshots, on the real local stack."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from infra import adapters as registry
from infra import credentials, kafka, localstack, snapshots, warehouse
from infra.settings import PlatformSettings
from schemas.topics import DATASET_SNAPSHOTS, DEAD_LETTERS, MODELS
from schemas.training import AdapterRegistered, DatasetSnapshot
from streams.chunk import Chunk
from streams.sinks import points_of
from tests import tiny_model
from tests.serving.test_consumer import dead_letters_with_key
from tests.support import topic_ends
from tests.trainer.test_training import PROJECTIONS, index, voice_text
from trainer.consumer import TrainerParts, run
from trainer.evaluate import StoreRetrieval
from trainer.evaluation import evaluator
from trainer.lora import TrainConfig
from vectorstore.embedder import Embedder
from vectorstore.store import VectorStore


def test_each_announced_snapshot_becomes_a_registered_adapter(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    home = tmp_path_factory.mktemp("trainer-consumer-home")
    settings = PlatformSettings(home=home)
    localstack.up(settings)
    stop = threading.Event()
    trainer: threading.Thread | None = None
    try:
        endpoints = localstack.endpoints(settings)
        bootstrap, uri = endpoints.kafka_bootstrap_servers, endpoints.mongodb_uri
        assert bootstrap is not None and uri is not None
        client = warehouse.connect(uri)
        db = client["llm_twin"]
        author = f"zed-{uuid.uuid4().hex[:6]}"
        index(db, author, [voice_text(random.Random(6)) for _ in range(12)])
        built = snapshots.build(db, author, home / "snapshots", datetime.now(UTC))
        # Another author's snapshot whose training file is changed after it was written.
        other = f"yan-{uuid.uuid4().hex[:6]}"
        index(db, other, [voice_text(random.Random(7)) for _ in range(12)])
        tampered = snapshots.build(db, other, home / "snapshots", datetime.now(UTC))
        with Path(tampered.path, "train.jsonl").open("a") as rows:
            rows.write('{"instruction": "obey", "response": "the attacker\'s words"}\n')
        model = tiny_model.build(home / "model")
        evaluate = _evaluator(db, author, home, str(model))
        signer = credentials.signer(settings)
        assert signer is not None, "infra up made the embedded default's signing key"
        parts = TrainerParts(
            bootstrap_servers=bootstrap,
            one_record_per_batch=True,
            signer=signer,
            db=db,
            adapters_root=home / "adapters",
            snapshots_root=home / "snapshots",
            config=TrainConfig(
                base_model=str(model),
                rank=4,
                epochs=1,
                max_seq_tokens=96,
                target_modules=[*PROJECTIONS, "lm_head"],
            ),
            base_model_name="tiny",
            evaluate=evaluate,
        )
        seen: list[AdapterRegistered] = []
        trainer = threading.Thread(
            target=run, args=(parts, stop), kwargs={"on_adapter": seen.append}, daemon=True
        )
        trainer.start()
        letters_from = topic_ends(bootstrap, DEAD_LETTERS.name)
        models_from = topic_ends(bootstrap, MODELS.name)
        with kafka.Publisher(kafka.make_producer(bootstrap, one_record_per_batch=True)) as p:
            # Unsigned: anyone who can produce to the topic could have written it.
            p.publish(DATASET_SNAPSHOTS, "unsigned", built)
        with kafka.Publisher(
            kafka.make_producer(bootstrap, one_record_per_batch=True), signer
        ) as p:
            # Signed, but each names something other than what was written and recorded:
            # another directory, a snapshot never recorded, files changed since. Each is
            # dead-lettered and the stream flows on to the real one.
            elsewhere = built.model_copy(update={"path": str(home / "elsewhere")})
            p.publish(DATASET_SNAPSHOTS, "ghost", elsewhere)
            unknown = built.model_copy(
                update={"snapshot_id": f"{author}-20260101T000000Z-00000000"}
            )
            p.publish(DATASET_SNAPSHOTS, "unknown", unknown)
            p.publish(DATASET_SNAPSHOTS, "tampered", tampered)
            p.publish(DATASET_SNAPSHOTS, author, built)
        deadline = time.monotonic() + 120
        while not seen and time.monotonic() < deadline:
            assert trainer.is_alive()
            time.sleep(0.2)
        assert seen, "no adapter was trained"
        adapter = seen[0]
        assert adapter.snapshot_id == built.snapshot_id
        assert Path(adapter.path, "adapter_config.json").is_file()
        active = registry.active(db, author)
        assert active is not None and active.adapter_id == adapter.adapter_id
        # The trainer is the registry's one writer, and records what it wrote.
        record = db[registry.ADAPTERS].find_one({"_id": adapter.adapter_id})
        assert record is not None
        assert record["files"] == registry.file_hashes(Path(adapter.path))
        assert "adapter_config.json" in record["files"]
        # Evaluated after training, its report kept with it: the first adapter passed.
        evaluation = record["evaluation"]
        assert evaluation["adapter_id"] == adapter.adapter_id and evaluation["samples"] > 0
        assert set(evaluation["attribution"]) == {"twin", "base", "human"}
        assert record["refused"] is None
        for key, reason in (
            ("unsigned", "unsigned message"),
            ("ghost", "differs from its record"),
            ("unknown", "was recorded"),
            ("tampered", "changed"),
        ):
            letters = dead_letters_with_key(bootstrap, letters_from, key)
            assert letters and letters[0].stage == "verify", key
            assert reason in letters[0].reason, (key, letters[0].reason)
        assert registry.active(db, other) is None, "the tampered snapshot trained nothing"
        announced = _models_since(bootstrap, models_from)
        assert [a.adapter_id for a in announced] == [adapter.adapter_id]
        client.close()
    finally:
        stop.set()
        if trainer is not None:
            trainer.join(timeout=30)  # it closes its clients before the broker goes
        localstack.down(settings)


def _evaluator(
    db: Any, author: str, home: Path, model: str
) -> Callable[[AdapterRegistered, DatasetSnapshot, threading.Event], dict[str, Any]]:
    """The trainer's real evaluator, over a local store holding the author's documents."""
    embedder = Embedder.load()
    location = str(home / "evaluation-qdrant")
    with VectorStore.open(location, dimensions=embedder.dimensions) as store:
        store.ensure_collection(author)
        for document in warehouse.raw_documents_of(db, author):
            text = document.content
            chunk = Chunk(index=0, text=text, start=0, end=len(text), token_count=60)
            vectors = embedder.encode([text]).tolist()
            store.upsert(author, points_of(document, [chunk], vectors, "t", datetime.now(UTC)))

    def retrieval() -> StoreRetrieval:
        return StoreRetrieval(VectorStore.open(location, dimensions=embedder.dimensions), embedder)

    return evaluator(db, retrieval, base_model=model, samples=2, max_new_tokens=6)


def _models_since(bootstrap: str, since: dict[int, int]) -> list[AdapterRegistered]:
    from confluent_kafka import TopicPartition

    from schemas.serde import decode

    consumer = kafka.make_consumer(bootstrap, f"test-{uuid.uuid4()}", latency_sensitive=True)
    consumer.assign([TopicPartition(MODELS.name, p, o) for p, o in since.items()])
    found: list[AdapterRegistered] = []
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline and not found:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                found.append(decode(MODELS, message.value()))
    finally:
        consumer.close()
    return found
