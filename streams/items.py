"""What flows between the dataflow's steps, one type per shape the item takes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from schemas.dead_letters import DeadLetter
from schemas.documents import RawDocument
from streams.chunk import Chunk

# The key of every item bound for the store sink: its one partition, one ordered writer.
STORE_PARTITION = "store"


@dataclass(frozen=True)
class Incoming:
    """One record as the source read it, kept whole so a later stage can dead-letter it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: datetime | None
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name and value is not None:
                return value.decode("utf-8", errors="replace")
        return None

    def reject(self, stage: str, reason: str) -> Rejected:
        return Rejected(
            DeadLetter.for_message(
                topic=self.topic,
                partition=self.partition,
                offset=self.offset,
                key=self.key,
                value=self.value,
                stage=stage,
                reason=reason,
            )
        )


@dataclass(frozen=True)
class Rejected:
    letter: DeadLetter

    @property
    def position(self) -> tuple[str, int, int]:
        return (self.letter.source_topic, self.letter.source_partition, self.letter.source_offset)


@dataclass(frozen=True)
class Upsert:
    """A new document or a new version of one."""

    document: RawDocument
    incoming: Incoming


@dataclass(frozen=True)
class Delete:
    """A tombstone. ``author`` comes from the stream's state, the header, or the warehouse."""

    document_id: uuid.UUID
    author: str | None
    incoming: Incoming


@dataclass(frozen=True)
class Skipped:
    """A version already indexed: nothing to store, but its offset counts as processed."""

    incoming: Incoming


@dataclass(frozen=True)
class Prepared:
    """A document cleaned and chunked, waiting for its vectors."""

    document: RawDocument
    cleaned: str
    chunks: list[Chunk]
    incoming: Incoming


@dataclass(frozen=True)
class Indexed:
    """A document with one vector per chunk: ready for the stores."""

    prepared: Prepared
    vectors: list[list[float]] = field(repr=False)

    @property
    def incoming(self) -> Incoming:
        return self.prepared.incoming
