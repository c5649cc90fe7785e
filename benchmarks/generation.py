"""Direct backend streaming against the full path, on this machine; prints one JSON object.

    .venv/bin/python benchmarks/generation.py [--requests 30] [--tokens 40] [--tgi-url URL]

The model is the same on both paths: by default a stand-in TGI server in this
process that streams a token every ``--token-ms`` (tests/fake_tgi.py: TGI's own
protocol), so what is measured is our path, not a CPU's matrix multiplies;
``--tgi-url`` points both paths at a real TGI server instead.

- direct: ``llm.remote.TgiBackend.stream`` on a fixed prompt, in this process;
- full: ``llm-twin serve`` (a child process) on a private embedded stack, asked
  over HTTP: API -> twin.generation.requests -> Faust consumer -> retrieval
  (query embedding + Qdrant local search over 5,000 chunks of the author) ->
  backend -> twin.generation.tokens -> API -> server-sent events.

At concurrency 1, requests alternate direct and full (these machines drift);
``ttft_overhead_ms`` is full minus direct time to first token, per pair;
``throughput_ratio`` is the median full-path tokens/s over the median direct
tokens/s, each measured from first to last token of one answer. Then 8 and 32
requests at once on each path: time to first token and aggregate tokens/s.

It exits 0 whatever the numbers: a benchmark reports, it does not fail CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from infra import localstack
from infra.ports import free_port
from infra.settings import PlatformSettings
from llm.backend import Piece, Sampling
from llm.remote import TgiBackend
from schemas.ids import chunk_point_id
from vectorstore.store import ChunkPoint, VectorStore

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/fake_tgi.py: the stand-in server the tests use too

from tests.fake_tgi import FakeTgi, running  # noqa: E402

TARGETS = {
    "ttft_overhead_ms_p50": "<= 50",
    "ttft_overhead_ms_p95": "<= 150",
    "throughput_ratio": ">= 0.95",
}
AUTHOR = "bench"
KEY = "bench-key-0123456789abcdef"
CHUNKS = 5_000
DIMENSIONS = 384
PROMPT = "Write a LinkedIn post about why we moved ingestion to Kafka."
EXTERNAL_SERVICES = ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URI", "QDRANT_URL", "LLM_TWIN_HOME")
WORDS = [
    "stream",
    "kafka",
    "partition",
    "offset",
    "chunk",
    "embed",
    "vector",
    "twin",
    "author",
    "voice",
    "batch",
]


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Answer:
    ttft_s: float
    tokens: int
    tokens_per_s: float | None  # first to last token; None with fewer than two
    # The worker's own account (full path only): queue, retrieval and first-token ms.
    timings: dict[str, float] | None = None


def _answer(started: float, stamps: list[float], timings: dict[str, float] | None = None) -> Answer:
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None
    return Answer(stamps[0] - started, len(stamps), rate, timings)


async def direct(backend: TgiBackend, tokens: int) -> Answer:
    started = time.perf_counter()
    stamps: list[float] = []
    messages = [{"role": "user", "content": PROMPT}]
    sampling = Sampling(max_new_tokens=tokens, temperature=0.0)
    async for event in backend.stream(messages, sampling):  # type: ignore[arg-type]
        if isinstance(event, Piece):
            stamps.append(time.perf_counter())
    return _answer(started, stamps)


async def full(client: httpx.AsyncClient, url: str, tokens: int) -> Answer:
    started = time.perf_counter()
    stamps: list[float] = []
    timings: dict[str, float] | None = None
    body = {"prompt": PROMPT, "max_new_tokens": tokens, "temperature": 0.0}
    async with client.stream(
        "POST",
        f"{url}/v1/twins/{AUTHOR}/generate",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
    ) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line.removeprefix("data: "))
            if event["type"] == "token":
                stamps.append(time.perf_counter())
            elif event["type"] == "done":
                timings = event["timings"]
            elif event["type"] == "error":
                raise RuntimeError(f"the full path answered with an error: {event}")
    return _answer(started, stamps, timings)


def fill_store(path: Path) -> None:
    """The author's collection: 5,000 chunks with random unit vectors and real payloads."""
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(CHUNKS, DIMENSIONS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    words = random.Random(7)
    now = datetime.now(UTC).isoformat()
    with VectorStore.open(str(path), dimensions=DIMENSIONS) as store:
        store.ensure_collection(AUTHOR)
        batch: list[ChunkPoint] = []
        for n in range(CHUNKS):
            document_id = uuid.uuid5(uuid.NAMESPACE_URL, f"https://bench.example/{n // 4}")
            text = " ".join(words.choice(WORDS) for _ in range(150))
            batch.append(
                ChunkPoint(
                    id=chunk_point_id(document_id, "v1", n % 4),
                    vector=vectors[n].tolist(),
                    payload={
                        "author": AUTHOR,
                        "document_id": str(document_id),
                        "version": "v1",
                        "chunk_index": n % 4,
                        "kind": "article",
                        "title": f"Post {n // 4}",
                        "source_url": f"https://bench.example/{n // 4}",
                        "text": text,
                        "indexed_at": now,
                    },
                )
            )
            if len(batch) == 500:
                store.upsert(AUTHOR, batch)
                batch = []


def start_serve(home: Path, tgi_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in EXTERNAL_SERVICES} | {
        "LLM_TWIN_HOME": str(home),
        "LLM_TWIN_BACKEND": "tgi",
        "LLM_TWIN_TGI_URL": tgi_url,
        "LLM_TWIN_API_KEYS": json.dumps({KEY: [AUTHOR]}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "llm_twin", "serve", "--port", str(port), "--no-ingest"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
    )


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("serve did not become healthy")


async def measure(backend: TgiBackend, url: str, arguments: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for _ in range(3):  # warm-up: connections, first-call allocations, the consumer's fetch
            await direct(backend, 4)
            await full(client, url, 4)
        pairs: list[tuple[Answer, Answer]] = []
        for _ in range(arguments.requests):
            pairs.append(
                (await direct(backend, arguments.tokens), await full(client, url, arguments.tokens))
            )
        overheads = [(f.ttft_s - d.ttft_s) * 1000 for d, f in pairs]
        direct_rates = [d.tokens_per_s for d, _ in pairs if d.tokens_per_s]
        full_rates = [f.tokens_per_s for _, f in pairs if f.tokens_per_s]
        report |= {
            "direct_ttft_ms_p50": round(percentile([d.ttft_s * 1000 for d, _ in pairs], 50), 2),
            "full_ttft_ms_p50": round(percentile([f.ttft_s * 1000 for _, f in pairs], 50), 2),
            "ttft_overhead_ms_p50": round(percentile(overheads, 50), 2),
            "ttft_overhead_ms_p95": round(percentile(overheads, 95), 2),
            "direct_tokens_per_s": round(statistics.median(direct_rates), 2),
            "full_tokens_per_s": round(statistics.median(full_rates), 2),
            "throughput_ratio": round(
                statistics.median(full_rates) / statistics.median(direct_rates), 3
            ),
            "tokens_complete": all(d.tokens == f.tokens == arguments.tokens for d, f in pairs),
        }
        progress(
            f"concurrency 1: TTFT overhead p50 {report['ttft_overhead_ms_p50']} ms, "
            f"p95 {report['ttft_overhead_ms_p95']} ms, ratio {report['throughput_ratio']}"
        )
        by_concurrency: dict[str, Any] = {}
        for concurrency in (1, 8, 32):
            row: dict[str, Any] = {}
            for name in ("direct", "full"):
                started = time.perf_counter()
                answers = await asyncio.gather(
                    *(
                        direct(backend, arguments.tokens)
                        if name == "direct"
                        else full(client, url, arguments.tokens)
                        for _ in range(concurrency)
                    )
                )
                elapsed = time.perf_counter() - started
                row[name] = {
                    "ttft_ms_p50": round(percentile([a.ttft_s * 1000 for a in answers], 50), 2),
                    "ttft_ms_p95": round(percentile([a.ttft_s * 1000 for a in answers], 95), 2),
                    "aggregate_tokens_per_s": round(sum(a.tokens for a in answers) / elapsed, 2),
                    "complete": all(a.tokens == arguments.tokens for a in answers),
                }
                if name == "full":
                    row[name]["worker_ms_p50"] = {
                        phase: round(
                            statistics.median(a.timings[phase] for a in answers if a.timings), 2
                        )
                        for phase in ("queue_ms", "retrieval_ms", "first_token_ms")
                    }
            row["throughput_ratio"] = round(
                row["full"]["aggregate_tokens_per_s"] / row["direct"]["aggregate_tokens_per_s"], 3
            )
            by_concurrency[str(concurrency)] = row
            progress(f"concurrency {concurrency}: {json.dumps(row)}")
        report["by_concurrency"] = by_concurrency
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=30, help="pairs at concurrency 1")
    parser.add_argument("--tokens", type=int, default=40, help="new tokens per answer")
    parser.add_argument("--token-ms", type=float, default=25.0, help="the stand-in model's pace")
    parser.add_argument("--tgi-url", help="a real TGI server instead of the stand-in")
    arguments = parser.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="llm-twin-genbench-") as scratch:
        if arguments.tgi_url:
            tgi_url = arguments.tgi_url
        else:
            fake = stack.enter_context(running(FakeTgi(token_delay_s=arguments.token_ms / 1000)))
            tgi_url = fake.url
        home = Path(scratch) / "home"
        settings = PlatformSettings(home=home)
        progress(f"filling {CHUNKS} chunks; starting a private stack in {home}")
        fill_store(settings.qdrant_path)
        localstack.up(settings)
        stack.callback(localstack.down, settings)
        port = free_port()
        log = Path(scratch) / "serve.log"
        process = start_serve(home, tgi_url, port, log)

        def stop() -> None:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)

        stack.callback(stop)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process, log)
        progress(f"serve is up at {url}; measuring")
        backend = TgiBackend(tgi_url, timeout_s=60, retries=0)
        report: dict[str, Any] = {
            "model": tgi_url
            if arguments.tgi_url
            else f"stand-in TGI, {arguments.token_ms} ms/token",
            "chunks_in_store": CHUNKS,
            "requests": arguments.requests,
            "tokens": arguments.tokens,
            "cpu_count": os.cpu_count(),
        }
        report |= asyncio.run(measure(backend, url, arguments))
    report["targets"] = TARGETS
    report["meets"] = {
        "ttft_overhead_ms_p50": report["ttft_overhead_ms_p50"] <= 50,
        "ttft_overhead_ms_p95": report["ttft_overhead_ms_p95"] <= 150,
        "throughput_ratio": report["throughput_ratio"] >= 0.95,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
