"""Promotion gated on style: a new adapter answers only if it is not worse, beyond noise.

The reports are shaped as trainer/evaluate.py writes them; their noise is the bootstrap
standard error of real per-draft samples (style/noise.py). Registration goes through
the real warehouse and broker (trainer/announce.py), as the trainer's does.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from pymongo.database import Database

from infra import adapters as registry
from infra import kafka, localstack, warehouse
from style import noise
from tests.test_adapter_registry import adapter
from trainer import promotion
from trainer.announce import register_and_announce
from trainer.lora import TrainResult


def _share(probabilities: Sequence[float]) -> float:
    return sum(p > 0.5 for p in probabilities) / len(probabilities)


def report(
    attribution: float,
    style: float,
    *,
    samples: int = 16,
    seed: int = 0,
    ngram8: float = 0.02,
    longest: int = 60,
) -> dict[str, Any]:
    """An evaluation whose twin drafts are attributed ``attribution`` of the time."""
    rng = random.Random(seed)
    attributed = round(attribution * samples)
    probabilities = [0.9] * attributed + [0.1] * (samples - attributed)
    rng.shuffle(probabilities)
    styles = [min(1.0, max(0.0, rng.gauss(style, 0.05))) for _ in range(samples)]
    return {
        "attribution": {"twin": _share(probabilities), "base": 0.1, "human": 0.9},
        "style_similarity": {"twin": sum(styles) / samples, "base": 0.4, "human": 0.8},
        "copying": {
            "max_overlap_chars": longest,
            "ngram8_overlap": ngram8,
            "human": {"max_overlap_chars": 80, "ngram8_overlap": 0.03},
        },
        "noise": {
            "attribution": noise.standard_error(probabilities, _share),
            "style_similarity": noise.standard_error(styles, lambda s: sum(s) / len(s)),
        },
    }


def test_an_adapter_within_noise_of_the_active_one_is_accepted() -> None:
    active = report(0.75, 0.70)
    # One draft fewer attributed of 16, a hair less style: chance, not a worse adapter.
    assert promotion.refusal(report(0.6875, 0.69, seed=1), active) is None
    assert promotion.refusal(report(0.9, 0.75, seed=2), active) is None


@pytest.mark.parametrize(
    ("candidate", "says"),
    [
        (report(0.25, 0.70, seed=3), "attribution"),
        (report(0.75, 0.40, seed=4), "style similarity"),
        (report(0.75, 0.70, seed=5, ngram8=0.45), "copying"),
        (report(0.75, 0.70, seed=6, longest=2000), "copying"),
        (None, "not evaluated"),
    ],
)
def test_an_adapter_worse_on_any_axis_is_refused(
    candidate: dict[str, Any] | None, says: str
) -> None:
    refused = promotion.refusal(candidate, report(0.75, 0.70))
    assert refused is not None and refused.startswith(says), refused


def test_the_first_adapter_needs_only_to_not_recite() -> None:
    assert promotion.refusal(report(0.1, 0.1), None) is None
    assert promotion.refusal(None, None) is None
    recited = promotion.refusal(report(0.9, 0.9, ngram8=0.9), None)
    assert recited is not None and "8-grams" in recited


def _adapter(author: str, name: str, perplexity: float) -> TrainResult:
    return TrainResult(adapter(author, name, perplexity), base_eval_loss=None, reused=False)


def test_the_registry_keeps_each_verdict_and_serves_only_what_passed(
    db: Database[warehouse.Document], stack: localstack.Endpoints
) -> None:
    assert stack.kafka_bootstrap_servers
    author = f"gia-{uuid.uuid4().hex[:6]}"
    with kafka.Publisher(
        kafka.make_producer(stack.kafka_bootstrap_servers, one_record_per_batch=True)
    ) as publisher:

        def offer(name: str, perplexity: float, evaluation: dict[str, Any] | None) -> bool:
            result = _adapter(author, name, perplexity)
            return register_and_announce(db, result, publisher, evaluation=evaluation)

        assert offer("first", 12.0, report(0.75, 0.70))
        assert not offer("less-like-them", 11.0, report(0.25, 0.70, seed=3))
        assert not offer("reciting", 11.0, report(0.75, 0.70, ngram8=0.6))
        assert not offer("higher-perplexity", 13.0, report(0.9, 0.8))
        assert not offer("unevaluated", 10.0, None)
        assert offer("as-good", 11.5, report(0.6875, 0.69, seed=1))

    kept = {
        r.adapter.adapter_id.removeprefix(f"{author}-"): r for r in registry.adapters_of(db, author)
    }
    assert [name for name, r in kept.items() if r.active] == ["as-good"]
    assert kept["first"].refused is None and kept["as-good"].refused is None
    reasons = {name: r.refused or "" for name, r in kept.items()}
    assert reasons["less-like-them"].startswith("attribution")
    assert reasons["reciting"].startswith("copying")
    assert reasons["higher-perplexity"].startswith("held-out perplexity")
    assert reasons["unevaluated"] == "not evaluated"
    # Each evaluation is kept with its adapter, for `adapters list` and the next verdict.
    assert kept["less-like-them"].evaluation is not None
    assert kept["less-like-them"].evaluation["attribution"]["twin"] == 0.25
    assert registry.evaluation_of(db, f"{author}-as-good") is not None
