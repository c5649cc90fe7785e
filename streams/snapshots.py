"""The stream-side snapshot trigger: every N newly indexed documents of an author, a snapshot.

With ``LLM_TWIN_INGEST_SNAPSHOT_EVERY`` set, the store sink reports each
batch's indexed documents per author; when an author has accumulated N new
ones, a dataset snapshot is built from the warehouse and announced on
``twin.dataset.snapshots`` (where the trainer consumer takes it). A failure
here is logged and never stops ingestion: the next batch tries again.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from pymongo.database import Database
from pymongo.errors import PyMongoError

from infra import kafka, snapshots, warehouse
from schemas.topics import DATASET_SNAPSHOTS

log = logging.getLogger(__name__)


class SnapshotTrigger:
    def __init__(
        self,
        db: Database[warehouse.Document],
        publisher: kafka.Publisher,
        root: Path,
        every: int,
    ) -> None:
        self._db = db
        self._publisher = publisher
        self._root = root
        self._every = every

    def __call__(self, indexed: Counter[str]) -> None:
        for author, count in indexed.items():
            try:
                if not snapshots.count_new(self._db, author, count, self._every):
                    continue
                built = snapshots.build(self._db, author, self._root, datetime.now(UTC))
            except (PyMongoError, OSError, snapshots.NothingToSnapshot) as error:
                log.warning("no snapshot for %s this time: %s", author, error)
                continue
            self._publisher.publish(DATASET_SNAPSHOTS, author, built)
            log.info("snapshot %s after %d new documents", built.snapshot_id, self._every)
