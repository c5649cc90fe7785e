"""The entry point of the feature pipeline: Kafka in, Qdrant and the warehouse out, with recovery.

Bytewax snapshots every stateful step and the input offsets once per epoch, under
``LLM_TWIN_HOME/recovery/<broker incarnation>``: a killed dataflow resumes from
its last snapshot, and the sinks are idempotent, so the replay duplicates
nothing. Snapshots of another broker incarnation are discarded (their offsets
mean nothing to a new memory-only broker).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bytewax._bytewax import cli_main, init_db_dir
from bytewax.connectors.kafka import KafkaSource, KafkaSourceMessage
from bytewax.inputs import StatefulSourcePartition
from bytewax.recovery import RecoveryConfig

from infra import kafka, warehouse
from schemas.signing import Signer
from schemas.topics import RAW_DOCUMENTS
from streams.dataflow import build_flow
from streams.items import Incoming
from streams.settings import IngestSettings
from streams.sinks import DeadLetters, DeadLetterSink, Progress, StoreSink, StoreWriter
from streams.snapshots import SnapshotTrigger
from vectorstore.embedder import Embedder
from vectorstore.store import VectorStore

log = logging.getLogger(__name__)

# Records taken from a partition at a time. Small enough that the next batch is
# embedded while the last one is written (the store sink writes in the
# background), large enough to fill the encoder's batches.
SOURCE_BATCH = 64


@dataclass(frozen=True)
class Connections:
    bootstrap_servers: kafka.Brokers | str
    mongodb_uri: str
    mongodb_database: str
    incarnation_id: str
    one_record_per_batch: bool
    # Verifies every raw document and tombstone; None: no key configured, nothing verified.
    signer: Signer | None = None


@dataclass(frozen=True)
class EmbedderTokens:
    """The embedder's own tokenizer, as the chunker counts tokens."""

    embedder: Embedder

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return self.embedder.token_offsets(text)


class RawDocumentsSource(KafkaSource):
    """Bytewax's Kafka source over ``twin.raw-documents``, with our consumer tuning.

    Bytewax hands its extra settings to the admin client that lists partitions
    too, and librdkafka warns once per consumer-only setting there; this lists
    partitions with a plain admin client instead (same ``"<partition>-<topic>"`` names).
    """

    def __init__(
        self,
        bootstrap_servers: kafka.Brokers | str,
        *,
        tail: bool,
        fetch_wait_ms: int,
        stop: threading.Event | None = None,
    ) -> None:
        where = kafka.brokers(bootstrap_servers)
        super().__init__(
            brokers=[where.servers],
            topics=[RAW_DOCUMENTS.name],
            tail=tail,
            # Offset 0, not OFFSET_BEGINNING: resolving "beginning" took librdkafka
            # ~0.5 s against Tansu, and where 0 is gone (retention, compaction) the
            # consumer's auto.offset.reset=earliest lands on the oldest record anyway.
            starting_offset=0,
            add_config=where.security() | kafka.assigned_consumer_tuning(fetch_wait_ms),
            batch_size=SOURCE_BATCH,
        )
        self.bootstrap_servers = where
        self.stop = stop

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> Any:
        part: StatefulSourcePartition[Any, int] = super().build_part(  # type: ignore[assignment]
            step_id, for_part, resume_state
        )
        return part if self.stop is None else _Stoppable(part, self.stop)

    def list_parts(self) -> list[str]:
        metadata = kafka.make_admin(self.bootstrap_servers).list_topics(RAW_DOCUMENTS.name, 10)
        topic = metadata.topics[RAW_DOCUMENTS.name]
        if topic.error is not None:
            raise RuntimeError(f"cannot list {topic.topic}'s partitions: {topic.error.str()}")
        return [f"{p}-{RAW_DOCUMENTS.name}" for p in sorted(topic.partitions)]


class _Stoppable(StatefulSourcePartition[Any, int]):
    """A partition that ends, as at the end of its data, once ``stop`` is set.

    How a dataflow sharing its process (``serve``, ``up``) is stopped from
    another thread: every partition ends, Bytewax takes its last snapshot, and
    ``run`` returns.
    """

    def __init__(self, inner: StatefulSourcePartition[Any, int], stop: threading.Event) -> None:
        self._inner = inner
        self._stop = stop

    def next_batch(self) -> Iterable[Any]:
        if self._stop.is_set():
            raise StopIteration
        return self._inner.next_batch()

    def next_awake(self) -> datetime | None:
        return self._inner.next_awake()

    def snapshot(self) -> int:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


