"""A trained adapter made known: judged, recorded in the registry, announced on ``twin.models``.

The trainer is the registry's one writer (with the files' hashes and the
adapter's evaluation); promotion (trainer/promotion.py) compares that
evaluation with the active adapter's, and a refusal is recorded with its
reason. The announcement only tells a running serve to read the registry
again, so an adapter that was reused (the same snapshot and config, already
registered and announced when it was trained) is recorded again, with the
evaluation kept from then, to be active if it is not worse, but not announced
twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database

from infra import adapters as registry
from infra import kafka
from infra.warehouse import Document
from schemas.topics import MODELS
from trainer import promotion
from trainer.lora import TrainResult


def register_and_announce(
    db: Database[Document],
    result: TrainResult,
    publisher: kafka.Publisher,
    *,
    evaluation: dict[str, Any] | None = None,
    gate: bool = True,
) -> bool:
    """Judge and register ``result``'s adapter, announce a new one, wait until it is delivered.

    ``evaluation``: its report (trainer/evaluate.py); None when it was not evaluated.
    ``gate``: False when evaluation is turned off (``LLM_TWIN_TRAIN_EVAL_SAMPLES=0``):
    held-out perplexity alone decides.
    True if it became its author's active adapter. Delivered before this returns: the
    consumer stores its message's offset only after it.
    """
    adapter = result.adapter
    if evaluation is None and result.reused:
        evaluation = registry.evaluation_of(db, adapter.adapter_id)
    current = registry.active(db, adapter.author)
    against = None
    if current is not None and current.adapter_id != adapter.adapter_id:
        against = registry.evaluation_of(db, current.adapter_id)
    refused = promotion.refusal(evaluation, against) if gate else None
    active = registry.register(
        db, adapter, datetime.now(UTC), evaluation=evaluation, refused=refused
    )
    if not result.reused:
        publisher.publish(MODELS, adapter.author, adapter)
        publisher.flush()
    return active
