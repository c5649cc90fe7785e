"""``eval``'s job, and the trainer's: an adapter evaluated on its snapshot's held-out documents.

For ``eval``, the adapter (the one asked for, or its author's newest) is picked and its
snapshot found first (nothing to evaluate otherwise); then the base model and the judge
are read from their settings, and only then is retrieval opened, by the caller's
``retrieval()``: the store is the one part another process may hold (a running serve
answers through its API instead). ``evaluator`` is the trainer's: each new adapter
evaluated after training, to gate its promotion.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pymongo.database import Database

from infra import adapters as registry
from infra import snapshots, warehouse
from llm.models import ModelNotFound, resolve
from llm.settings import LLMSettings
from schemas.redact import without_credentials
from schemas.training import AdapterRegistered, DatasetSnapshot
from trainer.errors import NothingToDo, Refused
from trainer.evaluate import Retrieval, evaluate
from trainer.judge import configured_judge
from trainer.lora import Stopped, TrainResult


@dataclass(frozen=True)
class Evaluation:
    """An adapter, the directory of the snapshot it was trained on, and its author's name."""

    adapter: AdapterRegistered
    snapshot_directory: Path
    author_name: str

    def run(
        self,
        home: Path,
        retrieval: Callable[[], Retrieval],
        *,
        max_samples: int,
        max_new_tokens: int,
        progress: Callable[[str], None],
    ) -> dict[str, Any]:
        """trainer.evaluate's report; its retrieval is closed on the way out."""
        try:
            base = resolve(LLMSettings().model, home)
        except (ValidationError, ModelNotFound) as error:
            raise Refused(str(error)) from None
        judge = configured_judge()
        opened = retrieval()
        try:
            return evaluate(
                self.adapter,
                snapshots.load(self.snapshot_directory),
                opened,
                base_model=base,
                author_name=self.author_name,
                max_samples=max_samples,
                max_new_tokens=max_new_tokens,
                judge=judge,
                progress=progress,
            )
        finally:
            opened.close()


def pick(
    db: Database[warehouse.Document], home: Path, author: str, adapter_id: str | None
) -> Evaluation:
    """The adapter ``adapter_id`` (None: ``author``'s newest) and its snapshot under ``home``."""
    try:
        if adapter_id is not None:
            adapter = registry.get(db, adapter_id)
        else:
            mine = registry.adapters_of(db, author)
            if not mine:
                raise NothingToDo(f"{author} has no adapter: run `llm-twin train`")
            adapter = mine[-1].adapter
    except registry.UnknownAdapter as error:
        raise NothingToDo(str(error)) from None
    name = warehouse.display_name(db, author) or author
    directory = home / "snapshots" / adapter.snapshot_id
    if not (directory / snapshots.MANIFEST).is_file():
        raise NothingToDo(f"the snapshot {adapter.snapshot_id} is not under {directory.parent}")
    return Evaluation(adapter, directory, name)


log = logging.getLogger(__name__)

Evaluate = Callable[[AdapterRegistered, DatasetSnapshot, threading.Event], dict[str, Any]]


def evaluator(
    db: Database[warehouse.Document],
    retrieval: Callable[[], Retrieval],
    *,
    base_model: str,
    samples: int,
    max_new_tokens: int,
) -> Evaluate:
    """The trainer's evaluation of a new adapter (no judge: it is a person's choice in ``eval``)."""

    def run(
        adapter: AdapterRegistered, snapshot: DatasetSnapshot, stop: threading.Event
    ) -> dict[str, Any]:
        name = warehouse.display_name(db, adapter.author) or adapter.author
        opened = retrieval()
        try:
            return evaluate(
                adapter,
                snapshot,
                opened,
                base_model=base_model,
                author_name=name,
                max_samples=samples,
                max_new_tokens=max_new_tokens,
                stop=stop,
            )
        finally:
            opened.close()

    return run


def evaluate_new(
    evaluate: Evaluate | None,
    result: TrainResult,
    snapshot: DatasetSnapshot,
    stop: threading.Event,
) -> dict[str, Any] | None:
    """A new adapter's evaluation; None for a reused one (its own is kept) or when it fails.

    An adapter whose evaluation fails is still registered, unevaluated: it is not promoted
    over an evaluated one, and the reason is logged. A stop raises :class:`Stopped`.
    """
    if evaluate is None or result.reused:
        return None
    try:
        return evaluate(result.adapter, snapshot, stop)
    except Stopped:
        raise
    except Exception as error:  # noqa: BLE001  # the adapter is kept; promotion sees "not evaluated"
        reason = " ".join(without_credentials(f"{type(error).__name__}: {error}").split())
        log.warning("%s: not evaluated: %s", result.adapter.adapter_id, reason[:500])
        return None
