"""The adapter registry: every LoRA adapter trained for an author, and which one is active.

Kept in the warehouse (collection ``adapters``), written only by the trainer
that made the adapter (with the sha256 of each of its files) and when a person
activates or rolls back. ``twin.models`` is a notification: serving re-reads
this registry when one arrives and never writes it from a message, and
before loading an adapter it checks that the adapter's directory is under the
adapters directory and that its files are the ones recorded.

The policy for a new adapter: it becomes active only if its held-out
perplexity is not worse than the active one's (an adapter without a
measurement never replaces a measured one) and its trainer did not refuse it
on its evaluation (style, attribution and copying against the active one's:
trainer/promotion.py). The evaluation report and the refusal's reason are kept
with the adapter. Every change of the active adapter is appended to its
author's history, so a rollback returns to the one before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pymongo.database import Database

from infra.warehouse import Document
from schemas.training import AdapterRegistered

ADAPTERS = "adapters"
# {_id: author, active: adapter id | None, history: [adapter ids, oldest first]}
ACTIVE_ADAPTERS = "active_adapters"


class UnknownAdapter(LookupError):
    pass


class AdapterRefused(ValueError):
    """An adapter whose files are not where, or not what, the trainer recorded."""


def file_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory``, by path relative to it (links refused)."""
    hashes = {}
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            raise AdapterRefused(f"{path} is a link: an adapter's files are its own")
        if path.is_file():
            hashes[path.relative_to(directory).as_posix()] = _sha256(path)
    return hashes


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


@dataclass(frozen=True)
class Registered:
    adapter: AdapterRegistered
    active: bool
    evaluation: dict[str, Any] | None = None
    # Why it was not made active when it was registered; None if it was, or was not judged.
    refused: str | None = None


def register(
    db: Database[Document],
    adapter: AdapterRegistered,
    at: datetime,
    *,
    evaluation: dict[str, Any] | None = None,
    refused: str | None = None,
) -> bool:
    """Record ``adapter`` and its files' hashes; make it active if it is not worse.

    ``evaluation``: its report, kept with it; ``refused``: its trainer's reason not to
    promote it. True if it became active. Only the trainer that wrote the adapter calls
    this.
    """
    record = {
        "event": adapter.model_dump(mode="json"),
        "author": adapter.author,
        "seen_at": at,
        "files": file_hashes(Path(adapter.path)),
    }
    db[ADAPTERS].update_one({"_id": adapter.adapter_id}, {"$setOnInsert": record}, upsert=True)
    current = active(db, adapter.author)
    if current is not None and current.adapter_id == adapter.adapter_id:
        return True
    if refused is None and current is not None and not _not_worse(adapter, current):
        refused = (
            f"held-out perplexity {adapter.eval_perplexity} is worse than the active "
            f"adapter's {current.eval_perplexity}"
        )
    verdict: dict[str, Any] = {"refused": refused}
    if evaluation is not None:
        verdict["evaluation"] = evaluation
    db[ADAPTERS].update_one({"_id": adapter.adapter_id}, {"$set": verdict})
    if refused is not None:
        return False
    _set_active(db, adapter.author, adapter.adapter_id)
    return True


def evaluation_of(db: Database[Document], adapter_id: str) -> dict[str, Any] | None:
    """The evaluation report kept with an adapter, if its trainer evaluated it."""
    record = db[ADAPTERS].find_one({"_id": adapter_id}, {"evaluation": 1})
    found = record.get("evaluation") if record else None
    return dict(found) if isinstance(found, dict) else None


def _not_worse(candidate: AdapterRegistered, current: AdapterRegistered) -> bool:
    if current.eval_perplexity is None:
        return True
    if candidate.eval_perplexity is None:
        return False
    return candidate.eval_perplexity <= current.eval_perplexity


