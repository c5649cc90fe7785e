"""``twin.dead-letters``: every message a stage could not process, and why."""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, NonNegativeInt

from schemas.common import Message, Sha256Hex, utc_now

# A dead letter keeps the original's size, its sha256 and its first 64 KiB.
HEAD_BYTES = 64 * 1024
# Keys are ids in practice; a key of megabytes would make the dead letter itself too large.
KEY_BYTES = 1024


class DeadLetter(Message):
    """A rejected message. Key: the original message's key.

    ``head_base64`` is base64 because the original may not be UTF-8 at all.
    """

    schema_version: Literal[1] = 1
    source_topic: str
    source_partition: NonNegativeInt
    source_offset: NonNegativeInt
    key: str | None = Field(
        description=(
            "The original key, decoded as UTF-8 (undecodable bytes as \\x escapes); "
            "a key over 1 KiB is cut there and ends with how long it was"
        )
    )
    stage: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$", examples=["decode"])]
    reason: Annotated[str, Field(min_length=1, max_length=4000)]
    rejected_at: AwareDatetime
    size: NonNegativeInt = Field(description="Size of the original value in bytes")
    sha256: Sha256Hex = Field(description="sha256 of the whole original value")
    head_base64: str = Field(description="The original value's first 64 KiB, base64")

    @property
    def head(self) -> bytes:
        return base64.b64decode(self.head_base64)

    @classmethod
    def for_message(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        stage: str,
        reason: str,
    ) -> DeadLetter:
        original = value or b""
        return cls(
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            key=None if key is None else _shown_key(key),
            stage=stage,
            reason=reason[:4000],
            rejected_at=utc_now(),
            size=len(original),
            sha256=hashlib.sha256(original).hexdigest(),
            head_base64=base64.b64encode(original[:HEAD_BYTES]).decode("ascii"),
        )


def _shown_key(key: bytes) -> str:
    shown = key[:KEY_BYTES].decode("utf-8", errors="backslashreplace")
    return shown if len(key) <= KEY_BYTES else f"{shown}… ({len(key)} bytes)"
