"""Does the twin sound like its author? Real writing, the real base model, CPU; prints JSON.

    .venv/bin/python benchmarks/authors.py --out /tmp/authors      # real authors' writing
    .venv/bin/python benchmarks/twin_quality.py --authors /tmp/authors \\
        [--author brian-d-foy ...] [--epochs 2] [--eval-samples 8] [--out results.json]

For each author (one folder of Markdown documents): the documents are cleaned, chunked
and embedded as the feature pipeline does, into the embedded warehouse and a local Qdrant
store; a snapshot is built (infra/snapshots.py); the embedded default's base model
(SmolLM2-135M-Instruct) is fine-tuned with LoRA on it with the default training settings
(trainer/lora.py), timed, with the process's peak memory sampled; then the adapter is
evaluated as ``llm-twin eval`` does (trainer/evaluate.py). Reported per author:

- coverage: the share of the training documents' characters that some training example
  holds (all of it, by construction), beside the share the former one-example-per-document,
  truncated-at-512-tokens scheme trained on, counted with the same tokenizer;
- perplexity base -> twin on held-out documents, and on the reference writers' text;
- attribution twin / base / human, style similarity twin / base / human, copying and
  repetition, from the evaluation report;
- training time (s), steps, tokens, packing efficiency, peak RSS (MiB).

Targets (the issue's): held-out perplexity at least 20 % below the base model's; the twin's
attribution above the base model's; training within 30 minutes for ~60k words. It exits 0
whatever the numbers: a benchmark reports, it does not fail CI.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from infra import localstack, snapshots, warehouse
from infra.settings import PlatformSettings
from llm.models import resolve
from schemas.documents import Author, DocumentKind, RawDocument
from schemas.training import Split
from streams.chunk import chunk
from streams.clean import clean
from streams.run import EmbedderTokens
from streams.sinks import points_of
from trainer.evaluate import StoreRetrieval, evaluate
from trainer.lora import encode, load_base, train
from trainer.settings import TrainSettings
from vectorstore.embedder import Embedder
from vectorstore.store import VectorStore


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class PeakMemory:
    """The process's resident memory, sampled every half second; the peak, in MiB."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            self._stop.wait(0.5)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mib(self) -> float:
        return round(self.peak / 2**20, 1)


def documents_of(folder: Path) -> list[RawDocument]:
    author = Author(slug=folder.name, display_name=folder.name.replace("-", " ").title())
    now = datetime.now(UTC)
    found = []
    for number, path in enumerate(sorted(folder.glob("*.md"))):
        text = path.read_text(encoding="utf-8")
        first = next((line for line in text.splitlines() if line.startswith("# ")), "")
        found.append(
            RawDocument.build(
                author=author,
                kind=DocumentKind.ARTICLE,
                platform="perldoc",
                canonical_source=f"file:{folder.name}/{path.name}",
                title=first[2:].strip() or path.stem,
                content=text,
                crawled_at=now,
                published_at=now - timedelta(days=number),
            )
        )
    return found


def index(documents: list[RawDocument], db: Any, store: VectorStore, embedder: Embedder) -> None:
    """Cleaned, chunked and embedded as the feature pipeline does."""
    now = datetime.now(UTC)
    cleaned = []
    store.ensure_collection(documents[0].author.slug)
    for document in documents:
        text = clean(document)
        chunks = chunk(text, document.kind, EmbedderTokens(embedder))
        vectors = embedder.encode([c.text for c in chunks]).tolist()
        store.upsert(document.author.slug, points_of(document, chunks, vectors, "minilm", now))
        cleaned.append(warehouse.Cleaned(document, text, len(chunks), None))
    warehouse.save_indexed(db, cleaned, now)


