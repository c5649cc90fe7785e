"""Decoding defaults against loops, measured on the embedded default's model; prints JSON.

    .venv/bin/python benchmarks/authors.py --out /tmp/authors
    .venv/bin/python benchmarks/decoding.py --authors /tmp/authors/mark-kvale [--prompts 6]

Small models loop ("a greedy pattern is often misunderstood as a greedy pattern"). For a
grid of repetition penalties and no-repeat n-gram sizes, SmolLM2-135M-Instruct drafts the
same greedy answers to serving's own prompt (llm/prompt.py: the author's passages, then
the request) for documents of one author, and each setting is scored by:

- distinct-2 and distinct-3 of the drafts (style/repetition.py), beside the author's own
  text: a looping model falls far below a person;
- fluency: the drafts' mean negative log-likelihood per token under the model with no
  penalty. A penalty that breaks loops costs little of it; one that forces word salad
  costs much.

The chosen default is the setting that costs the least fluency among those whose
distinct-3 reaches the author's own (a looping model's is far below it; beyond the
author's, more variety is not more like them). Exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from llm.backend import Sampling
from llm.local import generation_options, prompt_ids
from llm.models import resolve
from llm.prompt import Passage, build_messages
from style import repetition
from trainer.lora import load_base

GRID = [(1.0, 0), (1.1, 0), (1.2, 0), (1.0, 3), (1.0, 4), (1.1, 4), (1.2, 3)]


def drafts(
    model: Any, tokenizer: Any, prompts: list[list[int]], options: dict[str, Any]
) -> list[list[int]]:
    import torch

    out = []
    for prompt in prompts:
        with torch.inference_mode():
            generated = model.generate(
                input_ids=torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                **options,
            )
        out.append([int(t) for t in generated[0][len(prompt) :]])
    return out


def fluency(model: Any, prompts: list[list[int]], answers: list[list[int]]) -> float:
    """Mean negative log-likelihood per answer token, under the model with no penalty."""
    import torch

    total, count = 0.0, 0
    for prompt, answer in zip(prompts, answers, strict=True):
        if not answer:
            continue
        ids = torch.tensor([prompt + answer])
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(answer), reduction="sum")
        total += float(loss)
        count += len(answer)
    return total / count if count else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--authors", type=Path, required=True, help="One author's folder")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()
    scratch = tempfile.TemporaryDirectory(prefix="llm-twin-decoding-")
    base = resolve(None, Path(scratch.name))
    model, tokenizer = load_base(base)
    model.eval()
    documents = [p.read_text(encoding="utf-8") for p in sorted(args.authors.glob("*.md"))]
    prompts = []
    for number, text in enumerate(documents[: args.prompts]):
        title = next((line[2:] for line in text.splitlines() if line.startswith("# ")), "it")
        others = [d for i, d in enumerate(documents) if i != number][:2]
        passages = [
            Passage(document_id=uuid.uuid4(), title="", source_url=None, text=d[:800], score=1.0)
            for d in others
        ]
        messages = build_messages("the author", f"Write a short article about {title}", passages)
        prompts.append(prompt_ids(tokenizer, messages))
    human = repetition.report([d[:2000] for d in documents[: args.prompts]])
    results = []
    plain: float | None = None
    for penalty, ngram in GRID:
        sampling = Sampling(temperature=0.0, repetition_penalty=penalty, no_repeat_ngram_size=ngram)
        answers = drafts(
            model, tokenizer, prompts, generation_options(sampling, args.max_new_tokens)
        )
        texts = [tokenizer.decode(a, skip_special_tokens=True) for a in answers]
        nll = fluency(model, prompts, answers)
        plain = nll if plain is None else plain
        result = {
            "repetition_penalty": penalty,
            "no_repeat_ngram_size": ngram,
            **repetition.report(texts),
            "fluency_nll": round(nll, 4),
            "fluency_cost": round(nll - plain, 4),
            "sample": texts[0][:300],
        }
        print(json.dumps(result), file=sys.stderr, flush=True)
        results.append(result)
    level = human["distinct_3"] or 0.0
    eligible = [r for r in results if (r["distinct_3"] or 0.0) >= level] or results
    chosen = min(eligible, key=lambda r: r["fluency_cost"])
    print(
        json.dumps(
            {
                "human": human,
                "grid": results,
                "chosen": {k: chosen[k] for k in ("repetition_penalty", "no_repeat_ngram_size")},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
