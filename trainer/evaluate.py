"""Evaluation of a twin on its snapshot's held-out documents, against reference points.

Every measure has a reference point: the base model (what training changed) and the
author's own held-out documents (the human ceiling: what the author reaches).

1. perplexity of the base model and of the adapter on the held-out documents' examples
   (per response token, the training format), and on the reference writers' passages
   (style/reference.py): a twin should prefer its own author's text to theirs;
2. retrieval: for each held-out document, a query taken from its middle sentence; hit@5
   and MRR of that document in the author's own collection;
3. drafts: the base model and the twin each draft every held-out document's task (the
   serving prompt with the author's passages, the held-out documents kept out of
   retrieval so nobody copies the answer; greedy, with the local backend's decoding
   defaults against loops: llm/local.py);
4. on the drafts, the base model's and the twin's, and on the held-out documents:
   - attribution: the share a stylometric classifier, trained on the author's training
     documents against the reference writers, attributes to the author
     (style/attribution.py);
   - style similarity to the profile of the author's training documents (style/profile.py);
   - repetition: distinct-2 and distinct-3 (style/repetition.py);
   - copying: the longest verbatim run and the 8-gram overlap with the training text
     (style/copying.py);
   - the same per kind of text, for each kind with at least ``MIN_PER_KIND`` held-out
     documents;
5. noise: the bootstrap standard error of the twin's attribution and style figures
   (style/noise.py), which promotion uses as its tolerance;
6. with a judge configured (trainer/judge.py), its mean 1-5 rating of each draft set.
"""

from __future__ import annotations

import math
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from infra import snapshots
from llm.backend import Sampling
from llm.local import DECODING, generation_options, prompt_ids
from llm.prompt import Passage, build_messages
from schemas.training import AdapterRegistered, DatasetSnapshot, Split
from style import attribution, copying, noise, profile, reference, repetition
from trainer.errors import NothingToDo
from trainer.judge import Judge
from trainer.lora import Stopped, TrainConfig, examples, load_base, mean_loss
from vectorstore.embedder import Embedder
from vectorstore.store import VectorStore

HIT_AT = 5
MIN_PER_KIND = 3
# Reference passages for the perplexity comparison: two per writer, about one example long.
REFERENCE_PASSAGES_PER_WRITER = 2
REFERENCE_PASSAGE_CHARS = 1200
_SENTENCES = re.compile(r"(?<=[.!?~])\s+")


class NothingToEvaluate(NothingToDo, ValueError):
    pass


