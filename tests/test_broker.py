"""Our messages through the real broker (Tansu, started by the launcher), with our serde."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]

from infra import kafka
from schemas import serde
from schemas.common import MiB
from schemas.topics import RAW_DOCUMENTS, REGISTRY, topic
from tests.factories import one_of_each, raw_document
from tests.support import read_topic, topic_ends


def _producer(bootstrap: str) -> Producer:
    return kafka.make_producer(bootstrap, one_record_per_batch=True)


def test_every_registry_topic_exists_with_its_partitions_and_policy(bootstrap_servers: str) -> None:
    admin = kafka.make_admin(bootstrap_servers)
    metadata = admin.list_topics(timeout=5)
    for name, entry in REGISTRY.items():
        assert name in metadata.topics
        assert len(metadata.topics[name].partitions) == entry.partitions
    configs = admin.describe_configs([ConfigResource("topic", "twin.raw-documents")])
    values = {k: v.value for k, v in next(iter(configs.values())).result().items()}
    assert values["cleanup.policy"] == "compact"
    assert int(values["max.message.bytes"]) >= 16 * MiB


def test_every_message_type_round_trips_through_the_broker(bootstrap_servers: str) -> None:
    examples = one_of_each()
    starts = {name: topic_ends(bootstrap_servers, name) for name in examples}
    with kafka.Publisher(_producer(bootstrap_servers)) as publisher:
        for name, messages in examples.items():
            for message in messages:
                # Replies go to the partition the request names, never by key hash.
                partition = 3 if name == "twin.generation.tokens" else None
                key = str(getattr(message, "request_id", getattr(message, "author", "")))
                if hasattr(message, "document_id"):
                    key = str(message.document_id)
                publisher.publish(REGISTRY[name], key, message, partition=partition)
    for name, messages in examples.items():
        received = read_topic(bootstrap_servers, name, starts[name], len(messages))
        decoded = [serde.decode(topic(name), m.value()) for m in received]
        if name == "twin.generation.tokens":
            assert {m.partition() for m in received} == {3}
            assert decoded == messages  # one partition: in order
        else:
            assert sorted(decoded, key=serde.encode) == sorted(messages, key=serde.encode)


def test_tombstone_round_trips(bootstrap_servers: str) -> None:
    document = raw_document(source="https://example.org/to-forget")
    start = topic_ends(bootstrap_servers, RAW_DOCUMENTS.name)
    with kafka.Publisher(_producer(bootstrap_servers)) as publisher:
        publisher.publish(RAW_DOCUMENTS, str(document.document_id), document)
        publisher.publish(RAW_DOCUMENTS, str(document.document_id), None)
    first, second = read_topic(bootstrap_servers, RAW_DOCUMENTS.name, start, 2)
    assert first.key() == second.key() == str(document.document_id).encode()
    assert first.partition() == second.partition()  # same key, same partition: order kept
    assert serde.decode(RAW_DOCUMENTS, first.value()) == document
    assert second.value() is None
    assert serde.decode(RAW_DOCUMENTS, second.value()) is None


def test_a_15_mib_document_round_trips(bootstrap_servers: str) -> None:
    document = raw_document(source="https://example.org/huge", content="word " * (3 * MiB))
    start = topic_ends(bootstrap_servers, RAW_DOCUMENTS.name)
    with kafka.Publisher(_producer(bootstrap_servers)) as publisher:
        publisher.publish(RAW_DOCUMENTS, str(document.document_id), document)
    (received,) = read_topic(bootstrap_servers, RAW_DOCUMENTS.name, start, 1)
    assert len(received.value() or b"") > 15 * MiB
    assert serde.decode(RAW_DOCUMENTS, received.value()) == document


def test_the_high_watermark_counts_every_record_we_produce(bootstrap_servers: str) -> None:
    """Lag (``ingest --until-idle``) is computed from it, so it must not under-count."""
    start = topic_ends(bootstrap_servers, RAW_DOCUMENTS.name)
    document = raw_document(source="https://example.org/watermark")
    with kafka.Publisher(_producer(bootstrap_servers)) as publisher:
        for _ in range(5):
            publisher.publish(RAW_DOCUMENTS, str(document.document_id), document, partition=0)
    assert topic_ends(bootstrap_servers, RAW_DOCUMENTS.name)[0] == start[0] + 5


def test_undeliverable_messages_are_reported_not_dropped() -> None:
    config = kafka.producer_config("127.0.0.1:1") | {"message.timeout.ms": 1500}
    publisher = kafka.Publisher(Producer(config), flush_timeout_s=10)
    publisher.publish(RAW_DOCUMENTS, "k", raw_document())
    with pytest.raises(kafka.DeliveryFailed, match=r"twin\.raw-documents"):
        publisher.flush()
    assert publisher.delivered_count == 0


def test_tombstones_are_refused_where_the_registry_forbids_them(bootstrap_servers: str) -> None:
    with (
        kafka.Publisher(_producer(bootstrap_servers)) as publisher,
        pytest.raises(ValueError, match="tombstones"),
    ):
        publisher.publish(topic("twin.generation.requests"), "k", None)
    assert publisher.delivered_count == 0


# -- kcat: a client we did not write -------------------------------------------


def _kcat() -> list[str]:
    binary = shutil.which("kcat")
    if binary is None:
        pytest.skip("kcat is not installed (scripts/test installs it where apt-get can)")
    return [binary]


def _kcat_env() -> dict[str, str]:
    # Debian's kcat links librdkafka 2.0.2, whose ApiVersions request Tansu answers
    # in a way that old release cannot parse; the librdkafka confluent-kafka ships works.
    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    preload = next(libs.glob("librdkafka*.so*"))
    return os.environ | {"LD_PRELOAD": str(preload)}


def test_kcat_lists_every_registry_topic(bootstrap_servers: str) -> None:
    listing = subprocess.run(
        [*_kcat(), "-b", bootstrap_servers, "-L", "-J"],
        env=_kcat_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    topics = {t["topic"]: len(t["partitions"]) for t in json.loads(listing.stdout)["topics"]}
    for name, entry in REGISTRY.items():
        assert topics[name] == entry.partitions


def test_a_hand_written_document_produced_with_kcat_decodes(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    content = "Written by hand, produced with kcat."
    record = {
        "document_id": str(
            uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, "llm-twin/document"), "ada:note:kcat-1")
        ),
        "author": {"slug": "ada", "display_name": "Ada"},
        "kind": "note",
        "platform": "notes",
        "canonical_source": "note:kcat-1",
        "title": "kcat",
        "content": content,
        "crawled_at": "2026-11-29T10:00:00+00:00",
        "content_hash": __import__("hashlib").sha256(f"kcat\x00{content}".encode()).hexdigest(),
    }
    good = json.dumps(record)
    bad = json.dumps(record | {"kind": "poem"})
    start = topic_ends(bootstrap_servers, RAW_DOCUMENTS.name)
    subprocess.run(
        [
            *_kcat(),
            *("-b", bootstrap_servers, "-t", RAW_DOCUMENTS.name, "-P", "-K", "\t", "-p", "0"),
            *("-X", "batch.num.messages=1"),  # see infra/kafka.py: Tansu's high watermark
        ],
        input=f"{record['document_id']}\t{good}\n{record['document_id']}\t{bad}\n",
        env=_kcat_env(),
        text=True,
        timeout=30,
        check=True,
    )
    first, second = read_topic(bootstrap_servers, RAW_DOCUMENTS.name, start, 2)
    document = serde.decode(RAW_DOCUMENTS, first.value())
    assert document.content == content
    assert str(document.document_id) == record["document_id"]
    with pytest.raises(serde.DecodeError) as caught:
        serde.decode(RAW_DOCUMENTS, second.value())
    assert caught.value.errors[0].field == "kind"
