"""The topic registry: each topic's name, message type, key, partitions and cleanup policy.

This is the one place a topic is declared. The local stack creates every topic
listed here; serde decodes a topic's messages with the type bound here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from pydantic import TypeAdapter

from schemas.dead_letters import DeadLetter
from schemas.documents import RawDocument
from schemas.generation import TOKENS_TOPIC, ReplyEvent, RequestMessage
from schemas.training import AdapterRegistered, DatasetSnapshot

DAY_MS = 24 * 60 * 60 * 1000
FOREVER = -1


@dataclass(frozen=True)
class Topic:
    name: str
    value_type: Any
    key: str
    partitions: int
    cleanup_policy: Literal["compact", "delete"]
    retention_ms: int
    tombstones: bool
    description: str
    # Carries authority (what to index or delete, what to train, which adapter,
    # what to generate for whom): our producers sign it, consumers verify it.
    signed: bool = False

    @cached_property
    def adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.value_type)


RAW_DOCUMENTS = Topic(
    name="twin.raw-documents",
    value_type=RawDocument,
    key="document_id",
    # Compacted: the newest version of every document stays readable, and a
    # tombstone eventually removes the document from the log as well.
    partitions=4,
    cleanup_policy="compact",
    retention_ms=FOREVER,
    tombstones=True,
    description="Documents as producers found them; a null value deletes the document.",
    signed=True,
)
DEAD_LETTERS = Topic(
    name="twin.dead-letters",
    value_type=DeadLetter,
    key="the rejected message's key",
    partitions=1,
    cleanup_policy="delete",
    retention_ms=30 * DAY_MS,
    tombstones=False,
    description="Messages a stage could not process, with the stage and the reason.",
)
GENERATION_REQUESTS = Topic(
    name="twin.generation.requests",
    value_type=RequestMessage,
    key="request_id",
    partitions=4,
    cleanup_policy="delete",
    retention_ms=1 * DAY_MS,
    tombstones=False,
    description="Generation requests and cancellations.",
    signed=True,
)
GENERATION_TOKENS = Topic(
    name=TOKENS_TOPIC,
    value_type=ReplyEvent,
    key="request_id",
    # One partition per API process or CLI waiting for replies (reply_to.partition).
    partitions=16,
    cleanup_policy="delete",
    retention_ms=1 * DAY_MS,
    tombstones=False,
    description="Token, done and error events, on the partition each request names.",
)
DATASET_SNAPSHOTS = Topic(
    name="twin.dataset.snapshots",
    value_type=DatasetSnapshot,
    key="author",
    partitions=1,
    cleanup_policy="delete",
    retention_ms=FOREVER,
    tombstones=False,
    description="Manifests of dataset snapshots, for the trainer.",
    signed=True,
)
MODELS = Topic(
    name="twin.models",
    value_type=AdapterRegistered,
    key="author",
    partitions=1,
    cleanup_policy="delete",
    retention_ms=FOREVER,
    tombstones=False,
    description="Adapters trained per author, for serving.",
    signed=True,
)

REGISTRY: dict[str, Topic] = {
    topic.name: topic
    for topic in (
        RAW_DOCUMENTS,
        DEAD_LETTERS,
        GENERATION_REQUESTS,
        GENERATION_TOKENS,
        DATASET_SNAPSHOTS,
        MODELS,
    )
}


def topic(name: str) -> Topic:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(REGISTRY)
        raise KeyError(f"unknown topic {name!r}; known topics: {known}") from None
