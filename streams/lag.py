"""How far the feature pipeline is behind ``twin.raw-documents``, per partition."""

from __future__ import annotations

import time

from confluent_kafka import TopicPartition
from pymongo.database import Database

from infra import kafka, warehouse
from schemas.topics import RAW_DOCUMENTS, Topic


def watermarks(bootstrap: str, topic: Topic) -> dict[int, tuple[int, int]]:
    """``(low, high)`` offsets of every partition of ``topic``."""
    consumer = kafka.make_consumer(bootstrap, "llm-twin-watermarks", latency_sensitive=True)
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic.name, p), timeout=5)
            for p in range(topic.partitions)
        }
    finally:
        consumer.close()


def ingest_lag(
    bootstrap: str, db: Database[warehouse.Document], incarnation: str
) -> dict[int, int]:
    """Records per partition that no sink has processed yet (in this broker incarnation)."""
    done = warehouse.progress(db, incarnation)
    return {
        p: max(0, high - (done.get((RAW_DOCUMENTS.name, p), low - 1) + 1))
        for p, (low, high) in watermarks(bootstrap, RAW_DOCUMENTS).items()
    }


def wait_until_caught_up(
    bootstrap: str,
    db: Database[warehouse.Document],
    incarnation: str,
    *,
    poll_s: float = 0.2,
    timeout_s: float | None = None,
) -> None:
    """Return once every partition's lag is 0 (another process runs the dataflow)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while any(ingest_lag(bootstrap, db, incarnation).values()):
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"the running dataflow did not catch up within {timeout_s} s")
        time.sleep(poll_s)