def coverage(snapshot: Any, db: Any, tokenizer: Any, config: Any) -> dict[str, float]:
    """Characters of the training documents in some example; tokens the old scheme kept."""
    rows = snapshots.rows(snapshot, Split.TRAIN)
    train_ids = {d.document_id for d in snapshot.documents if d.split == "train"}
    texts = [
        str(r["text"])
        for r in db[warehouse.CLEANED_DOCUMENTS].find({"author": snapshot.author})
        if r["_id"] in train_ids
    ]
    total_chars = sum(len("".join(t.split())) for t in texts)
    covered = sum(len("".join(str(r["response"]).split())) for r in rows)
    whole_tokens = kept_tokens = 0
    for text in texts:
        prompt, response = encode(
            {"instruction": "Write an article.", "response": text}, tokenizer, config
        )
        whole_tokens += len(response)
        kept_tokens += max(0, min(len(response), config.max_seq_tokens - len(prompt)))
    return {
        "examples_cover_chars": round(covered / total_chars, 4),
        "former_scheme_trained_tokens": round(kept_tokens / whole_tokens, 4),
        "train_documents": len(texts),
        "train_examples": len(rows),
    }


def one_author(folder: Path, home: Path, db: Any, args: argparse.Namespace) -> dict[str, Any]:
    documents = documents_of(folder)
    words = sum(len(d.content.split()) for d in documents)
    say(f"{folder.name}: {len(documents)} documents, {words} words")
    embedder = Embedder.load()
    location = str(home / "qdrant" / folder.name)
    with VectorStore.open(location, dimensions=embedder.dimensions) as store:
        index(documents, db, store, embedder)
    built = snapshots.build(db, folder.name, home / "snapshots", datetime.now(UTC))
    base = resolve(None, home)
    settings = TrainSettings(epochs=args.epochs)
    config = settings.config(base)
    _, tokenizer = load_base(base)
    covered = coverage(built, db, tokenizer, config)
    say(f"{folder.name}: {covered}")
    steps: list[tuple[int, int, float]] = []

    def progress(step: int, total: int, loss: float) -> None:
        steps.append((step, total, loss))
        if step % 10 == 0:
            say(f"  step {step}/{total} loss {loss:.3f}")

    started = time.perf_counter()
    with PeakMemory() as memory:
        result = train(
            built,
            config,
            home / "adapters",
            base_model_name="SmolLM2-135M-Instruct",
            progress=progress,
        )
    trained_s = time.perf_counter() - started
    metrics = json.loads((Path(result.adapter.path) / "training.json").read_text())
    say(f"{folder.name}: trained in {trained_s:.0f}s; evaluating")
    started = time.perf_counter()
    with VectorStore.open(location, dimensions=embedder.dimensions) as store:
        report = evaluate(
            result.adapter,
            built,
            StoreRetrieval(store, embedder),
            base_model=base,
            author_name=documents[0].author.display_name,
            max_samples=args.eval_samples,
            max_new_tokens=args.max_new_tokens,
        )
    evaluated_s = time.perf_counter() - started
    perplexity = report["perplexity"]
    return {
        "author": folder.name,
        "documents": len(documents),
        "words": words,
        "coverage": covered,
        "training": {
            "seconds": round(trained_s, 1),
            "steps": metrics["steps"],
            "train_tokens": metrics["train_tokens"],
            "sequences": metrics["train_sequences"],
            "packing_efficiency": metrics["packing_efficiency"],
            "peak_rss_mib": memory.mib,
            "final_loss": steps[-1][2] if steps else None,
        },
        "evaluation_seconds": round(evaluated_s, 1),
        "perplexity_drop": round(1 - perplexity["twin"] / perplexity["base"], 4),
        "report": report,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--authors", type=Path, required=True)
    parser.add_argument("--author", action="append", default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--eval-samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folders = sorted(p for p in args.authors.iterdir() if p.is_dir())
    if args.author:
        folders = [p for p in folders if p.name in args.author]
    results = []
    with tempfile.TemporaryDirectory(prefix="llm-twin-quality-") as scratch:
        home = Path(scratch)
        settings = PlatformSettings(home=home)
        localstack.up(settings)
        try:
            uri = localstack.endpoints(settings).mongodb_uri
            assert uri is not None
            client = warehouse.connect(uri)
            db = client["quality"]
            for folder in folders:
                results.append(one_author(folder, home, db, args))
                if args.out:
                    args.out.write_text(json.dumps(results, indent=2))
            client.close()
        finally:
            localstack.down(settings)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
