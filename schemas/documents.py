"""``twin.raw-documents``: one person's writing, one document per message."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, model_validator

from schemas import ids
from schemas.common import AuthorSlug, Message, Sha256Hex


class DocumentKind(StrEnum):
    """What a document is; cleaning and chunking differ per kind."""

    ARTICLE = "article"
    POST = "post"
    REPOSITORY_FILE = "repository_file"
    MESSAGE = "message"
    NOTE = "note"


class Author(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    slug: AuthorSlug
    display_name: Annotated[str, Field(min_length=1, max_length=200)]


Platform = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,39}$", examples=["medium"])]


class RawDocument(Message):
    """A document as a producer found it.

    Key: ``document_id``. A null value (tombstone) under that key means "delete
    this document everywhere". ``document_id`` and ``content_hash`` are derived
    from the other fields (``schemas.ids``) and checked on decode, so a
    corrupted or hand-edited message cannot smuggle in a mismatched id.
    """

    schema_version: Literal[1] = 1
    document_id: uuid.UUID
    author: Author
    kind: DocumentKind
    platform: Platform
    canonical_source: Annotated[str, Field(min_length=1, max_length=4096)] = Field(
        description="URL without fragment and tracking parameters, export record id, "
        "or repository URL + path: the document's identity within its author's twin",
    )
    source_url: Annotated[str, Field(max_length=4096)] | None = Field(
        default=None, description="Where a reader can see the original, when it has an address"
    )
    title: Annotated[str, Field(max_length=1000)]
    content: str
    published_at: AwareDatetime | None = None
    crawled_at: AwareDatetime
    content_hash: Sha256Hex = Field(description="sha256 of title, NUL, content: the version")
    metadata: dict[str, JsonValue] = Field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.content_hash

    @model_validator(mode="after")
    def _derived_fields_match(self) -> Self:
        expected_id = ids.document_id(self.author.slug, self.canonical_source)
        if self.document_id != expected_id:
            raise ValueError(
                f"document_id {self.document_id} is not UUIDv5 of "
                f"'{self.author.slug}:{self.canonical_source}' (expected {expected_id})"
            )
        expected_hash = ids.content_hash(self.title, self.content)
        if self.content_hash != expected_hash:
            raise ValueError(
                f"content_hash does not match title and content (expected {expected_hash})"
            )
        return self

    @classmethod
    def build(
        cls,
        *,
        author: Author,
        kind: DocumentKind,
        platform: str,
        canonical_source: str,
        title: str,
        content: str,
        crawled_at: AwareDatetime,
        source_url: str | None = None,
        published_at: AwareDatetime | None = None,
        metadata: dict[str, JsonValue] | None = None,
    ) -> RawDocument:
        """A document with its id and version derived from its fields."""
        return cls(
            document_id=ids.document_id(author.slug, canonical_source),
            author=author,
            kind=kind,
            platform=platform,
            canonical_source=canonical_source,
            source_url=source_url,
            title=title,
            content=content,
            published_at=published_at,
            crawled_at=crawled_at,
            content_hash=ids.content_hash(title, content),
            metadata=metadata or {},
        )
