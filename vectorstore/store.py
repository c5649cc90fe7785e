"""Per-author chunk collections in Qdrant: the only way any component reads or writes vectors.

Isolation by construction (docs/tenancy-and-security.md): every author has a
collection of their own, addressed as ``twin_<slug>_chunks``, and every method
takes the author and touches that author's collection only. A slug is checked
against ``AUTHOR_SLUG_PATTERN`` before it becomes part of a name, so no input
can address another author's collection. Per-author collections are also what
keeps search fast in local mode (an author-filtered search over one shared
collection was ~10x slower, measured here).

Names. ``twin_<slug>_chunks`` is a collection *alias*; the points live in a
collection ``twin_<slug>_chunks_<suffix>`` it points at. A reindex fills a new
collection behind a second alias, ``twin_<slug>_chunks_staging``, and
``replace_with_staging`` repoints the live alias in one alias update, which
both Qdrant server and qdrant-client's local mode apply atomically (local mode
writes its alias table to ``meta.json`` with a single file replace; the server
takes a lock over every collection). Readers therefore see the old collection
or the new one, never a half-built one, and the vectors of two embedding
models never meet in one collection. Slugs hold no ``_``, so these names never
collide across authors.

Payload of every point (JSON values; times are ISO-8601 strings):

================  =====================================================
author            the author's slug; ``upsert`` refuses any other
document_id       the document's id (``schemas.ids.document_id``), a string
version           the document's content hash; replaced versions are deleted
chunk_index       position of the chunk in the document, from 0
kind              what the document is (article, post, repository, ...)
title             the document's title
source_url        where it came from, or null
text              the chunk's text
crawled_at        when the source was read
published_at      when the author published it, or null when unknown
indexed_at        when this point was written
embedding_model   the embedder's ``model_name``; a reindex changes it
================  =====================================================

Point ids are ``schemas.ids.chunk_point_id(document_id, version, chunk_index)``,
so writing a chunk again overwrites it (docs/wire-contracts.md).

Vectors are unit length (the embedder normalises them; ``upsert`` refuses any
other), so collections use the dot product, which then equals cosine
similarity: local mode re-normalises every stored vector on every cosine
search (~10 ms at 20k points here), and a server skips a normalisation too.

Local mode (``QdrantClient(path=...)``) holds an exclusive lock on its
directory and is not thread-safe, so one ``VectorStore`` serialises its calls
in that mode and is meant to be shared by every thread of the one process that
owns the directory. It ignores payload indexes; they are made on a server only.
"""

from __future__ import annotations

import fcntl
import math
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy.typing as npt
import threadpoolctl  # type: ignore[import-untyped]
from qdrant_client import QdrantClient, models

from schemas.common import AUTHOR_SLUG_PATTERN

PAYLOAD_KEYS = (
    "author",
    "document_id",
    "version",
    "chunk_index",
    "kind",
    "title",
    "source_url",
    "text",
    "crawled_at",
    "published_at",
    "indexed_at",
    "embedding_model",
)
# The keys deletes and isolation depend on; a point without them is refused.
_REQUIRED_KEYS = ("author", "document_id", "version")

# Points per upsert request: large enough to amortise a server round trip,
# small enough to stay far below any request size limit (384 floats + text).
UPSERT_BATCH = 256
_SCROLL_PAGE = 1024

# How far from length 1 a vector may be (float32 rounding of a normalised vector is ~1e-7).
UNIT_TOLERANCE = 1e-3

_SLUG = re.compile(AUTHOR_SLUG_PATTERN)
_LIVE_ALIAS = re.compile(r"^twin_(?P<slug>[a-z0-9][a-z0-9-]{0,62})_chunks$")


@dataclass(frozen=True)
class ChunkPoint:
    id: uuid.UUID
    vector: Sequence[float]
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    score: float
    id: uuid.UUID
    payload: dict[str, Any]


def _checked(author: str) -> str:
    if _SLUG.fullmatch(author) is None:
        raise ValueError(f"not an author slug: {author!r} (must match {AUTHOR_SLUG_PATTERN})")
    return author


def collection_name(author: str) -> str:
    """The name every reader and writer uses for ``author``'s chunks (an alias)."""
    return f"twin_{_checked(author)}_chunks"


def staging_collection_name(author: str) -> str:
    """The name a rebuild of ``author``'s chunks is written under until it replaces the live one."""
    return f"{collection_name(author)}_staging"


def _physical_prefix(author: str) -> str:
    return f"{collection_name(author)}_"


# The first collection behind an author's alias has a fixed name, so two
# processes creating it at once on a server end with one collection, not two.
def _first_physical(author: str) -> str:
    return f"{_physical_prefix(author)}0"