def to_incoming(message: KafkaSourceMessage[bytes | None, bytes | None]) -> Incoming:
    kind, milliseconds = message.timestamp or (0, 0)
    timestamp = datetime.fromtimestamp(milliseconds / 1000, UTC) if kind and milliseconds else None
    return Incoming(
        topic=message.topic or RAW_DOCUMENTS.name,
        partition=message.partition or 0,
        offset=message.offset or 0,
        key=message.key,
        value=message.value,
        timestamp=timestamp,
        headers=tuple((k, v) for k, v in message.headers or []),
    )


def check_chunk_size(settings: IngestSettings, embedder: Embedder) -> None:
    """Refuse chunks the encoder would silently truncate."""
    if settings.chunk_tokens > embedder.max_text_tokens:
        raise ValueError(
            f"LLM_TWIN_INGEST_CHUNK_TOKENS is {settings.chunk_tokens}, but {embedder.model_name} "
            f"reads at most {embedder.max_text_tokens} tokens of text: the rest of each chunk "
            "would never be searchable"
        )


def recovery_dir(home: Path, incarnation_id: str) -> Path:
    root = home / "recovery"
    directory = root / incarnation_id
    if root.exists():
        for stale in root.iterdir():
            if stale != directory:
                log.warning("discarding recovery state of another broker incarnation: %s", stale)
                shutil.rmtree(stale, ignore_errors=True)
    if not directory.exists():
        directory.mkdir(parents=True)
        init_db_dir(directory, 1)
    return directory


def run(
    connections: Connections,
    settings: IngestSettings,
    *,
    home: Path,
    until_idle: bool,
    embedder: Embedder,
    store: VectorStore,
    stop: threading.Event | None = None,
) -> None:
    """Run the dataflow; with ``until_idle``, return once every partition is caught up.

    ``embedder`` and ``store``: what the process opened (``serve`` shares its
    store with its retrieval, as Qdrant local mode admits one client); the
    store is left open. ``stop``: set from another thread to end the dataflow
    after a last snapshot.
    """
    check_chunk_size(settings, embedder)
    client = warehouse.connect(connections.mongodb_uri)
    # One producer for every dead letter, shared by the worker threads (librdkafka's
    # producer is thread-safe); closed when the dataflow ends.
    publisher = kafka.Publisher(
        kafka.make_producer(
            connections.bootstrap_servers,
            "llm-twin-ingest",
            one_record_per_batch=connections.one_record_per_batch,
        ),
        connections.signer,
    )
    try:
        # tail=False: the source ends at each partition's end (``--until-idle``).
        source = RawDocumentsSource(
            connections.bootstrap_servers,
            tail=not until_idle,
            fetch_wait_ms=settings.fetch_wait_ms,
            stop=stop,
        )
        db = client[connections.mongodb_database]
        progress = Progress(db, connections.incarnation_id)
        dead_letters = DeadLetters(publisher, progress)
        trigger = (
            SnapshotTrigger(db, publisher, home / "snapshots", settings.snapshot_every)
            if settings.snapshot_every
            else None
        )
        writer = StoreWriter(
            store, db, embedder.model_name, progress, dead_letters.send, on_indexed=trigger
        )
        flow = build_flow(
            source,
            StoreSink(writer),
            DeadLetterSink(dead_letters),
            encoder=embedder,
            counter=EmbedderTokens(embedder),
            limits=settings.limits(),
            embed_batch_size=settings.embed_batch_size,
            to_incoming=to_incoming,
            signer=connections.signer,
        )
        try:
            cli_main(
                flow,
                workers_per_process=settings.workers,
                epoch_interval=timedelta(seconds=settings.epoch_s),
                recovery_config=RecoveryConfig(str(recovery_dir(home, connections.incarnation_id))),
            )
        except Exception as error:
            # Ctrl-C lands inside whichever step is running, and Bytewax wraps it.
            if _interrupted(error):
                raise KeyboardInterrupt from None
            raise
    finally:
        publisher.close()
        client.close()


def _interrupted(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, KeyboardInterrupt):
            return True
        error = error.__cause__ or error.__context__
    return False
