"""The author's own passages for a request: search, de-duplicate, fit a token budget.

Only the requesting author's collection is read (``VectorStore.search`` takes
the author and opens nothing else). Passages come back best first; neighbouring
chunks of one document overlap by design (streams/chunk.py), so a passage
whose text is mostly inside one already kept is dropped, and the rest are kept
while they fit ``budget_tokens`` as the generating model counts them.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Sequence

from llm.prompt import Passage
from vectorstore.embedder import Embedder
from vectorstore.store import Hit, VectorStore

# Candidates fetched per passage wanted: room for duplicates and overlaps.
OVERFETCH = 3
# Queries embedded in one call, at most: the encoder's best batch size here (measured).
MAX_QUERY_BATCH = 64
# A passage sharing this much of its words with a kept one adds nothing new.
DUPLICATE_OVERLAP = 0.8


class Retriever:
    """Author-scoped search, shared by the consumer's concurrent requests.

    Queries that arrive while the embedder is busy are embedded together in its
    next batch: at 32 requests at once, one batch instead of 32 model calls
    one after another; a lone request waits for nothing.
    """

    def __init__(self, store: VectorStore, embedder: Embedder, *, k: int = 5) -> None:
        self._store = store
        self._embedder = embedder
        self._k = k
        # The embedder is one torch model: one call at a time keeps its threads from
        # fighting over the cores.
        self._lock = threading.Lock()
        self._waiting: list[tuple[str, asyncio.Future[list[float]]]] = []
        self._embedding = False
        self._embedder_task: asyncio.Task[None] | None = None

    def search(self, author: str, query: str, k: int) -> list[Hit]:
        return self._store.search(author, self._encode([query])[0], k)

    def _encode(self, queries: list[str]) -> list[list[float]]:
        with self._lock:
            return self._embedder.encode_queries(queries)

    async def embed(self, query: str) -> list[float]:
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        self._waiting.append((query, future))
        if not self._embedding:
            self._embedding = True
            self._embedder_task = asyncio.create_task(self._embed_waiting())
        return await future

    async def _embed_waiting(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = (
                    self._waiting[:MAX_QUERY_BATCH],
                    self._waiting[MAX_QUERY_BATCH:],
                )
                try:
                    vectors = await asyncio.to_thread(self._encode, [query for query, _ in batch])
                except Exception as error:  # noqa: BLE001  # raised in every waiting request
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), vector in zip(batch, vectors, strict=True):
                    if not future.done():  # its request may have been cancelled meanwhile
                        future.set_result(vector)
        finally:
            self._embedding = False

    async def retrieve(
        self,
        author: str,
        queries: Sequence[str],
        *,
        budget_tokens: int,
        count_tokens: Callable[[str], int],
    ) -> list[Passage]:
        """Passages for ``queries`` (the idea, and any expansions), best first, within budget."""
        hits: list[Hit] = []
        for query in queries:
            vector = await self.embed(query)
            hits += await asyncio.to_thread(self._store.search, author, vector, self._k * OVERFETCH)
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return select(hits, self._k, budget_tokens, count_tokens)


def select(
    hits: Sequence[Hit], k: int, budget_tokens: int, count_tokens: Callable[[str], int]
) -> list[Passage]:
    """At most ``k`` distinct passages, best first, whose texts fit ``budget_tokens``."""
    kept: list[Passage] = []
    kept_words: list[set[str]] = []
    seen_ids: set[uuid.UUID] = set()
    used = 0
    for hit in hits:
        if len(kept) == k:
            break
        text = str(hit.payload.get("text") or "").strip()
        if not text or hit.id in seen_ids:
            continue
        seen_ids.add(hit.id)
        words = set(text.lower().split())
        if any(_overlap(words, other) >= DUPLICATE_OVERLAP for other in kept_words):
            continue
        cost = count_tokens(text)
        if used + cost > budget_tokens:
            continue  # a shorter passage further down may still fit
        used += cost
        kept_words.append(words)
        kept.append(
            Passage(
                document_id=uuid.UUID(str(hit.payload["document_id"])),
                title=str(hit.payload.get("title") or ""),
                source_url=hit.payload.get("source_url"),
                text=text,
                score=hit.score,
            )
        )
    return kept


def _overlap(words: set[str], other: set[str]) -> float:
    return len(words & other) / len(words) if words else 1.0