class Retrieval(Protocol):
    """The author's passages for a query: the store itself, or a running server's search."""

    @property
    def k(self) -> int: ...

    def search(self, author: str, query: str, k: int) -> list[tuple[uuid.UUID, Passage]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StoreRetrieval:
    store: VectorStore
    embedder: Embedder
    k: int = 5

    def search(self, author: str, query: str, k: int) -> list[tuple[uuid.UUID, Passage]]:
        hits = self.store.search(author, self.embedder.encode_query(query), k)
        return passages([{"score": hit.score, **hit.payload} for hit in hits])

    def close(self) -> None:
        self.store.close()


def passages(results: Sequence[dict[str, Any]]) -> list[tuple[uuid.UUID, Passage]]:
    """Search results (the store's payloads, or ``search --json``'s objects) as passages."""
    found = []
    for result in results:
        document_id = uuid.UUID(str(result["document_id"]))
        found.append(
            (
                document_id,
                Passage(
                    document_id=document_id,
                    title=str(result.get("title") or ""),
                    source_url=result.get("source_url"),
                    text=str(result.get("text") or ""),
                    score=float(result.get("score") or 0.0),
                ),
            )
        )
    return found


@dataclass
class _Document:
    """A held-out document: what a person would ask for, its kind, and its text whole."""

    document_id: uuid.UUID
    task: str
    kind: str
    pieces: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n\n".join(str(row["response"]) for row in self.pieces)


def evaluate(
    adapter: AdapterRegistered,
    snapshot: DatasetSnapshot,
    retrieval: Retrieval,
    *,
    base_model: str,
    author_name: str,
    max_samples: int = 16,
    max_new_tokens: int = 128,
    judge: Judge | None = None,
    decoding: Sampling = DECODING,
    progress: Callable[[str], None] = lambda message: None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """The report ``eval --json`` prints and the trainer stores with the adapter.

    ``stop`` set: :class:`Stopped` before the next draft (a trainer asked to stop).
    """
    from peft import PeftModel

    test_rows = snapshots.rows(snapshot, Split.TEST)
    train_rows = snapshots.rows(snapshot, Split.TRAIN)
    held_out = _documents(test_rows)[:max_samples]
    if not held_out:
        raise NothingToEvaluate(f"{snapshot.snapshot_id} holds no held-out documents")
    excluded = {uuid.UUID(row["document_id"]) for row in test_rows}
    training_texts = [d.text for d in _documents(train_rows)]
    human = [d.text for d in held_out]

    # 1. perplexity, on the author's held-out text and on the reference writers'
    progress("perplexity")
    model, tokenizer = load_base(base_model)
    device = next(model.parameters()).device
    config = TrainConfig(base_model=base_model)
    mine = [e for d in held_out for row in d.pieces for e in examples(row, tokenizer, config)]
    others = [e for row in _reference_rows() for e in examples(row, tokenizer, config)]
    base_loss = mean_loss(model, mine, tokenizer, config.batch_size, device)
    base_other = mean_loss(model, others, tokenizer, config.batch_size, device)
    twin = PeftModel.from_pretrained(model, adapter.path).eval()
    twin_loss = mean_loss(twin, mine, tokenizer, config.batch_size, device)
    twin_other = mean_loss(twin, others, tokenizer, config.batch_size, device)

    # 2. retrieval
    progress("retrieval")
    ranks = []
    for document in held_out:
        found = retrieval.search(snapshot.author, _query_from(document.text), HIT_AT)
        ids = [document_id for document_id, _ in found]
        ranks.append(ids.index(document.document_id) + 1 if document.document_id in ids else None)

    # 3. drafts, held-out documents kept out of retrieval
    progress("drafting with the base model and the twin")
    drafts: dict[str, list[str]] = {"base": [], "twin": []}
    options = generation_options(decoding, max_new_tokens)
    for document in held_out:
        if stop is not None and stop.is_set():
            raise Stopped("stopped while drafting for the evaluation")
        found = retrieval.search(snapshot.author, document.task, retrieval.k * 3)
        kept = [p for document_id, p in found if document_id not in excluded][: retrieval.k]
        prompt = prompt_ids(tokenizer, build_messages(author_name, document.task, kept))
        with twin.disable_adapter():
            drafts["base"].append(_draft(twin, tokenizer, prompt, options, device))
        drafts["twin"].append(_draft(twin, tokenizer, prompt, options, device))

    # 4. the measures, on drafts and on the author's own held-out documents
    progress("measuring style")
    sets = {"twin": drafts["twin"], "base": drafts["base"], "human": human}
    classifier = _classifier(training_texts)
    style_reference = profile.profile(training_texts)
    source = copying.Source(training_texts)
    kinds = sorted({d.kind for d in held_out})
    by_kind = {}
    for kind in kinds:
        chosen = [i for i, d in enumerate(held_out) if d.kind == kind]
        if len(chosen) >= MIN_PER_KIND and len(kinds) > 1:
            subset = {name: [texts[i] for i in chosen] for name, texts in sets.items()}
            by_kind[kind] = {
                "samples": len(chosen),
                "attribution": _attribution(classifier, subset),
                "style_similarity": _style(subset, style_reference),
            }
    judged = None
    if judge is not None:
        progress("asking the judge")
        judged = {"base": judge(human, drafts["base"]), "twin": judge(human, drafts["twin"])}
    return {
        "adapter_id": adapter.adapter_id,
        "snapshot_id": snapshot.snapshot_id,
        "samples": len(held_out),
        "perplexity": {
            "base": _perplexity(base_loss),
            "twin": _perplexity(twin_loss),
            "base_on_reference": _perplexity(base_other),
            "twin_on_reference": _perplexity(twin_other),
        },
        "attribution": _attribution(classifier, sets),
        "style_similarity": _style(sets, style_reference),
        "repetition": {name: repetition.report(texts) for name, texts in sets.items()},
        "copying": source.measure(drafts["twin"]).as_json()
        | {
            "base": source.measure(drafts["base"]).as_json(),
            "human": source.measure(human).as_json(),
        },
        "by_kind": by_kind,
        "noise": {
            "attribution": _rounded(
                noise.standard_error(classifier.probabilities(drafts["twin"]), _share)
                if classifier
                else None
            ),
            "style_similarity": _rounded(
                noise.standard_error(
                    drafts["twin"], lambda texts: profile.similarity(texts, style_reference)
                )
            ),
        },
        "retrieval": {
            "hit_at_5": sum(r is not None for r in ranks) / len(ranks),
            "mrr": sum(1 / r for r in ranks if r is not None) / len(ranks),
            "queries": len(ranks),
        },
        "decoding": {
            "temperature": decoding.temperature,
            "repetition_penalty": options.get("repetition_penalty", 1.0),
            "no_repeat_ngram_size": options.get("no_repeat_ngram_size", 0),
            "max_new_tokens": max_new_tokens,
        },
        "judge": judged,
    }


def _documents(rows: Sequence[dict[str, Any]]) -> list[_Document]:
    """Rows (examples) gathered back into their documents, in the snapshot's order."""
    found: dict[str, _Document] = {}
    for row in rows:
        key = str(row["document_id"])
        if key not in found:
            found[key] = _Document(
                uuid.UUID(key), str(row.get("task") or row["instruction"]), str(row["kind"])
            )
        found[key].pieces.append(row)
    return list(found.values())


def _reference_rows() -> list[dict[str, Any]]:
    chosen = reference.passages(
        reference.texts(),
        REFERENCE_PASSAGE_CHARS,
        limit_per_writer=REFERENCE_PASSAGES_PER_WRITER,
    )
    return [
        {"instruction": snapshots.instruction_for("article", "blog", t.title), "response": t.text}
        for t in chosen
    ]


def _classifier(training_texts: list[str]) -> attribution.Attribution | None:
    try:
        return attribution.train(training_texts)
    except attribution.TooLittleText:
        return None


def _attribution(
    classifier: attribution.Attribution | None, sets: dict[str, list[str]]
) -> dict[str, float | None]:
    """The share of each set attributed to the author; the human set cut like the drafts."""
    if classifier is None:
        return dict.fromkeys(sets)
    return {
        name: _rounded(classifier.share(_comparable(texts) if name == "human" else texts))
        for name, texts in sets.items()
    }


def _share(probabilities: Sequence[float]) -> float:
    return sum(p > 0.5 for p in probabilities) / len(probabilities)


def _comparable(texts: list[str]) -> list[str]:
    """Held-out documents cut to a draft's length: a classifier is surer of longer texts."""
    return [reference.cut(text, attribution.PASSAGE_CHARS)[0] for text in texts if text.strip()]


def _style(sets: dict[str, list[str]], against: profile.Profile) -> dict[str, float]:
    return {name: round(profile.similarity(texts, against), 4) for name, texts in sets.items()}


def _query_from(text: str) -> str:
    """The held-out document's middle sentence (its first 30 words): what a reader recalls."""
    sentences = [s for s in _SENTENCES.split(text.strip()) if s.strip()]
    middle = sentences[len(sentences) // 2] if sentences else text
    return " ".join(middle.split()[:30])


def _draft(
    model: Any, tokenizer: Any, prompt: list[int], options: dict[str, Any], device: Any
) -> str:
    import torch

    with torch.inference_mode():
        output = model.generate(
            input_ids=torch.tensor([prompt], device=device),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=device),
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            **options,
        )
    return str(tokenizer.decode(output[0][len(prompt) :], skip_special_tokens=True))


def _perplexity(loss: float | None) -> float | None:
    return round(math.exp(loss), 4) if loss is not None else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