def _new_physical(author: str) -> str:
    return f"{_physical_prefix(author)}{uuid.uuid4().hex[:12]}"


def _score_local_queries_in_float32() -> None:
    """Make local-mode searches score a float32 query against the float32 vectors.

    qdrant-client 1.20's local mode turns the query into a float64 array and
    numpy then converts the whole collection to float64 on every search: ~14 ms
    at 20k points of 384 dimensions on this project's machines, against ~1 ms
    in float32. The scores differ by float32 rounding only. Patched once, on
    the first local open (never at import), and only where local mode scores.
    """
    from qdrant_client.local import local_collection

    original = getattr(local_collection, "calculate_distance")  # noqa: B009  # not re-exported
    if getattr(original, "float32_queries", False):
        return

    def calculate_distance(
        query: npt.NDArray[Any], vectors: npt.NDArray[Any], distance_type: models.Distance
    ) -> npt.NDArray[Any]:
        if query.dtype != vectors.dtype:
            query = query.astype(vectors.dtype)
        scores: npt.NDArray[Any] = original(query, vectors, distance_type)
        return scores

    calculate_distance.float32_queries = True  # type: ignore[attr-defined]
    setattr(local_collection, "calculate_distance", calculate_distance)  # noqa: B010


def _one_blas_thread() -> None:
    """Local-mode search is one matrix-vector product (~1 ms over 20k vectors in one
    thread). More BLAS threads buy nothing there, and after each search they spin
    idle on the cores the encoder's threads need: a query embedded right after a
    search took ~2x as long (p95 41 -> 22 ms at 20k points on this project's machines)."""
    threadpoolctl.threadpool_limits(limits=1, user_api="blas")


class StoreBusy(RuntimeError):
    """A local-mode directory is locked by another process."""


