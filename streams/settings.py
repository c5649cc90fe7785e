"""Settings of the feature pipeline (``llm-twin ingest``)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.common import MiB
from streams.steps import Limits


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLM_TWIN_INGEST_", extra="ignore")

    embedding_model: str | None = Field(
        default=None,
        description="sentence-transformers model id or directory; unset: the bundled MiniLM",
    )
    # At most 12 MiB: the warehouse keeps raw and cleaned text in BSON records of 16 MiB.
    max_document_bytes: int = Field(
        default=Limits.max_document_bytes, gt=0, le=12 * MiB, description="Larger: dead-lettered"
    )
    chunk_tokens: int = Field(
        default=Limits.max_chunk_tokens, ge=16, le=512, description="Largest chunk, wordpieces"
    )
    overlap_tokens: int = Field(
        default=Limits.overlap_tokens, ge=0, description="Overlap between prose chunks"
    )
    # MiniLM on 2 CPU cores: 32 beat 64 and 128 in every run of benchmarks/ingest.py.
    embed_batch_size: int = Field(default=32, ge=1, le=1024)
    # The broker answers an idle fetch only when this runs out (Tansu), so it is both
    # the latency it adds and how often an idle dataflow asks: at 10 ms an idle
    # dataflow cost Tansu ~15% of a core and itself ~8%, CPU the encoder then lacks.
    fetch_wait_ms: int = Field(default=50, ge=1, le=500, description="Kafka fetch wait")
    # Bytewax snapshots state and input offsets once per epoch: a crash replays
    # at most this much (the sinks are idempotent, so a replay only costs time).
    epoch_s: int = Field(default=1, ge=1, le=60, description="Seconds between snapshots")
    workers: int = Field(default=1, ge=1, le=32, description="Dataflow worker threads")
    # 0: off. With N, every N newly indexed documents of an author publish a dataset
    # snapshot for the trainer (streams/snapshots.py).
    snapshot_every: int = Field(default=0, ge=0, description="Documents per automatic snapshot")

    @model_validator(mode="after")
    def _overlap_within_chunk(self) -> IngestSettings:
        if self.overlap_tokens >= self.chunk_tokens:
            raise ValueError(
                f"LLM_TWIN_INGEST_OVERLAP_TOKENS ({self.overlap_tokens}) must be smaller than "
                f"LLM_TWIN_INGEST_CHUNK_TOKENS ({self.chunk_tokens})"
            )
        return self

    def limits(self) -> Limits:
        return Limits(
            max_document_bytes=self.max_document_bytes,
            max_chunk_tokens=self.chunk_tokens,
            overlap_tokens=self.overlap_tokens,
        )
