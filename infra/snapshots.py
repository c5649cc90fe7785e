"""Dataset snapshots: an author's cleaned documents as instruction -> response examples.

The response is always the author's own text. A document is cut at its own structure into
examples that together cover it end to end (infra/examples.py); each example's
instruction says what to write: the kind, the platform and the title, and for a piece of
a longer document its section and its place, with the end of the text before it as
context. A document's side of the split is decided by a hash of its id alone, so it keeps
its side in every later snapshot, and all of its examples are on that side: nothing of a
held-out document trains. E-mail addresses and phone numbers are scrubbed
(infra/scrub.py); forgotten documents are not in the warehouse's cleaned documents any
more, and a deletion record newer than a document's indexing excludes it as well.

Files are JSON Lines (``datasets.load_dataset("json", data_files=...)`` reads
them as they are), under ``LLM_TWIN_HOME/snapshots/<snapshot_id>/``, with a
``manifest.json`` that is also the message published to
``twin.dataset.snapshots``. The manifest is recorded in the warehouse too
(collection ``snapshots``) when it is written: the trainer trains only a
snapshot whose announcement, directory and files match that record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database

from infra import examples, warehouse
from infra.scrub import scrub
from schemas.training import DatasetSnapshot, DocumentVersion, SnapshotFile, Split, SplitCounts

# One document in five is held out: enough held-out text to measure perplexity and
# style on a small author, and a document's side never changes (it is its id's hash).
TEST_PERCENT = 20
MANIFEST = "manifest.json"
# {_id: author, new_documents: n}: documents indexed since the author's last triggered snapshot.
SNAPSHOT_COUNTERS = "snapshot_counters"
# {_id: snapshot_id, author, manifest}: every snapshot as it was written.
SNAPSHOTS = "snapshots"

# What each kind of document is, for its instructions: one entry per DocumentKind.
_WHAT = {
    "article": "an article for {platform} titled \u201c{title}\u201d",
    "post": "a {platform} post about {title}",
    "repository_file": "the code of {title}",
    "message": "a message about {title}",
    "note": "a note titled \u201c{title}\u201d",
}
_OTHER = "a {platform} text about {title}"


class NothingToSnapshot(ValueError):
    pass


class SnapshotRefused(ValueError):
    """An announced snapshot that is not the one written: the message says how it differs."""


@dataclass(frozen=True)
class Pair:
    """One training example: a piece of a document and what it asks for."""

    document_id: uuid.UUID
    version: str
    instruction: str
    response: str
    kind: str
    platform: str
    title: str
    # What a person asks for the whole document (the instruction of a whole one).
    task: str = ""
    context: str = ""  # the end of the document's text before this piece
    section: str = ""
    part: int = 1
    parts: int = 1

    def row(self) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "context": self.context,
            "response": self.response,
            "task": self.task or self.instruction,
            "document_id": str(self.document_id),
            "kind": self.kind,
            "platform": self.platform,
            "title": self.title,
            "section": self.section,
            "part": self.part,
            "parts": self.parts,
        }


def split_of(document_id: uuid.UUID) -> Split:
    """train or test, from the document id alone: stable across snapshots."""
    bucket = int(hashlib.sha256(document_id.bytes).hexdigest()[:8], 16) % 100
    return Split.TEST if bucket < TEST_PERCENT else Split.TRAIN


def instruction_for(
    kind: str, platform: str, title: str, *, section: str = "", part: int = 1, parts: int = 1
) -> str:
    """What to write: the whole document, its beginning, or its continuation under a heading."""
    template = _WHAT.get(kind, _OTHER)
    what = template.format(platform=_platform_name(platform), title=scrub(title.strip()))
    where = f", the part under \u201c{scrub(section)}\u201d" if section else ""
    if parts == 1:
        return f"Write {what}."
    if part == 1:
        return f"Write the beginning of {what}{where}."
    return f"Continue {what}{where} (part {part} of {parts})."


def _platform_name(platform: str) -> str:
    known = {"linkedin": "LinkedIn", "x": "X", "twitter": "X", "github": "GitHub"}
    return known.get(platform.lower(), platform.capitalize())


def pairs_of(db: Database[warehouse.Document], author: str) -> list[Pair]:
    """The author's current documents as examples, oldest id first, each in reading order."""
    forgotten = {
        record["_id"]: record["deleted_at"]
        for record in db[warehouse.DELETIONS].find({"author": author})
    }
    pairs = []
    for record in db[warehouse.CLEANED_DOCUMENTS].find({"author": author}).sort("_id", 1):
        deleted_at = forgotten.get(record["_id"])
        if deleted_at is not None and deleted_at >= record["indexed_at"]:
            continue
        kind, platform, title = str(record["kind"]), str(record["platform"]), str(record["title"])
        task = instruction_for(kind, platform, title)
        for piece in examples.pieces(scrub(str(record["text"])), kind):
            pairs.append(
                Pair(
                    document_id=uuid.UUID(str(record["_id"])),
                    version=str(record["version"]),
                    instruction=instruction_for(
                        kind,
                        platform,
                        title,
                        section=piece.section,
                        part=piece.part,
                        parts=piece.parts,
                    ),
                    response=piece.text,
                    kind=kind,
                    platform=platform,
                    title=title,
                    task=task,
                    context=piece.context,
                    section=piece.section,
                    part=piece.part,
                    parts=piece.parts,
                )
            )
    return pairs


