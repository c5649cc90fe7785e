"""The stream-side trigger: every N newly indexed documents of an author, a snapshot."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from pathlib import Path

from confluent_kafka import TopicPartition

from infra import kafka, warehouse
from schemas.serde import decode
from schemas.topics import DATASET_SNAPSHOTS
from schemas.training import DatasetSnapshot
from streams.snapshots import SnapshotTrigger
from tests.support import topic_ends
from tests.trainer.test_training import index, voice_text


def announced(bootstrap: str, since: dict[int, int], author: str) -> list[DatasetSnapshot]:
    consumer = kafka.make_consumer(bootstrap, f"test-{uuid.uuid4()}", latency_sensitive=True)
    consumer.assign([TopicPartition(DATASET_SNAPSHOTS.name, p, o) for p, o in since.items()])
    found = []
    deadline = time.monotonic() + 3
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                snapshot = decode(DATASET_SNAPSHOTS, message.value())
                if snapshot.author == author:
                    found.append(snapshot)
    finally:
        consumer.close()
    return found


def test_every_n_new_documents_of_an_author_publish_a_snapshot(
    bootstrap_servers: str, mongodb_uri: str, tmp_path: Path
) -> None:
    author = f"zed-{uuid.uuid4().hex[:6]}"
    rng = random.Random(7)
    since = topic_ends(bootstrap_servers, DATASET_SNAPSHOTS.name)
    client = warehouse.connect(mongodb_uri)
    producer = kafka.make_producer(bootstrap_servers, one_record_per_batch=True)
    try:
        db = client["trigger_tests"]
        with kafka.Publisher(producer) as publisher:
            trigger = SnapshotTrigger(db, publisher, tmp_path, every=3)
            index(db, author, [voice_text(rng) for _ in range(2)])
            trigger(Counter({author: 2}))
            assert not list(tmp_path.iterdir()), "2 of 3: no snapshot yet"
            index(db, author, [voice_text(rng) for _ in range(2)], first=2)
            trigger(Counter({author: 2, "someone-else": 1}))
            trigger(Counter({author: 1}))  # 2 since the last one
            trigger(Counter({author: 1}))  # 3: the second snapshot
    finally:
        client.close()
    snapshots = announced(bootstrap_servers, since, author)
    assert len(snapshots) == 2
    assert [s.counts.train + s.counts.test for s in snapshots] == [4, 4]
    assert all(Path(s.path, "manifest.json").is_file() for s in snapshots)