def in_use_elsewhere(location: str) -> bool:
    """Whether another process holds this local-mode directory open.

    Tries, and at once releases, the lock qdrant-client takes on ``<dir>/.lock``
    (``flock``, as its ``portalocker`` does on POSIX), without loading the store.
    """
    lock = Path(location) / ".lock"
    if "://" in location or not lock.exists():
        return False
    with lock.open("r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


class VectorStore:
    collection_name = staticmethod(collection_name)
    staging_collection_name = staticmethod(staging_collection_name)

    def __init__(self, client: QdrantClient, *, dimensions: int, local: bool) -> None:
        if dimensions < 1:
            raise ValueError(f"dimensions must be positive, not {dimensions}")
        self._client = client
        self.dimensions = dimensions
        self.local = local
        self._serial: AbstractContextManager[object] = threading.RLock() if local else nullcontext()

    @classmethod
    def open(cls, location: str, api_key: str | None = None, *, dimensions: int) -> VectorStore:
        """A store on a Qdrant server (``http(s)://`` URL) or a local-mode directory (a path)."""
        if location.startswith(("http://", "https://")):
            return cls(
                QdrantClient(url=location, api_key=api_key), dimensions=dimensions, local=False
            )
        if "://" in location:
            raise ValueError(f"a Qdrant server URL is http:// or https://, not {location!r}")
        if api_key is not None:
            raise ValueError("an API key is for a Qdrant server; a local directory takes none")
        # check_same_thread is off because the store serialises calls itself and
        # may be used from several threads of its process.
        _score_local_queries_in_float32()
        _one_blas_thread()
        try:
            client = QdrantClient(path=location, force_disable_check_same_thread=True)
        except RuntimeError as error:
            if "already accessed" not in str(error):
                raise
            raise StoreBusy(
                f"the vector store {location} is open in another process (a running "
                "`llm-twin ingest`, `serve` or `up`): Qdrant local mode admits one process "
                "at a time; stop that one, or share a Qdrant server (QDRANT_URL)"
            ) from None
        return cls(client, dimensions=dimensions, local=True)

    def close(self) -> None:
        """Release the client (in local mode, the directory's lock)."""
        with self._serial:
            self._client.close()

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- collections ---------------------------------------------------------------------------

    def ensure_collection(self, author: str) -> None:
        """Make ``author``'s collection if it has none; idempotent.

        Raises ValueError if the existing collection holds vectors of another
        size than this store's (a different embedding model: reindex).
        """
        live = collection_name(author)
        with self._serial:
            aliases = self._aliases()
            if live in aliases:
                self._check_dimensions(aliases[live])
                return
            first = _first_physical(author)
            self._create(first)
            self._client.update_collection_aliases(
                change_aliases_operations=[_create_alias(live, first)]
            )

    def authors(self) -> list[str]:
        """Every author with a collection, sorted."""
        with self._serial:
            aliases = self._aliases()
        return sorted(
            match["slug"] for match in map(_LIVE_ALIAS.fullmatch, aliases) if match is not None
        )

    def drop(self, author: str) -> None:
        """Delete ``author``'s collection, any staging one, and any left by a broken rebuild."""
        with self._serial:
            aliases = self._aliases()
            operations = [
                _delete_alias(name)
                for name in (collection_name(author), staging_collection_name(author))
                if name in aliases
            ]
            if operations:
                # Aliases first: from here on readers see no collection at all.
                self._client.update_collection_aliases(change_aliases_operations=operations)
            for name in self._physical_collections(author):
                self._client.delete_collection(name)

    # -- rebuilding elsewhere, then replacing ---------------------------------------------------

    def begin_staging(self, author: str) -> None:
        """Start a rebuild: an empty staging collection, replacing any earlier unfinished one.

        Write to it with ``upsert(..., staging=True)``, then ``replace_with_staging``.
        Collections left behind by a rebuild that died half-way are deleted here.
        """
        staging = staging_collection_name(author)
        with self._serial:
            aliases = self._aliases()
            if staging in aliases:
                self._client.update_collection_aliases(
                    change_aliases_operations=[_delete_alias(staging)]
                )
            live_physical = aliases.get(collection_name(author))
            for name in self._physical_collections(author):
                if name != live_physical:
                    self._client.delete_collection(name)
            physical = _new_physical(author)
            self._create(physical)
            self._client.update_collection_aliases(
                change_aliases_operations=[_create_alias(staging, physical)]
            )

    def replace_with_staging(self, author: str) -> None:
        """Make the staging collection ``author``'s live one, atomically, and delete the old one."""
        live = collection_name(author)
        staging = staging_collection_name(author)
        with self._serial:
            aliases = self._aliases()
            if staging not in aliases:
                raise LookupError(f"{author} has no staging collection: call begin_staging first")
            operations: list[models.AliasOperations] = [_delete_alias(staging)]
            if live in aliases:
                operations.append(_delete_alias(live))
            operations.append(_create_alias(live, aliases[staging]))
            # One request: the switch is atomic for every reader.
            self._client.update_collection_aliases(change_aliases_operations=operations)
            if live in aliases:
                self._client.delete_collection(aliases[live])

    def discard_staging(self, author: str) -> None:
        """Abandon a rebuild; the live collection is untouched."""
        staging = staging_collection_name(author)
        with self._serial:
            aliases = self._aliases()
            if staging not in aliases:
                return
            self._client.update_collection_aliases(
                change_aliases_operations=[_delete_alias(staging)]
            )
            self._client.delete_collection(aliases[staging])

    # -- points --------------------------------------------------------------------------------

    def upsert(self, author: str, points: Sequence[ChunkPoint], *, staging: bool = False) -> None:
        """Write ``points`` into ``author``'s collection (``ensure_collection`` first).

        Returns only once every point is stored and visible to search
        (``wait=True``); a point with the same id is overwritten.
        """
        target = self._target(author, staging)
        for point in points:
            self._check_point(author, point)
        for start in range(0, len(points), UPSERT_BATCH):
            batch = [
                models.PointStruct(
                    id=str(point.id), vector=list(point.vector), payload=point.payload
                )
                for point in points[start : start + UPSERT_BATCH]
            ]
            with self._serial:
                self._client.upsert(collection_name=target, points=batch, wait=True)

    def delete_other_versions(self, author: str, document_id: uuid.UUID, keep_version: str) -> int:
        """Delete the document's points of every version but ``keep_version``; how many matched."""
        return self._delete(
            author,
            models.Filter(
                must=[_equals("document_id", str(document_id))],
                must_not=[_equals("version", keep_version)],
            ),
        )

    def delete_points(
        self, author: str, ids: Iterable[uuid.UUID], *, staging: bool = False
    ) -> None:
        """Delete these points (absent ones are ignored). By id: no scan of the collection,
        which a filtered delete needs (~0.3 s at 20k points in local mode)."""
        selected = [str(point_id) for point_id in ids]
        name = self._target(author, staging)
        if not selected:
            return
        with self._serial:
            if not self._client.collection_exists(name):
                return
            self._client.delete(
                collection_name=name,
                points_selector=models.PointIdsList(points=selected),
                wait=True,
            )

    def delete_document(self, author: str, document_id: uuid.UUID, *, staging: bool = False) -> int:
        """Delete every point of the document; how many matched."""
        return self._delete(
            author, models.Filter(must=[_equals("document_id", str(document_id))]), staging
        )

    def search(self, author: str, vector: Sequence[float], k: int) -> list[Hit]:
        """The ``k`` points of ``author``'s collection nearest ``vector``, best first.

        An author without a collection has no chunks: ``[]``. Every other
        failure is raised.
        """
        if k < 1:
            raise ValueError(f"k must be positive, not {k}")
        live = collection_name(author)
        with self._serial:
            if not self._client.collection_exists(live):
                return []
            response = self._client.query_points(
                collection_name=live, query=list(vector), limit=k, with_payload=True
            )
        return [
            Hit(score=point.score, id=uuid.UUID(str(point.id)), payload=point.payload or {})
            for point in response.points
        ]

    def count(self, author: str, *, staging: bool = False) -> int:
        """How many points ``author``'s collection holds (0 without one)."""
        name = self._target(author, staging)
        with self._serial:
            if not self._client.collection_exists(name):
                return 0
            return self._client.count(collection_name=name, exact=True).count

    def point_ids(self, author: str, *, staging: bool = False) -> set[uuid.UUID]:
        """Every point id in ``author``'s collection (empty without one)."""
        name = self._target(author, staging)
        return set(self._scroll_ids(name))

    # -- internals -----------------------------------------------------------------------------

    def _aliases(self) -> dict[str, str]:
        return {
            alias.alias_name: alias.collection_name for alias in self._client.get_aliases().aliases
        }

    def _physical_collections(self, author: str) -> list[str]:
        prefix = _physical_prefix(author)
        return [
            collection.name
            for collection in self._client.get_collections().collections
            if collection.name.startswith(prefix)
        ]

    def _create(self, name: str) -> None:
        try:
            self._client.create_collection(
                collection_name=name,
                vectors_config=models.VectorParams(
                    size=self.dimensions, distance=models.Distance.DOT
                ),
            )
        except Exception:
            # Another process made it first (a server answers 409): that is the
            # collection we wanted. Anything else is a real failure.
            if not self._client.collection_exists(name):
                raise
            self._check_dimensions(name)
        if not self.local:
            for field in ("document_id", "version"):
                self._client.create_payload_index(
                    collection_name=name,
                    field_name=field,
                    field_schema=models.PayloadSchemaType.KEYWORD,
                    wait=True,
                )

    def _check_dimensions(self, name: str) -> None:
        vectors = self._client.get_collection(name).config.params.vectors
        size = vectors.size if isinstance(vectors, models.VectorParams) else None
        if size != self.dimensions:
            raise ValueError(
                f"collection {name} holds vectors of size {size}, this store's embedder makes "
                f"{self.dimensions}: reindex the author with the new model"
            )

    def _target(self, author: str, staging: bool) -> str:
        return staging_collection_name(author) if staging else collection_name(author)

    def _check_point(self, author: str, point: ChunkPoint) -> None:
        missing = [key for key in _REQUIRED_KEYS if key not in point.payload]
        if missing:
            raise ValueError(f"point {point.id} lacks payload keys {missing}")
        if point.payload["author"] != author:
            raise ValueError(
                f"point {point.id} belongs to {point.payload['author']!r}, not to {author!r}"
            )
        if len(point.vector) != self.dimensions:
            raise ValueError(
                f"point {point.id} has {len(point.vector)} dimensions, not {self.dimensions}"
            )
        norm = math.sqrt(math.fsum(x * x for x in point.vector))
        if abs(norm - 1.0) > UNIT_TOLERANCE:
            raise ValueError(f"point {point.id} is not a unit vector (length {norm:.4f})")

    def _delete(self, author: str, selection: models.Filter, staging: bool = False) -> int:
        live = self._target(author, staging)
        with self._serial:
            if not self._client.collection_exists(live):
                return 0
            # Counted just before the delete; the delete itself removes every
            # point matching at the time it runs.
            matched = self._client.count(
                collection_name=live, count_filter=selection, exact=True
            ).count
            self._client.delete(
                collection_name=live,
                points_selector=models.FilterSelector(filter=selection),
                wait=True,
            )
        return matched

    def _scroll_ids(self, name: str) -> Iterator[uuid.UUID]:
        with self._serial:
            if not self._client.collection_exists(name):
                return
        offset: models.ExtendedPointId | None = None
        while True:
            with self._serial:
                records, offset = self._client.scroll(
                    collection_name=name,
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    with_payload=False,
                    with_vectors=False,
                )
            for record in records:
                yield uuid.UUID(str(record.id))
            if offset is None:
                return


def _equals(key: str, value: str) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _create_alias(alias: str, collection: str) -> models.CreateAliasOperation:
    return models.CreateAliasOperation(
        create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)
    )


def _delete_alias(alias: str) -> models.DeleteAliasOperation:
    return models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))
