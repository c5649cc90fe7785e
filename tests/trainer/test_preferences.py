"""Model-written instructions, preference pairs, and the DPO stage on a tiny model."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime
from pathlib import Path

import torch

from infra import snapshots, warehouse
from llm.local import LocalBackend
from schemas.training import Split
from tests import tiny_model
from tests.trainer.test_training import PROJECTIONS, index, voice_text
from trainer.generate import base_answers, instruction_writer
from trainer.lora import TrainConfig, _collate, _sequence_logprob, example, train


def margin(adapter_path: str, model_dir: Path, rows: list[dict[str, str]]) -> float:
    """Mean log-probability margin of the author's text over the base model's answer."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(model_dir)), adapter_path
    ).eval()
    config = TrainConfig(base_model=str(model_dir), max_seq_tokens=128)
    chosen = _collate(
        [example(r | {"response": r["chosen"]}, tokenizer, config) for r in rows], tokenizer, "cpu"
    )
    rejected = _collate(
        [example(r | {"response": r["rejected"]}, tokenizer, config) for r in rows],
        tokenizer,
        "cpu",
    )
    with torch.inference_mode():
        return float((_sequence_logprob(model, chosen) - _sequence_logprob(model, rejected)).mean())


def test_preference_pairs_and_dpo_widen_the_authors_margin(
    mongodb_uri: str, tmp_path: Path
) -> None:
    model_dir = tiny_model.build(tmp_path / "model")
    backend = LocalBackend.load(model_dir)
    # A fixed author: the train/test split hashes document ids, which derive from the
    # slug, so a random slug made this a different (sometimes failing) test each run.
    # On this tiny model some splits leave DPO nothing to widen ("zed-bbdb04": 341.8 vs 342.2).
    author = "zed-preferences"
    client = warehouse.connect(mongodb_uri)
    try:
        db = client["preference_tests"]
        index(db, author, [voice_text(random.Random(10)) for _ in range(10)])
        built = snapshots.build(
            db,
            author,
            tmp_path / "snapshots",
            datetime.now(UTC),
            instruct=instruction_writer(backend),
            reject=base_answers(backend),
        )
    finally:
        client.close()
    train_rows = snapshots.rows(built, Split.TRAIN)
    preference_rows = snapshots.rows(built, Split.PREFERENCE)
    assert built.counts.preference == len(preference_rows) > 0
    assert {r["document_id"] for r in preference_rows} <= {r["document_id"] for r in train_rows}
    assert all(r["chosen"] != r["rejected"] for r in preference_rows)
    assert all(r["instruction"] for r in train_rows)

    common = TrainConfig(
        base_model=str(model_dir),
        rank=8,
        alpha=16,
        learning_rate=1e-2,
        epochs=4,
        max_seq_tokens=128,
        target_modules=[*PROJECTIONS, "lm_head"],
    )
    sft = train(built, common, tmp_path / "adapters", base_model_name="t")
    dpo = train(
        built,
        # beta small enough that DPO's loss does not saturate: SFT on this tiny model
        # puts the author's text hundreds of nats above the base model's answers (at
        # beta 0.1 the loss was 1e-10 and the margins differed by noise).
        dataclasses.replace(common, dpo=True, dpo_epochs=4, dpo_learning_rate=5e-3, dpo_beta=1e-3),
        tmp_path / "adapters",
        base_model_name="t",
    )
    assert dpo.adapter.adapter_id != sft.adapter.adapter_id  # another configuration
    assert margin(dpo.adapter.path, model_dir, preference_rows) > margin(
        sft.adapter.path, model_dir, preference_rows
    )
