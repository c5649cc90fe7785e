"""``train``'s job: one snapshot verified, trained in the foreground, registered and announced.

The steps the trainer consumer takes for one message (trainer/consumer.py),
with the settings read here (``--dpo`` on top of them) and each refusal raised
(trainer/errors.py) for the command to say, instead of sent as a dead letter.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pymongo.database import Database

from infra import adapters as registry
from infra import kafka, snapshots
from infra.warehouse import Document
from llm.models import BUNDLED_MODEL_ID, ModelNotFound, resolve
from llm.settings import LLMSettings
from schemas.training import DatasetSnapshot
from trainer.announce import register_and_announce
from trainer.errors import NothingToDo, Refused
from trainer.evaluation import Evaluate, evaluate_new
from trainer.lora import Progress, TrainConfig, TrainResult, train
from trainer.settings import TrainSettings


@dataclass(frozen=True)
class Trained:
    result: TrainResult
    active: bool  # the author's active adapter now
    evaluation: dict[str, Any] | None = None
    refused: str | None = None  # why it is not active, when it is not


@dataclass(frozen=True)
class Training:
    """A verified snapshot and what it is trained with."""

    snapshot: DatasetSnapshot
    config: TrainConfig
    base_model_name: str
    adapters_root: Path

    def run(
        self,
        db: Database[Document],
        publisher: Callable[[], kafka.Publisher],
        *,
        progress: Progress,
        evaluate: Evaluate | None = None,
    ) -> Trained:
        """Train (or reuse) the adapter, evaluate a new one, then register and announce it
        through ``publisher()`` (its promotion gated on the evaluation: trainer/promotion.py).

        The publisher is opened only once training is done: a run takes minutes to hours.
        """
        try:
            result = train(
                self.snapshot,
                self.config,
                self.adapters_root,
                base_model_name=self.base_model_name,
                progress=progress,
            )
        except ValueError as error:  # no training rows, files changed after writing
            raise NothingToDo(str(error)) from None
        evaluation = evaluate_new(evaluate, result, self.snapshot, threading.Event())
        with publisher() as announcing:
            active = register_and_announce(
                db, result, announcing, evaluation=evaluation, gate=evaluate is not None
            )
        kept = registry.registered(db, result.adapter.adapter_id)
        return Trained(result, active, kept.evaluation, None if active else kept.refused)


def prepare(db: Database[Document], home: Path, snapshot_id: str, *, dpo: bool) -> Training:
    """The snapshot under ``home``, checked against its warehouse record, and the settings."""
    directory = home / "snapshots" / snapshot_id
    if not (directory / snapshots.MANIFEST).is_file():
        raise NothingToDo(f"no snapshot {snapshot_id} under {directory.parent}")
    try:
        snapshot = snapshots.verified(db, snapshots.load(directory), directory.parent)
    except ValueError as error:  # refused, or a manifest that does not parse
        raise Refused(str(error)) from None
    try:
        llm = LLMSettings()
        settings = TrainSettings()
        if dpo:
            settings = settings.model_copy(update={"dpo": True})
        base = resolve(llm.model, home)
    except (ValidationError, ModelNotFound) as error:
        raise Refused(str(error)) from None
    return Training(
        snapshot, settings.config(base), llm.model or BUNDLED_MODEL_ID, home / "adapters"
    )
