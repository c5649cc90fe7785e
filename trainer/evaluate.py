"""Evaluation of a twin on its snapshot's held-out documents.

1. perplexity of the base model and of the adapter on the held-out texts (per
   response token, the training format);
2. retrieval: for each held-out document, a query taken from its middle
   sentence; hit@5 and MRR of that document in the author's own collection;
3. style: the base model and the twin each draft every held-out instruction
   (greedy, the serving prompt with the author's passages, the held-out
   documents kept out of retrieval so nobody copies the answer), and each
   draft set is scored against the held-out texts' style profile
   (trainer/style.py);
4. with a judge configured (trainer/judge.py), its mean 1-5 rating of each
   draft set against the held-out texts.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infra import snapshots
from llm.local import prompt_ids
from llm.prompt import Passage, build_messages
from schemas.training import AdapterRegistered, DatasetSnapshot, Split
from trainer import style
from trainer.errors import NothingToDo
from trainer.judge import Judge
from trainer.lora import TrainConfig, examples, load_base, mean_loss
from vectorstore.embedder import Embedder
from vectorstore.store import VectorStore

HIT_AT = 5
_SENTENCES = re.compile(r"(?<=[.!?~])\s+")


class NothingToEvaluate(NothingToDo, ValueError):
    pass


@dataclass(frozen=True)
class Retrieval:
    store: VectorStore
    embedder: Embedder
    k: int = 5

    def search(self, author: str, query: str, k: int) -> list[tuple[uuid.UUID, Passage]]:
        hits = self.store.search(author, self.embedder.encode_query(query), k)
        return [
            (
                uuid.UUID(str(hit.payload["document_id"])),
                Passage(
                    document_id=uuid.UUID(str(hit.payload["document_id"])),
                    title=str(hit.payload.get("title") or ""),
                    source_url=hit.payload.get("source_url"),
                    text=str(hit.payload.get("text") or ""),
                    score=hit.score,
                ),
            )
            for hit in hits
        ]


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
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    from peft import PeftModel

    rows = snapshots.rows(snapshot, Split.TEST)[:max_samples]
    if not rows:
        raise NothingToEvaluate(f"{snapshot.snapshot_id} holds no held-out documents")
    held_out = {uuid.UUID(row["document_id"]) for row in snapshots.rows(snapshot, Split.TEST)}

    # 1. perplexity
    progress("perplexity")
    model, tokenizer = load_base(base_model)
    device = next(model.parameters()).device
    config = TrainConfig(base_model=base_model)
    held = [e for row in rows for e in examples(row, tokenizer, config)]
    base_loss = mean_loss(model, held, tokenizer, config.batch_size, device)
    twin = PeftModel.from_pretrained(model, adapter.path).eval()
    twin_loss = mean_loss(twin, held, tokenizer, config.batch_size, device)

    # 2. retrieval
    progress("retrieval")
    ranks = []
    for row in rows:
        found = retrieval.search(snapshot.author, _query_from(row["response"]), HIT_AT)
        ids = [document_id for document_id, _ in found]
        target = uuid.UUID(row["document_id"])
        ranks.append(ids.index(target) + 1 if target in ids else None)

    # 3. style of drafts, held-out documents kept out of retrieval
    progress("drafting with the base model and the twin")
    reference = style.profile(row["response"] for row in rows)
    drafts: dict[str, list[str]] = {"base": [], "twin": []}
    for row in rows:
        found = retrieval.search(snapshot.author, row["instruction"], retrieval.k * 3)
        passages = [p for document_id, p in found if document_id not in held_out][: retrieval.k]
        messages = build_messages(author_name, row["instruction"], passages)
        # Serving's own prompt: the tokenizer's specials in the passages broken as there.
        prompt = prompt_ids(tokenizer, messages)
        with twin.disable_adapter():
            drafts["base"].append(_draft(twin, tokenizer, prompt, max_new_tokens, device))
        drafts["twin"].append(_draft(twin, tokenizer, prompt, max_new_tokens, device))

    references = [row["response"] for row in rows]
    judged = None
    if judge is not None:
        progress("asking the judge")
        judged = {
            "base": judge(references, drafts["base"]),
            "twin": judge(references, drafts["twin"]),
        }
    return {
        "adapter_id": adapter.adapter_id,
        "snapshot_id": snapshot.snapshot_id,
        "samples": len(rows),
        "perplexity": {"base": _perplexity(base_loss), "twin": _perplexity(twin_loss)},
        "style_similarity": {
            "base": round(style.similarity(drafts["base"], reference), 4),
            "twin": round(style.similarity(drafts["twin"], reference), 4),
        },
        "retrieval": {
            "hit_at_5": sum(r is not None for r in ranks) / len(ranks),
            "mrr": sum(1 / r for r in ranks if r is not None) / len(ranks),
            "queries": len(ranks),
        },
        "judge": judged,
    }


def _query_from(text: str) -> str:
    """The held-out document's middle sentence (its first 30 words): what a reader recalls."""
    sentences = [s for s in _SENTENCES.split(text.strip()) if s.strip()]
    middle = sentences[len(sentences) // 2] if sentences else text
    return " ".join(middle.split()[:30])


def _draft(model: Any, tokenizer: Any, prompt: list[int], max_new_tokens: int, device: Any) -> str:
    import torch

    with torch.inference_mode():
        output = model.generate(
            input_ids=torch.tensor([prompt], device=device),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    return str(tokenizer.decode(output[0][len(prompt) :], skip_special_tokens=True))


def _perplexity(loss: float | None) -> float | None:
    return round(math.exp(loss), 4) if loss is not None else None
