"""``twin.generation.requests`` and ``twin.generation.tokens`` (docs/wire-contracts.md).

Each API process or CLI owns one partition of the tokens topic and reads only
that one; a request names it in ``reply_to`` so replies never scatter. Every
event carries ``request_id`` and ``attempt``: a retry after a worker dies is a
new attempt whose tokens start again at ``seq`` 0. Exactly one ``done`` or
``error`` ends a request.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt

from schemas.common import AuthorSlug, Message

TOKENS_TOPIC = "twin.generation.tokens"


class ReplyTo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: Literal["twin.generation.tokens"] = "twin.generation.tokens"
    partition: NonNegativeInt


class GenerationRequest(Message):
    """Draft a text in the author's voice. Key: ``request_id``."""

    type: Literal["generate"] = "generate"
    schema_version: Literal[1] = 1
    request_id: uuid.UUID
    author: AuthorSlug
    prompt: Annotated[str, Field(min_length=1, max_length=32_000)]
    # Bounds keep one request from holding a worker for long: at ~11 tokens/s on
    # a CPU, 2,048 new tokens is already minutes.
    max_new_tokens: Annotated[int, Field(ge=1, le=2048)] = 512
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.7
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    # Against loops; None: the backend's default (the local model's is measured).
    repetition_penalty: Annotated[float, Field(ge=1.0, le=2.0)] | None = None
    no_repeat_ngram_size: Annotated[int, Field(ge=0, le=16)] | None = None
    deadline: AwareDatetime
    reply_to: ReplyTo
    created_at: AwareDatetime


class Cancel(Message):
    """Stop generating for ``request_id``. Key: ``request_id``."""

    type: Literal["cancel"] = "cancel"
    schema_version: Literal[1] = 1
    request_id: uuid.UUID


RequestMessage = Annotated[GenerationRequest | Cancel, Field(discriminator="type")]


class TokenEvent(Message):
    type: Literal["token"] = "token"
    request_id: uuid.UUID
    attempt: PositiveInt = 1
    seq: NonNegativeInt
    text: str


class Source(BaseModel):
    """A document the answer drew on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    document_id: uuid.UUID
    title: str
    source_url: str | None


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_tokens: NonNegativeInt
    completion_tokens: NonNegativeInt
    total_tokens: NonNegativeInt


class Timings(BaseModel):
    """Milliseconds spent in each phase, as the worker measured them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue_ms: Annotated[float, Field(ge=0)] | None = None
    retrieval_ms: Annotated[float, Field(ge=0)] | None = None
    first_token_ms: Annotated[float, Field(ge=0)] | None = None
    total_ms: Annotated[float, Field(ge=0)] | None = None


class DoneEvent(Message):
    type: Literal["done"] = "done"
    request_id: uuid.UUID
    attempt: PositiveInt = 1
    text: str
    sources: list[Source] = Field(default_factory=list)
    usage: Usage
    timings: Timings = Field(default_factory=Timings)


class ErrorCode(StrEnum):
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CANCELLED = "cancelled"
    INVALID_REQUEST = "invalid_request"
    FORBIDDEN = "forbidden"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    BACKEND_ERROR = "backend_error"
    WORKER_LOST = "worker_lost"
    INTERNAL = "internal"


class ErrorEvent(Message):
    type: Literal["error"] = "error"
    request_id: uuid.UUID
    attempt: PositiveInt = 1
    code: ErrorCode
    message: Annotated[str, Field(max_length=4000)]


ReplyEvent = Annotated[TokenEvent | DoneEvent | ErrorEvent, Field(discriminator="type")]
