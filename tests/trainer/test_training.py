"""Snapshots from the real warehouse, and LoRA training of a tiny model on them (CPU).

The synthetic author has a voice of their own: lowercase, tildes, and a
vocabulary nobody else uses. Training on their snapshot must make their
held-out documents more likely under the model than they were before.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch
from pymongo.database import Database

from infra import localstack, snapshots, warehouse
from infra.ports import free_port
from infra.settings import PlatformSettings
from schemas.documents import Author, DocumentKind, RawDocument
from schemas.training import DatasetSnapshot, Split
from tests import tiny_model
from tests.serving.test_up import read_until, start_cli
from tests.support import run_cli
from trainer.lora import Stopped, TrainConfig, train

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
VOICE = ["splendid", "moorland", "kettle", "drizzle", "indeed", "quietly", "lantern", "bramble"]


def voice_text(rng: random.Random, words: int = 60) -> str:
    """Lowercase, tildes between clauses, the same small vocabulary."""
    clauses = [" ".join(rng.choice(VOICE) for _ in range(6)) for _ in range(words // 6)]
    return " ~ ".join(clauses) + " ~"


def index(
    db: Database[warehouse.Document], author: str, texts: list[str], *, first: int = 0
) -> list[RawDocument]:
    now = datetime.now(UTC)
    documents = [
        RawDocument.build(
            author=Author(slug=author, display_name="Zed Moor"),
            kind=DocumentKind.POST,
            platform="linkedin",
            canonical_source=f"https://{author}.example/posts/{n}",
            source_url=f"https://{author}.example/posts/{n}",
            title=f"note {n}",
            content=text,
            published_at=now - timedelta(days=n),
            crawled_at=now,
        )
        for n, text in enumerate(texts, first)
    ]
    warehouse.save_indexed(db, [warehouse.Cleaned(d, d.content, 1, None) for d in documents], now)
    return documents


@pytest.fixture
def author() -> str:
    return f"zed-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model.build(tmp_path_factory.mktemp("tiny"))


def test_a_snapshot_splits_by_document_scrubs_pii_and_keeps_sides(
    db: Database[warehouse.Document], author: str, tmp_path: Path
) -> None:
    rng = random.Random(1)
    texts = [voice_text(rng) for _ in range(30)]
    texts[0] += " write to zed.moor@example.org or call +44 20 7946 0958 ~"
    documents = index(db, author, texts)
    first = snapshots.build(db, author, tmp_path, datetime.now(UTC))

    assert first.counts.train + first.counts.test == 30
    assert 0 < first.counts.test < 30
    train_rows = snapshots.rows(first, Split.TRAIN)
    test_rows = snapshots.rows(first, Split.TEST)
    train_ids = {r["document_id"] for r in train_rows}
    test_ids = {r["document_id"] for r in test_rows}
    assert not train_ids & test_ids
    assert train_ids | test_ids == {str(d.document_id) for d in documents}
    everything = json.dumps(train_rows + test_rows)
    assert "zed.moor@example.org" not in everything and "7946" not in everything
    assert "[email]" in everything and "[phone]" in everything
    assert all(r["instruction"].startswith("Write a LinkedIn post about") for r in train_rows)

    # More writing later: every document keeps its side in the new snapshot.
    index(db, author, [voice_text(rng) for _ in range(30, 40)])
    second = snapshots.build(db, author, tmp_path, datetime.now(UTC) + timedelta(seconds=1))
    sides = {str(d.document_id): d.split for d in second.documents}
    assert all(sides[i] == "train" for i in train_ids)
    assert all(sides[i] == "test" for i in test_ids)
    assert second.snapshot_id != first.snapshot_id


def test_a_forgotten_document_is_never_in_a_later_snapshot(
    db: Database[warehouse.Document], author: str, tmp_path: Path
) -> None:
    rng = random.Random(2)
    documents = index(db, author, [voice_text(rng) for _ in range(5)])
    gone = documents[0].document_id
    warehouse.forget_document(db, gone, author, datetime.now(UTC))
    built = snapshots.build(db, author, tmp_path, datetime.now(UTC))
    assert gone not in {d.document_id for d in built.documents}
    rows = snapshots.rows(built, Split.TRAIN) + snapshots.rows(built, Split.TEST)
    assert str(gone) not in {r["document_id"] for r in rows}
    assert len(rows) == 4


def test_an_author_without_documents_has_nothing_to_snapshot(
    db: Database[warehouse.Document], tmp_path: Path
) -> None:
    with pytest.raises(snapshots.NothingToSnapshot):
        snapshots.build(db, "nobody-at-all", tmp_path, datetime.now(UTC))


def test_training_lowers_held_out_loss_and_the_adapter_reloads_and_merges(
    db: Database[warehouse.Document], author: str, tmp_path: Path, model_dir: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rng = random.Random(3)
    index(db, author, [voice_text(rng) for _ in range(24)])
    built = snapshots.build(db, author, tmp_path / "snapshots", datetime.now(UTC))
    assert built.counts.test > 0
    config = TrainConfig(
        base_model=str(model_dir),
        rank=8,
        alpha=16,
        learning_rate=1e-2,
        epochs=20,
        # A random tiny model's frozen, random output layer caps what LoRA on the inner
        # layers alone can learn (measured: 5.8 -> 5.3 nats); with it, 5.8 -> 1.3.
        target_modules=[*PROJECTIONS, "lm_head"],
        batch_size=4,
        max_seq_tokens=160,
        checkpoint_every=1000,
    )
    steps: list[int] = []
    result = train(
        built,
        config,
        tmp_path / "adapters",
        base_model_name="tiny",
        progress=lambda step, total, loss: steps.append(step),
    )
    adapter = result.adapter
    assert result.base_eval_loss is not None and adapter.eval_loss is not None
    assert adapter.eval_loss < result.base_eval_loss * 0.5, (result.base_eval_loss, adapter)
    assert adapter.eval_perplexity is not None and adapter.eval_perplexity < 2.7183 ** (
        result.base_eval_loss
    )
    assert steps == list(range(1, len(steps) + 1))
    path = Path(adapter.path)
    assert (path / "adapter_config.json").is_file() and (path / "README.md").is_file()
    assert (path / "tokenizer.json").is_file()

    # The adapter reloads in peft and merges into the base with the same outputs.
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    loaded = PeftModel.from_pretrained(base, str(path)).eval()
    ids = torch.tensor([[5, 17, 42, 9, 11]])
    with torch.inference_mode():
        adapted = loaded(input_ids=ids).logits
        merged = loaded.merge_and_unload()(input_ids=ids).logits
    assert torch.allclose(adapted, merged, atol=1e-4)

    # The same snapshot with the same configuration: the adapter is reused, not retrained.
    again = train(built, config, tmp_path / "adapters", base_model_name="tiny")
    assert again.reused and again.adapter.adapter_id == adapter.adapter_id


def short_run(
    db: Database[warehouse.Document],
    author: str,
    tmp_path: Path,
    model_dir: Path,
    *,
    seed: int,
    checkpoint_every: int,
) -> tuple[DatasetSnapshot, TrainConfig]:
    """A 16-document snapshot and a short two-epoch run of the tiny model on it."""
    rng = random.Random(seed)
    index(db, author, [voice_text(rng) for _ in range(16)])
    built = snapshots.build(db, author, tmp_path / "snapshots", datetime.now(UTC))
    config = TrainConfig(
        base_model=str(model_dir),
        rank=4,
        epochs=2,
        batch_size=2,
        max_seq_tokens=96,
        checkpoint_every=checkpoint_every,
    )
    return built, config


def test_a_killed_training_resumes_from_its_checkpoint(
    db: Database[warehouse.Document], author: str, tmp_path: Path, model_dir: Path
) -> None:
    built, config = short_run(db, author, tmp_path, model_dir, seed=4, checkpoint_every=2)

    def die_at_step_5(step: int, total: int, loss: float) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(built, config, tmp_path / "adapters", base_model_name="tiny", progress=die_at_step_5)
    steps: list[int] = []
    result = train(
        built,
        config,
        tmp_path / "adapters",
        base_model_name="tiny",
        progress=lambda step, total, loss: steps.append(step),
    )
    assert steps[0] == 5, "it resumed after the checkpoint at step 4, not from the start"
    assert not result.reused and Path(result.adapter.path).is_dir()


def test_a_stopped_training_keeps_its_last_step_and_the_next_run_resumes_there(
    db: Database[warehouse.Document], author: str, tmp_path: Path, model_dir: Path
) -> None:
    """Ctrl-C or SIGTERM reaches a training run at its next step, not after the whole run."""
    # No periodic checkpoint before the end: only the stop's own checkpoint can save step 3.
    built, config = short_run(db, author, tmp_path, model_dir, seed=5, checkpoint_every=1000)
    stop = threading.Event()

    def stop_at_step_3(step: int, total: int, loss: float) -> None:
        if step == 3:
            stop.set()  # as the supervisor does from another thread

    with pytest.raises(Stopped, match="stopped at step 3 of"):
        train(
            built,
            config,
            tmp_path / "adapters",
            base_model_name="tiny",
            progress=stop_at_step_3,
            stop=stop,
        )
    steps: list[int] = []
    result = train(
        built,
        config,
        tmp_path / "adapters",
        base_model_name="tiny",
        progress=lambda step, total, loss: steps.append(step),
        stop=threading.Event(),
    )
    assert steps[0] == 4, "it resumed after the step it stopped at"
    assert not result.reused and Path(result.adapter.path).is_dir()


def small_eval(home: Path, model_dir: Path) -> subprocess.CompletedProcess[str]:
    """``eval --json`` of zed's adapter on two held-out documents, six tokens a draft."""
    return run_cli(
        home,
        "eval",
        "--author",
        "zed",
        "--json",
        "--max-samples",
        "2",
        "--max-new-tokens",
        "6",
        LLM_TWIN_MODEL=str(model_dir),
    )


