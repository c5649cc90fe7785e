"""A trained adapter made known: recorded in the registry, then announced on ``twin.models``.

The trainer is the registry's one writer (with the files' hashes); the
announcement only tells a running serve to read the registry again, so an
adapter that was reused (the same snapshot and config, already registered and
announced when it was trained) is recorded again, to be active if it is not
worse, but not announced twice.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pymongo.database import Database

from infra import adapters as registry
from infra import kafka
from infra.warehouse import Document
from schemas.topics import MODELS
from trainer.lora import TrainResult


def register_and_announce(
    db: Database[Document], result: TrainResult, publisher: kafka.Publisher
) -> bool:
    """Register ``result``'s adapter, announce a new one and wait until it is delivered.

    True if it became its author's active adapter. Delivered before this returns:
    the consumer stores its message's offset only after it.
    """
    adapter = result.adapter
    active = registry.register(db, adapter, datetime.now(UTC))
    if not result.reused:
        publisher.publish(MODELS, adapter.author, adapter)
        publisher.flush()
    return active
