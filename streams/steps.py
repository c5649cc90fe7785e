"""The dataflow's steps as plain functions of their input (testable without Bytewax)."""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from infra import warehouse
from schemas import serde, signing
from schemas.common import AUTHOR_SLUG_PATTERN
from schemas.documents import RawDocument
from schemas.signing import Signer
from schemas.topics import RAW_DOCUMENTS
from streams.chunk import MAX_TOKENS, OVERLAP_TOKENS, TokenCounter, chunk
from streams.clean import clean
from streams.items import Delete, Incoming, Indexed, Prepared, Rejected, Skipped, Upsert

# The header a tombstone carries its author in (producers/publish.py writes it).
AUTHOR_HEADER = "author"

log = logging.getLogger(__name__)
_SLUG = re.compile(AUTHOR_SLUG_PATTERN)


class Encoder(Protocol):
    def encode(self, texts: list[str], batch_size: int = 64) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True)
class Limits:
    # A document's content is capped (default 8 MiB).
    max_document_bytes: int = 8 * 1024 * 1024
    max_chunk_tokens: int = MAX_TOKENS
    overlap_tokens: int = OVERLAP_TOKENS


def decode(
    incoming: Incoming, limits: Limits, signer: Signer | None = None
) -> Upsert | Delete | Rejected:
    """Bytes to a typed change: a document, a tombstone, or a reason to reject it.

    With a ``signer``, only what a holder of the deployment's key signed is acted on.
    """
    try:
        signing.verify(signer, incoming.topic, incoming.key, incoming.value, incoming.headers)
    except signing.SignatureError as error:
        return incoming.reject("verify", str(error))
    if incoming.key is None:
        return incoming.reject("decode", "no key: the key must be the document id")
    try:
        text = incoming.key.decode("utf-8")
        key = uuid.UUID(text)
    except (UnicodeDecodeError, ValueError):
        return incoming.reject("decode", "the key is not a document id (a UUID)")
    if text != str(key):
        # Kafka partitions by the key's bytes: another spelling of one id could put
        # its versions on two partitions, with no order between them.
        return incoming.reject("decode", f"the key must be written {key}, not {text[:64]!r}")
    if incoming.value is None:
        # The author's name is what lets the store delete only that author's
        # document: a tombstone without one could delete anybody's.
        author = incoming.header(AUTHOR_HEADER)
        if author is None:
            return incoming.reject(
                "validate", f"a tombstone needs an {AUTHOR_HEADER} header naming its author"
            )
        if _SLUG.fullmatch(author) is None:
            return incoming.reject("validate", f"the {AUTHOR_HEADER} header is not an author slug")
        return Delete(key, author, incoming)
    try:
        document: RawDocument = serde.decode(RAW_DOCUMENTS, incoming.value)
    except serde.DecodeError as error:
        return incoming.reject("decode", error.reason)
    if document.document_id != key:
        return incoming.reject(
            "validate", f"key {key} is not the document's id {document.document_id}"
        )
    size = len(document.content.encode("utf-8"))
    if size > limits.max_document_bytes:
        return incoming.reject(
            "validate",
            f"content is {size} bytes, over the {limits.max_document_bytes}-byte document limit",
        )
    reason = warehouse.unstorable(document)
    if reason is not None:
        return incoming.reject("validate", reason)
    return Upsert(document, incoming)


@dataclass(frozen=True)
class Known:
    """What the stream remembers per document id (Bytewax keyed state, snapshotted)."""

    author: str
    version: str


Change = Prepared | Delete | Rejected


def prepare(change: Upsert | Delete | Rejected, counter: TokenCounter, limits: Limits) -> Change:
    """Clean and chunk a document; tombstones and rejections pass through."""
    if not isinstance(change, Upsert):
        return change
    try:
        cleaned = clean(change.document)
        if not cleaned.strip():
            return change.incoming.reject("clean", "empty after cleaning")
        chunks = chunk(
            cleaned,
            change.document.kind,
            counter,
            max_tokens=limits.max_chunk_tokens,
            overlap_tokens=limits.overlap_tokens,
        )
    except Exception as error:  # one odd document must not stop everyone's stream
        log.exception("cleaning or chunking %s failed", change.document.document_id)
        return change.incoming.reject("chunk", f"{type(error).__name__}: {error}")
    if not chunks:
        return change.incoming.reject("chunk", "no chunks")
    return Prepared(change.document, cleaned, chunks, change.incoming)


def track_versions(state: Known | None, change: Change) -> tuple[Known | None, Change | Skipped]:
    """Skip versions already indexed; give tombstones their author; refuse foreign tombstones.

    Runs after cleaning and chunking, so only a version that will be stored is
    remembered: a rejected one can be published again once it is fixed.
    """
    if isinstance(change, Prepared):
        document = change.document
        if state is not None and state.author != document.author.slug:
            # Ids are UUIDv5 of author + source, so this is a forged or corrupt message.
            return state, change.incoming.reject(
                "validate", f"document belongs to {state.author}, not {document.author.slug}"
            )
        if state is not None and state.version == document.version:
            return state, Skipped(change.incoming)
        return Known(document.author.slug, document.version), change
    if isinstance(change, Delete):
        if state is None:
            return None, change
        if change.author != state.author:
            return state, change.incoming.reject(
                "validate", f"tombstone from {change.author} for a document of {state.author}"
            )
        return None, Delete(change.document_id, state.author, change.incoming)
    return state, change


def embed(
    batch: list[Prepared | Delete | Skipped], encoder: Encoder, batch_size: int
) -> list[Indexed | Delete | Skipped]:
    """Vectors for every chunk of every document in the batch, encoded together.

    The batch is whatever arrived together: small at low rates (low latency),
    large under load (the encoder's best throughput). Deletes pass through in
    their place, so the store sees one document's changes in order.
    """
    texts = [c.text for item in batch if isinstance(item, Prepared) for c in item.chunks]
    vectors: npt.NDArray[np.float32] | list[list[float]] = (
        encoder.encode(texts, batch_size=batch_size) if texts else []
    )
    out: list[Indexed | Delete | Skipped] = []
    start = 0
    for item in batch:
        if not isinstance(item, Prepared):
            out.append(item)
            continue
        end = start + len(item.chunks)
        out.append(Indexed(item, [[float(x) for x in v] for v in vectors[start:end]]))
        start = end
    return out
