"""How far the feature pipeline is behind ``twin.raw-documents``, per partition."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import TopicPartition
from pymongo.database import Database

from infra import kafka, warehouse
from schemas.topics import RAW_DOCUMENTS, Topic


def watermarks(bootstrap: kafka.Brokers | str, topic: Topic) -> dict[int, tuple[int, int]]:
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
    bootstrap: kafka.Brokers | str, db: Database[warehouse.Document], incarnation: str
) -> dict[int, int]:
    """Records per partition that no sink has processed yet (in this broker incarnation)."""
    done = warehouse.progress(db, incarnation)
    return {
        p: max(0, high - (done.get((RAW_DOCUMENTS.name, p), low - 1) + 1))
        for p, (low, high) in watermarks(bootstrap, RAW_DOCUMENTS).items()
    }


def wait_until_caught_up(
    bootstrap: kafka.Brokers | str,
    db: Database[warehouse.Document],
    incarnation: str,
    *,
    still_running: Callable[[], bool],
    poll_s: float = 0.2,
) -> bool:
    """Wait until every partition's lag is 0, while another process runs the dataflow.

    True once caught up; False as soon as ``still_running`` says that process is
    gone (the caller then runs the dataflow itself).
    """
    while any(ingest_lag(bootstrap, db, incarnation).values()):
        if not still_running():
            return False
        time.sleep(poll_s)
    return True