def build(
    db: Database[warehouse.Document],
    author: str,
    root: Path,
    created_at: datetime,
    *,
    instruct: Callable[[list[Pair]], list[str]] | None = None,
    reject: Callable[[list[str]], list[str]] | None = None,
) -> DatasetSnapshot:
    """Write a snapshot of the author's documents under ``root``; raise if there are none.

    ``instruct``: instructions written by a model for the whole documents among these pairs
    (``--llm-instructions``; an empty one keeps the derived instruction). ``reject``: the
    base model's answers to these instructions, making preference pairs of the training side
    (``--preferences``: chosen, the author's text; rejected, the base model's).
    """
    pairs = pairs_of(db, author)
    if not pairs:
        raise NothingToSnapshot(f"{author} has no documents in the warehouse")
    if instruct is not None:  # for whole documents: a piece's place is said by its own
        whole = [pair for pair in pairs if pair.parts == 1]
        written = {
            pair.document_id: scrub(text.strip())
            for pair, text in zip(whole, instruct(whole), strict=True)
        }
        pairs = [
            dataclasses.replace(pair, instruction=written[pair.document_id], task="")
            if written.get(pair.document_id)
            else pair
            for pair in pairs
        ]
    versions = {pair.document_id: pair.version for pair in pairs}  # in id order
    content = hashlib.sha256()
    for document_id, version in versions.items():
        content.update(f"{document_id}:{version}\n".encode())
    snapshot_id = f"{author}-{created_at:%Y%m%dT%H%M%SZ}-{content.hexdigest()[:8]}"
    directory = root / snapshot_id
    directory.mkdir(parents=True, exist_ok=True)
    sides = {Split.TRAIN: [p for p in pairs if split_of(p.document_id) is Split.TRAIN]}
    sides[Split.TEST] = [p for p in pairs if split_of(p.document_id) is Split.TEST]
    files = [_write(directory, split, (p.row() for p in rows)) for split, rows in sides.items()]
    preferences = 0
    if reject is not None:
        chosen = sides[Split.TRAIN]
        rejected = reject([pair.instruction for pair in chosen])
        rows_ = [
            {
                "instruction": pair.instruction,
                "chosen": pair.response,
                "rejected": answer,
                "document_id": str(pair.document_id),
            }
            for pair, answer in zip(chosen, rejected, strict=True)
            if answer.strip()
        ]
        files.append(_write(directory, Split.PREFERENCE, rows_))
        preferences = len(rows_)
    snapshot = DatasetSnapshot(
        snapshot_id=snapshot_id,
        author=author,
        created_at=created_at,
        counts=SplitCounts(
            train=len(sides[Split.TRAIN]), test=len(sides[Split.TEST]), preference=preferences
        ),
        path=str(directory),
        documents=[
            DocumentVersion(
                document_id=document_id,
                content_hash=version,
                split="test" if split_of(document_id) is Split.TEST else "train",
            )
            for document_id, version in versions.items()
        ],
        files=files,
    )
    (directory / MANIFEST).write_text(snapshot.model_dump_json(indent=2), encoding="utf-8")
    db[SNAPSHOTS].replace_one(
        {"_id": snapshot.snapshot_id},
        {"author": author, "manifest": snapshot.model_dump(mode="json")},
        upsert=True,
    )
    return snapshot


