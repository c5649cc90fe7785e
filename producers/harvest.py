"""What a source yields: documents to publish, and failures to report (never published)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas.documents import RawDocument


@dataclass(frozen=True)
class Failure:
    """A source, or one record of it, that produced no document, and why.

    ``source`` names it precisely enough to find it: a URL, a file path, or
    ``path#record`` for one record of an export file.
    """

    source: str
    reason: str


# What a streaming source yields, one at a time, so that nobody holds all of it.
Found = RawDocument | Failure


@dataclass
class Harvest:
    documents: list[RawDocument] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    # Documents a source knows are unchanged without reading them again (HTTP 304).
    not_modified: list[uuid.UUID] = field(default_factory=list)

    @classmethod
    def of(cls, found: Iterable[Found]) -> Harvest:
        """Everything a streaming source yields, gathered (for small sources and tests)."""
        harvest = cls()
        for item in found:
            if isinstance(item, Failure):
                harvest.failures.append(item)
            else:
                harvest.documents.append(item)
        return harvest

    def found(self) -> Iterable[Found]:
        """The harvest as a stream: its failures, then its documents."""
        yield from self.failures
        yield from self.documents

    def extend(self, other: Harvest) -> None:
        self.documents += other.documents
        self.failures += other.failures
        self.not_modified += other.not_modified

    def fail(self, source: str, reason: str) -> None:
        self.failures.append(Failure(source, reason))
