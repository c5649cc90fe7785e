"""Valid messages of every type, for tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from schemas.dead_letters import DeadLetter
from schemas.documents import Author, DocumentKind, RawDocument
from schemas.generation import (
    Cancel,
    DoneEvent,
    ErrorCode,
    ErrorEvent,
    GenerationRequest,
    ReplyTo,
    Source,
    Timings,
    TokenEvent,
    Usage,
)
from schemas.ids import content_hash
from schemas.training import (
    AdapterRegistered,
    DatasetSnapshot,
    DocumentVersion,
    SnapshotFile,
    Split,
    SplitCounts,
)

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def raw_document(
    slug: str = "ada", source: str = "https://example.org/posts/streams", content: str | None = None
) -> RawDocument:
    return RawDocument.build(
        author=Author(slug=slug, display_name="Ada Lovelace"),
        kind=DocumentKind.ARTICLE,
        platform="substack",
        canonical_source=source,
        source_url=source,
        title="Why we moved ingestion to Kafka",
        content=content
        if content is not None
        else "Batch jobs hid our failures.\n\nStreams made them visible: ünïcode, ✓.",
        published_at=NOW - timedelta(days=3),
        crawled_at=NOW,
        metadata={"tags": ["kafka", "streams"], "reading_minutes": 4, "draft": False},
    )


def one_of_each() -> dict[str, list[BaseModel]]:
    """At least one valid message per topic, keyed by topic name."""
    document = raw_document()
    request_id = uuid.uuid4()
    return {
        "twin.raw-documents": [document],
        "twin.dead-letters": [
            DeadLetter.for_message(
                topic="twin.raw-documents",
                partition=2,
                offset=41,
                key=b"\xffnot-utf8",
                value=b"\x00\x01 not json",
                stage="decode",
                reason="not UTF-8: byte 0 is invalid",
            )
        ],
        "twin.generation.requests": [
            GenerationRequest(
                request_id=request_id,
                author="ada",
                prompt="A LinkedIn post about why we moved ingestion to Kafka",
                deadline=NOW + timedelta(minutes=2),
                reply_to=ReplyTo(partition=3),
                created_at=NOW,
            ),
            Cancel(request_id=request_id),
        ],
        "twin.generation.tokens": [
            TokenEvent(request_id=request_id, seq=0, text="Batch"),
            TokenEvent(request_id=request_id, attempt=2, seq=0, text=" jobs"),
            DoneEvent(
                request_id=request_id,
                text="Batch jobs",
                sources=[Source(document_id=document.document_id, title="t", source_url=None)],
                usage=Usage(prompt_tokens=10, completion_tokens=2, total_tokens=12),
                timings=Timings(retrieval_ms=3.5, first_token_ms=80.0, total_ms=120.0),
            ),
            ErrorEvent(request_id=request_id, code=ErrorCode.DEADLINE_EXCEEDED, message="too late"),
        ],
        "twin.dataset.snapshots": [
            DatasetSnapshot(
                snapshot_id="ada-20261129T100000Z-0123abcd",
                author="ada",
                created_at=NOW,
                counts=SplitCounts(train=9, test=1),
                path="/data/snapshots/ada-20261129T100000Z-0123abcd",
                documents=[
                    DocumentVersion(
                        document_id=document.document_id,
                        content_hash=document.content_hash,
                        split="train",
                    )
                ],
                files=[
                    SnapshotFile(
                        split=Split.TRAIN, path="train.jsonl", sha256=content_hash("", ""), rows=9
                    )
                ],
            )
        ],
        "twin.models": [
            AdapterRegistered(
                adapter_id="ada-20261129T100000Z-0123abcd-r16",
                author="ada",
                snapshot_id="ada-20261129T100000Z-0123abcd",
                base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
                path="/data/adapters/ada-r16",
                created_at=NOW,
                config_hash=content_hash("config", "r=16"),
                train_loss=2.1,
                eval_loss=2.4,
            )
        ],
    }