def adapters_of(db: Database[Document], author: str | None = None) -> list[Registered]:
    actives = {r["_id"]: r.get("active") for r in db[ACTIVE_ADAPTERS].find()}
    query = {} if author is None else {"author": author}
    found = []
    for record in db[ADAPTERS].find(query).sort("seen_at", 1):
        adapter = AdapterRegistered.model_validate(record["event"])
        found.append(
            Registered(
                adapter,
                actives.get(adapter.author) == adapter.adapter_id,
                record.get("evaluation"),
                record.get("refused"),
            )
        )
    return found


def registered(db: Database[Document], adapter_id: str) -> Registered:
    """One adapter as the registry keeps it: active or not, its evaluation, any refusal."""
    record = db[ADAPTERS].find_one({"_id": adapter_id})
    if record is None:
        raise UnknownAdapter(f"no adapter {adapter_id}")
    adapter = AdapterRegistered.model_validate(record["event"])
    current = db[ACTIVE_ADAPTERS].find_one({"_id": adapter.author}) or {}
    return Registered(
        adapter,
        current.get("active") == adapter_id,
        record.get("evaluation"),
        record.get("refused"),
    )


def get(db: Database[Document], adapter_id: str) -> AdapterRegistered:
    record = db[ADAPTERS].find_one({"_id": adapter_id})
    if record is None:
        raise UnknownAdapter(f"no adapter {adapter_id}")
    return AdapterRegistered.model_validate(record["event"])


def verified_path(db: Database[Document], adapter_id: str, root: Path) -> Path:
    """The adapter's directory, once it is under ``root`` and holds exactly the recorded files."""
    record = db[ADAPTERS].find_one({"_id": adapter_id})
    if record is None:
        raise UnknownAdapter(f"no adapter {adapter_id} in the registry")
    adapter = AdapterRegistered.model_validate(record["event"])
    directory = Path(adapter.path).resolve()
    if not directory.is_relative_to(root.resolve()):
        raise AdapterRefused(f"adapter {adapter_id} is at {directory}, outside {root}")
    recorded = record.get("files")
    if not recorded:
        raise AdapterRefused(f"adapter {adapter_id} has no recorded file hashes: train it again")
    found = file_hashes(directory)
    if found != recorded:
        changed = sorted(set(found) ^ set(recorded)) or sorted(
            name for name in found if found[name] != recorded.get(name)
        )
        raise AdapterRefused(
            f"adapter {adapter_id}'s files are not the ones its trainer recorded: {changed[:5]}"
        )
    return directory


def active(db: Database[Document], author: str) -> AdapterRegistered | None:
    record = db[ACTIVE_ADAPTERS].find_one({"_id": author})
    if record is None or record.get("active") is None:
        return None
    return get(db, str(record["active"]))


def active_ids(db: Database[Document]) -> dict[str, str]:
    """Every author's active adapter id (authors without one are absent)."""
    return {
        str(r["_id"]): str(r["active"]) for r in db[ACTIVE_ADAPTERS].find({"active": {"$ne": None}})
    }


def activate(db: Database[Document], adapter_id: str) -> AdapterRegistered:
    """A person's choice: make ``adapter_id`` its author's active adapter, whatever its scores."""
    adapter = get(db, adapter_id)
    _set_active(db, adapter.author, adapter.adapter_id)
    return adapter


def rollback(db: Database[Document], author: str) -> AdapterRegistered | None:
    """Back to the adapter active before the current one (None: the base model)."""
    record = db[ACTIVE_ADAPTERS].find_one({"_id": author})
    history: list[str] = list(record.get("history", [])) if record else []
    if not history:
        raise UnknownAdapter(f"{author} has no active adapter to roll back")
    history.pop()
    previous = history[-1] if history else None
    db[ACTIVE_ADAPTERS].update_one(
        {"_id": author}, {"$set": {"active": previous, "history": history}}, upsert=True
    )
    return get(db, previous) if previous else None


def _set_active(db: Database[Document], author: str, adapter_id: str) -> None:
    db[ACTIVE_ADAPTERS].update_one(
        {"_id": author},
        {"$set": {"active": adapter_id}, "$push": {"history": adapter_id}},
        upsert=True,
    )
