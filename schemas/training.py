"""``twin.dataset.snapshots`` and ``twin.models``: what the trainer consumes and produces."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, NonNegativeInt

from schemas.common import AuthorSlug, Message, Sha256Hex

SnapshotId = Annotated[
    str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")
]
AdapterId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


class Split(StrEnum):
    TRAIN = "train"
    TEST = "test"
    PREFERENCE = "preference"


class SplitCounts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    train: NonNegativeInt
    test: NonNegativeInt
    preference: NonNegativeInt = 0


class DocumentVersion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    document_id: uuid.UUID
    content_hash: Sha256Hex
    split: Literal["train", "test"]


class SnapshotFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    split: Split
    path: str = Field(description="Relative to the snapshot's directory")
    sha256: Sha256Hex
    rows: NonNegativeInt


class DatasetSnapshot(Message):
    """A versioned dataset built from one author's cleaned documents. Key: ``author``."""

    schema_version: Literal[1] = 1
    snapshot_id: SnapshotId
    author: AuthorSlug
    created_at: AwareDatetime
    counts: SplitCounts
    path: str = Field(description="Directory holding the snapshot's files")
    documents: list[DocumentVersion]
    files: list[SnapshotFile]


class AdapterRegistered(Message):
    """A LoRA adapter trained for one author. Key: ``author``."""

    schema_version: Literal[1] = 1
    adapter_id: AdapterId
    author: AuthorSlug
    snapshot_id: SnapshotId
    base_model: Annotated[str, Field(min_length=1)]
    path: str = Field(description="Directory in peft's adapter format")
    created_at: AwareDatetime
    config_hash: Sha256Hex = Field(description="sha256 of the training configuration")
    train_loss: float | None = None
    eval_loss: float | None = None
    eval_perplexity: float | None = None
