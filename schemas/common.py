"""Types shared by every message: the base model, author slugs, timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

# The slug is part of collection names and ids,
# so it is kept to characters that are safe in both.
AUTHOR_SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
AuthorSlug = Annotated[str, StringConstraints(pattern=AUTHOR_SLUG_PATTERN)]

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]

# One mebibyte, the unit of every size limit below.
MiB = 1024 * 1024

# The largest message value our serde writes or reads (docs/wire-contracts.md: topics and
# clients allow 16 MiB messages). Broker and client limits add headroom on top
# of this for keys, headers and record-batch framing (infra/kafka.py).
MAX_MESSAGE_BYTES = 16 * MiB


class Message(BaseModel):
    """Base of every message on a topic.

    Unknown fields are rejected so that a typo in a hand-written message
    (``kcat``, another language) is an error naming the field, not a silently
    dropped value. Messages are immutable once built.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


def utc_now() -> datetime:
    return datetime.now(UTC)
