"""The feature pipeline, as one Bytewax dataflow.

    raw record ─ decode ─ clean + chunk ─ skip unchanged ─ embed ─ store
                    └─────────── rejected ──────────┘         └ dead letters

Built by a function that takes its source and sinks: the entry point plugs in
Kafka, Qdrant and the warehouse; tests plug in ``TestingSource`` / ``TestingSink``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from schemas.dead_letters import DeadLetter
from schemas.signing import Signer
from streams import steps
from streams.chunk import TokenCounter
from streams.items import STORE_PARTITION, Delete, Incoming, Indexed, Prepared, Rejected, Skipped


def build_flow(
    source: Source[Any],
    store: Sink[tuple[str, Indexed | Delete | Skipped]],
    dead_letters: Sink[DeadLetter],
    *,
    encoder: steps.Encoder,
    counter: TokenCounter,
    limits: steps.Limits,
    embed_batch_size: int = 64,
    to_incoming: Callable[[Any], Incoming] = lambda record: record,
    signer: Signer | None = None,
) -> Dataflow:
    flow = Dataflow("ingest")
    records = op.map("records", op.input("source", flow, source), to_incoming)
    # Incoming
    decoded = op.map("decode", records, lambda r: steps.decode(r, limits, signer))
    # Upsert | Delete | Rejected
    prepared = op.map("clean-and-chunk", decoded, lambda c: steps.prepare(c, counter, limits))
    # Prepared | Delete | Rejected
    keyed = op.key_on("by-document", prepared, _document_key)
    tracked = op.stateful_map("skip-unchanged", keyed, steps.track_versions)
    changes = op.key_rm("unkey", tracked)
    # Prepared | Delete | Rejected | Skipped, each document's versions in order
    branch = op.branch("rejected", changes, lambda item: isinstance(item, Rejected))
    # Deletes travel with the documents being embedded so that an update and a
    # tombstone of one document reach the store in the order they were written.
    ready = op.flat_map_batch(
        "embed",
        branch.falses,
        lambda batch: steps.embed(batch, encoder, embed_batch_size),  # type: ignore[arg-type]  # the branch removed Rejected
    )
    # Indexed | Delete | Skipped
    # Keyed for the store sink's one partition: one ordered writer for every change.
    op.output("store", op.key_on("to-store", ready, lambda _: STORE_PARTITION), store)
    op.output("dead-letters", op.map("letters", branch.trues, _letter), dead_letters)
    return flow


def _document_key(change: Prepared | Delete | Rejected) -> str:
    if isinstance(change, Prepared):
        return str(change.document.document_id)
    if isinstance(change, Delete):
        return str(change.document_id)
    # Rejections carry no trustworthy id: spread them by source position.
    return f"rejected:{change.letter.source_partition}:{change.letter.source_offset}"


def _letter(item: Prepared | Delete | Rejected | Skipped) -> DeadLetter:
    assert isinstance(item, Rejected)  # the branch above let only rejections through
    return item.letter
