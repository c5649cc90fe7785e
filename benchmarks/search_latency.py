"""Embedding throughput and author-scoped search latency in Qdrant local mode; prints JSON.

    python benchmarks/search_latency.py [--points 20000] [--queries 200]

Encode: 64 sentences of ~60 tokens at batch 32 and 64 (best of three runs,
after a warm-up). Search: one author's collection of ``--points`` random unit
vectors, each with a full payload, in a temporary directory; ``--queries``
searches of k=5 timed alone (a ready vector) and with the query's embedding.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vectorstore.embedder import Embedder
from vectorstore.store import ChunkPoint, VectorStore

_VOCABULARY = (
    "stream partition broker consumer producer offset replica schema latency throughput "
    "embedding vector chunk retrieval prompt adapter snapshot warehouse collection payload "
    "author writing style draft idea post article review deploy monitor failure retry"
)
WORDS = _VOCABULARY.split()


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def encode_throughput(embedder: Embedder, rng: random.Random) -> dict[str, float]:
    # 47 words of this vocabulary are ~60 wordpieces (reported below).
    texts = [sentence(rng, 47) for _ in range(64)]
    result: dict[str, float] = {
        "mean_tokens": statistics.mean(embedder.count_tokens(text) for text in texts)
    }
    embedder.encode(texts[:8])  # warm-up
    for batch_size in (32, 64):
        best = min(_timed(embedder.encode, texts, batch_size=batch_size) for _ in range(3))
        result[f"batch_{batch_size}_sentences_per_s"] = round(len(texts) / best, 1)
    return result


def _timed(work: Callable[..., object], *args: object, **kwargs: object) -> float:
    start = time.perf_counter()
    work(*args, **kwargs)
    return time.perf_counter() - start


def search_latency(
    embedder: Embedder, rng: random.Random, points: int, queries: int
) -> dict[str, object]:
    numbers = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as directory:
        store = VectorStore.open(str(Path(directory) / "qdrant"), dimensions=embedder.dimensions)
        try:
            store.ensure_collection("bench")
            started = time.perf_counter()
            for start in range(0, points, 1000):
                size = min(1000, points - start)
                vectors = numbers.standard_normal((size, embedder.dimensions)).astype(np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                store.upsert(
                    "bench", [_point(vector, start + i, rng) for i, vector in enumerate(vectors)]
                )
            fill_s = time.perf_counter() - started

            texts = [sentence(rng, 12) for _ in range(queries)]
            ready = [embedder.encode_query(text) for text in texts]
            store.search("bench", ready[0], k=5)  # warm-up

            def embed_and_search(text: str) -> object:
                return store.search("bench", embedder.encode_query(text), k=5)

            alone = [_timed(store.search, "bench", vector, k=5) for vector in ready]
            embedded = [_timed(embed_and_search, text) for text in texts]
            count = store.count("bench")
        finally:
            store.close()
    return {
        "points": count,
        "fill_points_per_s": round(points / fill_s),
        "search_ms": _summary(alone),
        "embed_and_search_ms": _summary(embedded),
    }


def _point(vector: npt.NDArray[np.float32], index: int, rng: random.Random) -> ChunkPoint:
    document = uuid.UUID(int=index // 10)
    return ChunkPoint(
        id=uuid.uuid5(document, str(index)),
        vector=vector.tolist(),
        payload={
            "author": "bench",
            "document_id": str(document),
            "version": "v1",
            "chunk_index": index % 10,
            "kind": "article",
            "title": f"Document {index // 10}",
            "source_url": None,
            "text": sentence(rng, 150),
            "crawled_at": "2026-01-01T00:00:00+00:00",
            "published_at": None,
            "indexed_at": "2026-01-01T00:00:00+00:00",
            "embedding_model": "random",
        },
    )


def _summary(seconds: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(seconds, 0.50) * 1000, 2),
        "p95": round(percentile(seconds, 0.95) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=200)
    arguments = parser.parse_args()
    rng = random.Random(7)
    embedder = Embedder.load()
    report = {
        "model": embedder.model_name,
        "encode": encode_throughput(embedder, rng),
        "search": search_latency(embedder, rng, arguments.points, arguments.queries),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
