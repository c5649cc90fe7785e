"""The trainer as a consumer of ``twin.dataset.snapshots``: each snapshot becomes an adapter.

One message at a time (training takes the machine): verify the message's
signature (with a signing key) and the snapshot against its warehouse record
(its directory under the snapshots directory, its manifest and file hashes),
train (or reuse) the adapter, evaluate a new one on the snapshot's held-out
documents (its promotion is gated on that: trainer/promotion.py), record it in
the registry with its evaluation, announce it on ``twin.models`` (a reused one
is not announced again: trainer/announce.py),
and only then store the message's offset, so a trainer killed mid-training
trains that snapshot again when it restarts (from its last checkpoint). A
snapshot that cannot be trained (its files are missing here, it has no
training rows, they changed after writing) goes to the dead-letter topic with
the reason, and the next one is taken.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Message
from pymongo.database import Database

from infra import kafka, snapshots
from infra.warehouse import Document
from schemas import signing
from schemas.dead_letters import DeadLetter
from schemas.serde import DecodeError, decode
from schemas.signing import SignatureError, Signer
from schemas.topics import DATASET_SNAPSHOTS, DEAD_LETTERS
from schemas.training import AdapterRegistered, DatasetSnapshot
from trainer.announce import register_and_announce
from trainer.evaluation import Evaluate, evaluate_new
from trainer.lora import Stopped, TrainConfig, train

log = logging.getLogger(__name__)

GROUP = "llm-twin-trainer"
_POLL_S = 0.5


@dataclass(frozen=True)
class TrainerParts:
    bootstrap_servers: kafka.Brokers | str
    one_record_per_batch: bool
    db: Database[Document]
    adapters_root: Path
    snapshots_root: Path
    config: TrainConfig
    base_model_name: str
    signer: Signer | None = None
    # A new adapter's evaluation, to gate its promotion; None: perplexity alone decides.
    evaluate: Evaluate | None = None


def run(
    parts: TrainerParts,
    stop: threading.Event,
    *,
    on_adapter: Callable[[AdapterRegistered], None] = lambda adapter: None,
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """Consume snapshots until ``stop`` is set (a training run stops at its next step).

    ``on_ready``: called once the broker has answered a first poll.
    """
    consumer = kafka.make_consumer(parts.bootstrap_servers, GROUP, latency_sensitive=False)
    publisher = kafka.Publisher(
        kafka.make_producer(
            parts.bootstrap_servers,
            "llm-twin-trainer",
            one_record_per_batch=parts.one_record_per_batch,
        ),
        parts.signer,
    )
    try:
        consumer.subscribe([DATASET_SNAPSHOTS.name])
        answered = False
        while not stop.is_set():
            message = consumer.poll(_POLL_S)
            if not answered and (message is None or message.error() is None):
                answered = True
                on_ready()
            if message is None or message.error() is not None:
                continue
            try:
                adapter = _handle(message, parts, publisher, stop)
            except Stopped:  # its offset stays: the snapshot is trained again, from there
                return
            if adapter is not None:
                on_adapter(adapter)
            consumer.store_offsets(message)
    finally:
        consumer.close()
        publisher.close()


def _handle(
    message: Message, parts: TrainerParts, publisher: kafka.Publisher, stop: threading.Event
) -> AdapterRegistered | None:
    def reject(stage: str, reason: str) -> None:
        log.warning("snapshot at offset %s rejected: %s", message.offset(), reason)
        letter = DeadLetter.for_message(
            topic=message.topic() or DATASET_SNAPSHOTS.name,
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            key=message.key(),
            value=message.value(),
            stage=stage,
            reason=reason,
        )
        publisher.publish(DEAD_LETTERS, message.key(), letter)
        publisher.flush()

    try:
        signing.verify(
            parts.signer,
            message.topic() or DATASET_SNAPSHOTS.name,
            message.key(),
            message.value(),
            message.headers(),
        )
    except SignatureError as error:
        reject("verify", str(error))
        return None
    try:
        announced: DatasetSnapshot = decode(DATASET_SNAPSHOTS, message.value())
    except DecodeError as error:
        reject("decode", str(error))
        return None
    try:
        snapshot = snapshots.verified(parts.db, announced, parts.snapshots_root)
    except snapshots.SnapshotRefused as error:
        reject("verify", str(error))
        return None
    try:
        result = train(
            snapshot,
            parts.config,
            parts.adapters_root,
            base_model_name=parts.base_model_name,
            stop=stop,
        )
    except ValueError as error:  # no training rows, files changed after writing
        reject("train", str(error))
        return None
    evaluation = evaluate_new(parts.evaluate, result, snapshot, stop)
    register_and_announce(  # delivered before the offset moves on
        parts.db, result, publisher, evaluation=evaluation, gate=parts.evaluate is not None
    )
    log.info("%s: adapter %s", announced.snapshot_id, result.adapter.adapter_id)
    return result.adapter
