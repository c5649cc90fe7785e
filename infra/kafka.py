"""The one place Kafka clients are made, and the one producer lifecycle.

Every setting below that differs from librdkafka's default says why. The
measurements were taken against Tansu on this project's machines;
they hold for Apache Kafka as well.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from confluent_kafka import Consumer as _Consumer
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from pydantic import BaseModel, SecretStr

from infra.settings import PlatformSettings
from schemas.common import MAX_MESSAGE_BYTES, MiB
from schemas.serde import encode
from schemas.signing import Signer
from schemas.topics import Topic

log = logging.getLogger(__name__)

# Keys, headers and record-batch framing ride on top of a maximal value.
WIRE_MAX_BYTES = MAX_MESSAGE_BYTES + 1 * MiB


@dataclass(frozen=True)
class Brokers:
    """Where the brokers are, and how every client we make authenticates to them.

    The security settings are librdkafka's (``security.protocol`` and its
    companions), from the ``LLM_TWIN_KAFKA_*`` settings; each producer,
    consumer, admin client, Bytewax source and Faust app gets the same ones.
    """

    servers: str
    protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = field(default=None, repr=False)
    ssl_ca_file: str | None = None

    @classmethod
    def of(cls, servers: str, settings: PlatformSettings) -> Brokers:
        return cls(
            servers,
            protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=settings.kafka_sasl_password,
            ssl_ca_file=str(settings.kafka_ssl_ca_file) if settings.kafka_ssl_ca_file else None,
        )

    def security(self) -> dict[str, str]:
        """The librdkafka settings that authenticate a client (none: plaintext, no login)."""
        config: dict[str, str] = {}
        if self.protocol is not None:
            config["security.protocol"] = self.protocol
        if self.sasl_mechanism is not None:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_file is not None:
            config["ssl.ca.location"] = self.ssl_ca_file
        return config


def brokers(servers: Brokers | str) -> Brokers:
    """A bare address (tests, benchmarks, the embedded broker) is brokers without security."""
    return servers if isinstance(servers, Brokers) else Brokers(servers)


def _common(servers: Brokers | str, client_id: str) -> dict[str, Any]:
    where = brokers(servers)
    return where.security() | {
        "bootstrap.servers": where.servers,
        "client.id": client_id,
        # Our 16 MiB messages must fit in a request (responses already may be
        # up to librdkafka's default receive.message.max.bytes, 100 MB).
        "message.max.bytes": WIRE_MAX_BYTES,
    }


def producer_config(
    bootstrap_servers: Brokers | str,
    client_id: str = "llm-twin",
    *,
    one_record_per_batch: bool = False,
) -> dict[str, Any]:
    config = _common(bootstrap_servers, client_id) | {
        # Off by default in librdkafka; with it, a retried send is never written twice.
        "enable.idempotence": True,
        # A message is delivered only once every in-sync replica has it.
        "acks": "all",
        # A few ms of batching costs nothing a person notices and fills batches under load.
        "linger.ms": 5,
    }
    if one_record_per_batch:
        # Tansu 0.6 reports a partition's high watermark as the last record batch's
        # base offset + 1, so the other records of a multi-record batch are
        # invisible to lag. One record per batch keeps the watermark exact; measured
        # here, 300 messages still took 0.6 s including the producer's start.
        config["batch.num.messages"] = 1
    return config


def consumer_config(
    bootstrap_servers: Brokers | str,
    group_id: str,
    *,
    latency_sensitive: bool,
    client_id: str = "llm-twin",
) -> dict[str, Any]:
    config = _common(bootstrap_servers, client_id) | {
        "group.id": group_id,
        # With librdkafka's default (45 s) a new member of a group waited ~23 s for
        # its first message on Tansu; with 6 s / 1 s it waited ~3 s.
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        # Offsets are stored by hand (store_offsets) only after the side effect is
        # durable; auto-commit then commits just those.
        "enable.auto.offset.store": False,
        "enable.auto.commit": True,
        "auto.offset.reset": "earliest",
        "fetch.message.max.bytes": WIRE_MAX_BYTES,
        "max.partition.fetch.bytes": WIRE_MAX_BYTES,
    }
    if latency_sensitive:
        # Tansu does not wake a long-polled fetch when data arrives: produce->consume
        # p50 was ~200 ms with the default 500 ms wait and ~3 ms with 10 ms.
        config["fetch.wait.max.ms"] = 10
    return config


def make_producer(
    bootstrap_servers: Brokers | str,
    client_id: str = "llm-twin",
    *,
    one_record_per_batch: bool = False,
) -> Producer:
    return Producer(
        producer_config(bootstrap_servers, client_id, one_record_per_batch=one_record_per_batch)
    )


def make_consumer(
    bootstrap_servers: Brokers | str,
    group_id: str,
    *,
    latency_sensitive: bool,
    client_id: str = "llm-twin",
) -> _Consumer:
    return _Consumer(
        consumer_config(
            bootstrap_servers, group_id, latency_sensitive=latency_sensitive, client_id=client_id
        )
    )


def make_assigned_consumer(
    bootstrap_servers: Brokers | str, client_id: str, group_id: str, *, fetch_wait_ms: int
) -> _Consumer:
    """A consumer that assigns its partitions itself and commits nothing."""
    return _Consumer(
        _common(bootstrap_servers, client_id)
        | {"group.id": group_id, "enable.auto.commit": False, "enable.auto.offset.store": False}
        | assigned_consumer_tuning(fetch_wait_ms)
    )


def make_admin(bootstrap_servers: Brokers | str) -> AdminClient:
    where = brokers(bootstrap_servers)
    config: dict[str, Any] = where.security()
    return AdminClient(config | {"bootstrap.servers": where.servers, "client.id": "llm-twin-admin"})


def topic_config(topic: Topic) -> dict[str, str]:
    return {
        "cleanup.policy": topic.cleanup_policy,
        "retention.ms": str(topic.retention_ms),
        "max.message.bytes": str(WIRE_MAX_BYTES),
    }


def ensure_topics(
    admin: AdminClient, topics: Iterable[Topic], timeout_s: float = 10.0
) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Existing topics are left as they are (their partition count is never lowered).
    """
    futures = admin.create_topics(
        [
            NewTopic(
                t.name, num_partitions=t.partitions, replication_factor=-1, config=topic_config(t)
            )
            for t in topics
        ],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        else:
            created.append(name)
    return created


class DeliveryFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Delivered:
    topic: str
    partition: int
    offset: int
    key: bytes | None


@dataclass(frozen=True)
class Undelivered:
    topic: str
    key: bytes | None
    reason: str


@dataclass
class Publisher:
    """A producer used the way confluent-kafka's examples use one.

    ``poll(0)`` after each send serves delivery callbacks; a full local queue
    (``BufferError``) is drained with ``poll(1)`` and the send retried, never
    dropped; ``flush()`` (also on leaving a ``with`` block) waits for every
    message and raises ``DeliveryFailed`` if any was not delivered.
    ``on_delivered`` sees each delivered message's coordinates. With a
    ``signer``, every message on a signed topic carries its signature.
    """

    producer: Producer
    signer: Signer | None = None
    flush_timeout_s: float = 60.0
    on_delivered: Callable[[Delivered], None] | None = None
    delivered_count: int = 0
    failed: list[Undelivered] = field(default_factory=list)

    def publish(
        self,
        topic: Topic,
        key: str | bytes | None,
        message: BaseModel | None,
        *,
        partition: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send ``message`` (``None``: a tombstone) under ``key``."""
        if message is None and not topic.tombstones:
            raise ValueError(f"{topic.name} does not take tombstones")
        value = None if message is None else encode(message)
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": self._on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        listed: list[tuple[str, str | bytes]] = list((headers or {}).items())
        if self.signer is not None and topic.signed:
            kwargs["headers"] = self.signer.sign(topic.name, key, value, listed)
        elif listed:
            kwargs["headers"] = listed
        while True:
            try:
                self.producer.produce(topic.name, **kwargs)
                break
            except BufferError:
                self.producer.poll(1)
        self.producer.poll(0)

    def flush(self) -> None:
        remaining = self.producer.flush(self.flush_timeout_s)
        if remaining:
            reason = f"{remaining} message(s) still undelivered after {self.flush_timeout_s} s"
            self.failed.append(Undelivered("", None, reason))
        if self.failed:
            raise DeliveryFailed("; ".join(f"{u.topic}: {u.reason}" for u in self.failed))

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failed.append(Undelivered(message.topic() or "", message.key(), error.str()))
            log.error("delivery to %s failed: %s", message.topic(), error.str())
            return
        self.delivered_count += 1
        if self.on_delivered is not None:
            self.on_delivered(
                Delivered(
                    topic=message.topic() or "",
                    partition=message.partition() or 0,
                    offset=message.offset() or 0,
                    key=message.key(),
                )
            )

    def close(self) -> None:
        """Flush, then release the producer's threads and connections."""
        try:
            self.flush()
        finally:
            self.producer.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.flush()


def cluster_id(bootstrap_servers: Brokers | str, timeout_s: float = 5.0) -> str:
    """The broker's cluster id: for the embedded broker, its incarnation id.

    "Already published" is remembered per incarnation: after a memory-only broker
    restarts (new id), nothing is wrongly skipped.
    """
    metadata = make_admin(bootstrap_servers).list_topics(timeout=timeout_s)
    return str(metadata.cluster_id)


def partition_count(bootstrap_servers: Brokers | str, topic: str, timeout_s: float = 10.0) -> int:
    """How many partitions ``topic`` has on the broker now."""
    metadata = make_admin(bootstrap_servers).list_topics(topic, timeout=timeout_s)
    found = metadata.topics[topic]
    if found.error is not None:
        raise RuntimeError(f"cannot list {topic}'s partitions: {found.error.str()}")
    return len(found.partitions)


def assigned_consumer_tuning(fetch_wait_ms: int = 10) -> dict[str, Any]:
    """Fetch settings for a consumer that assigns partitions itself (Bytewax's Kafka source).

    No group settings: such a consumer keeps its offsets in its own snapshots.
    """
    return {
        # See consumer_config: Tansu answers a long-polled fetch only when it times out,
        # so this is both the added latency and how often an idle consumer asks.
        "fetch.wait.max.ms": fetch_wait_ms,
        "fetch.message.max.bytes": WIRE_MAX_BYTES,
        "max.partition.fetch.bytes": WIRE_MAX_BYTES,
        # A snapshot's offset that no longer exists (retention, a recreated topic):
        # start over from the oldest record rather than skip to the newest.
        "auto.offset.reset": "earliest",
        # Bytewax turns these into a Prometheus lag gauge we do not serve: a JSON
        # document per partition every second, parsed in Python, for nothing.
        "statistics.interval.ms": 0,
    }