def test_the_snapshot_and_train_commands(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path
) -> None:
    home = tmp_path_factory.mktemp("trainer-home")
    settings = PlatformSettings(home=home)
    localstack.up(settings)
    try:
        endpoints = localstack.endpoints(settings)
        assert endpoints.mongodb_uri is not None
        client = warehouse.connect(endpoints.mongodb_uri)
        try:
            index(client["llm_twin"], "zed", [voice_text(random.Random(5)) for _ in range(10)])
        finally:
            client.close()
        assert run_cli(home, "snapshot", "--author", "nobody").returncode == 2
        made = run_cli(home, "snapshot", "--author", "zed", "--json")
        assert made.returncode == 0, made.stderr[-2000:]
        summary = json.loads(made.stdout)
        assert set(summary) >= {"snapshot_id", "author", "created_at", "counts", "path"}
        assert summary["counts"]["train"] + summary["counts"]["test"] == 10
        trained = run_cli(
            home,
            "train",
            "--snapshot",
            summary["snapshot_id"],
            "--json",
            LLM_TWIN_MODEL=str(model_dir),
            LLM_TWIN_TRAIN_EPOCHS="1",
            LLM_TWIN_TRAIN_MAX_SEQ_TOKENS="96",
        )
        assert trained.returncode == 0, trained.stderr[-2000:]
        result = json.loads(trained.stdout)
        assert set(result) >= {"adapter_id", "snapshot_id", "path", "train_loss", "eval_loss"}
        assert result["snapshot_id"] == summary["snapshot_id"]
        assert Path(result["path"], "adapter_config.json").is_file()
        assert run_cli(home, "train", "--snapshot", "zed-20260101T000000Z-00000000").returncode == 2

        assert run_cli(home, "eval", "--author", "nobody").returncode == 2  # no adapter
        listed = json.loads(run_cli(home, "adapters", "list", "--json").stdout)["adapters"]
        assert [(a["adapter_id"], a["active"]) for a in listed] == [(result["adapter_id"], True)]
        evaluated = small_eval(home, model_dir)
        assert summary["counts"]["test"] > 0  # zed's ids are fixed: so is their split
        assert evaluated.returncode == 0, evaluated.stderr[-2000:]
        report = json.loads(evaluated.stdout)
        assert set(report) >= {
            "perplexity",
            "style_similarity",
            "retrieval",
            "attribution",
            "copying",
            "repetition",
            "by_kind",
        }
        assert set(report["perplexity"]) == {
            "base",
            "twin",
            "base_on_reference",
            "twin_on_reference",
        }
        assert set(report["attribution"]) == {"base", "twin", "human"}

        # With a serve holding the store, eval searches through it instead of refusing.
        port = free_port()
        serving = start_cli(home, "serve", "--port", str(port), LLM_TWIN_MODEL=str(model_dir))
        try:
            assert serving.stderr is not None
            read_until(serving.stderr, b"serving on", serving, 120)
            through = small_eval(home, model_dir)
        finally:
            serving.send_signal(signal.SIGTERM)
            serving.communicate(timeout=90)
        assert through.returncode == 0, through.stderr[-2000:]
        assert json.loads(through.stdout)["perplexity"] == report["perplexity"]
        rolled = run_cli(home, "adapters", "rollback", "--author", "zed")
        assert rolled.returncode == 0 and "base model" in rolled.stdout

        # Model-written instructions and preference pairs, through the configured model.
        richer = run_cli(
            home,
            "snapshot",
            "--author",
            "zed",
            "--llm-instructions",
            "--preferences",
            "--json",
            LLM_TWIN_MODEL=str(model_dir),
        )
        assert richer.returncode == 0, richer.stderr[-2000:]
        counts = json.loads(richer.stdout)["counts"]
        assert counts["preference"] == counts["train"] > 0
    finally:
        localstack.down(settings)
