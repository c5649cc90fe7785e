"""``eval``'s job: a twin's adapter (the one asked for, or its author's newest) evaluated.

The adapter is picked and its snapshot found first (nothing to evaluate
otherwise); then the base model and the judge are read from their settings,
and only then is the vector store opened, by the caller's ``retrieval()``:
the store is the one part another process may hold.
"""

from __future__ import annotations

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
from schemas.training import AdapterRegistered
from trainer.errors import NothingToDo, Refused
from trainer.evaluate import Retrieval, evaluate
from trainer.judge import configured_judge


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
        """trainer.evaluate's report; its store is closed on the way out."""
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
            opened.store.close()


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