def verified(
    db: Database[warehouse.Document], announced: DatasetSnapshot, root: Path
) -> DatasetSnapshot:
    """The snapshot as recorded, once its announcement, place and files all match the record.

    A message on ``twin.dataset.snapshots`` only names a snapshot: what is trained is
    the warehouse's record of it, from its directory under ``root``, with every file's
    hash checked.
    """
    record = db[SNAPSHOTS].find_one({"_id": announced.snapshot_id})
    if record is None:
        raise SnapshotRefused(f"no snapshot {announced.snapshot_id} was recorded in the warehouse")
    snapshot = DatasetSnapshot.model_validate(record["manifest"])
    if snapshot != announced:
        raise SnapshotRefused(
            f"the announcement of {announced.snapshot_id} differs from its record"
        )
    directory = Path(snapshot.path).resolve()
    if directory != (root / snapshot.snapshot_id).resolve():
        raise SnapshotRefused(f"{directory} is not {snapshot.snapshot_id}'s directory under {root}")
    try:
        if load(directory) != snapshot:
            raise SnapshotRefused(f"{directory / MANIFEST} differs from the recorded manifest")
        for file in snapshot.files:
            path = directory / file.path
            if path.is_symlink() or path.resolve().parent != directory:
                raise SnapshotRefused(f"{file.path} is not a file of the snapshot's directory")
            if hashlib.sha256(path.read_bytes()).hexdigest() != file.sha256:
                raise SnapshotRefused(f"{path} does not match its manifest: it changed")
    except (OSError, ValueError) as error:
        if isinstance(error, SnapshotRefused):
            raise
        raise SnapshotRefused(f"the snapshot's files are unreadable here: {error}") from None
    return snapshot


def load(directory: Path) -> DatasetSnapshot:
    return DatasetSnapshot.model_validate_json((directory / MANIFEST).read_text(encoding="utf-8"))


def rows(snapshot: DatasetSnapshot, split: Split) -> list[dict[str, Any]]:
    """One split's rows, checked against the manifest's hash."""
    for file in snapshot.files:
        if file.split is split:
            path = Path(snapshot.path) / file.path
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != file.sha256:
                raise ValueError(f"{path} does not match its manifest: it changed after writing")
            return [json.loads(line) for line in data.decode("utf-8").splitlines() if line]
    return []


def _write(directory: Path, split: Split, records: Iterable[dict[str, Any]]) -> SnapshotFile:
    lines = [json.dumps(record, ensure_ascii=False) for record in records]
    data = ("\n".join(lines) + "\n" if lines else "").encode("utf-8")
    name = f"{split.value}.jsonl"
    (directory / name).write_bytes(data)
    return SnapshotFile(
        split=split, path=name, sha256=hashlib.sha256(data).hexdigest(), rows=len(lines)
    )


def count_new(db: Database[warehouse.Document], author: str, documents: int, every: int) -> bool:
    """Count ``documents`` newly indexed for ``author``; True (and the count restarts) at ``every``.

    One atomic update per call, so concurrent writers never both see the threshold.
    """
    record = db[SNAPSHOT_COUNTERS].find_one_and_update(
        {"_id": author},
        {"$inc": {"new_documents": documents}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    if record is None or int(record["new_documents"]) < every:
        return False
    reset = db[SNAPSHOT_COUNTERS].update_one(
        {"_id": author, "new_documents": record["new_documents"]},
        {"$inc": {"new_documents": -every}},
    )
    return reset.modified_count == 1
