"""LoRA supervised fine-tuning on one dataset snapshot: the author's voice as an adapter.

Linear on purpose (nanoGPT's train.py): the sections below run in order.

1. the configuration and its hash (same snapshot + same configuration = same adapter,
   reused instead of trained again);
2. the base model and tokenizer (QLoRA, 4-bit, when CUDA and bitsandbytes are there);
3. the data: each example rendered with the base model's chat template (the piece's
   context, the end of the text before it, shown in the prompt), loss on the response
   tokens only (the author's words); a response longer than ``max_seq_tokens`` allows is
   cut into windows, never truncated away; the examples are packed into sequences of
   ``max_seq_tokens`` with their positions restarting at each example, which
   transformers turns into attention kept inside each example (no token attends to
   another example's), so no step is spent on padding; the example is outside text, so
   its control tokens are broken first (a document cannot teach the twin to open a system
   turn);
4. the loop: AdamW on the LoRA weights, a checkpoint every ``checkpoint_every`` steps
   (adapter, optimizer, step) that a killed run resumes from;
5. held-out loss and perplexity of the base model and of the adapter, on the snapshot's
   test split;
6. the output: the adapter in peft's format (loadable by peft and TGI), the tokenizer, a
   model card, and ``training.json`` with the metrics.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infra import snapshots
from llm.control_tokens import neutralise, special_tokens
from schemas.training import AdapterRegistered, DatasetSnapshot, Split

RESULT = "training.json"
# The system message of every training example (and of the preference pairs' answers).
SYSTEM_PROMPT = "You write in your own voice."
IGNORE = -100  # labels the loss skips: the prompt, the padding


@dataclass(frozen=True)
class TrainConfig:
    base_model: str
    # Measured here: r=16 on all projections at ~230 tokens/s on 2 CPU cores.
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    learning_rate: float = 2e-4
    epochs: int = 2
    batch_size: int = 4
    # The packed sequence's length; an article arrives in pieces of ~300 tokens
    # (infra/examples.py), several of them to a sequence.
    max_seq_tokens: int = 512
    checkpoint_every: int = 50
    seed: int = 0
    system_prompt: str = SYSTEM_PROMPT
    # The second stage, on when asked: DPO on the snapshot's preference pairs, the
    # base model (adapter disabled) as the reference, as TRL does for peft models.
    dpo: bool = False
    dpo_beta: float = 0.1
    dpo_epochs: int = 1
    dpo_learning_rate: float = 5e-5
    extra: dict[str, Any] = field(default_factory=dict)

    def digest(self, snapshot: DatasetSnapshot) -> str:
        """sha256 of everything that decides the adapter: this config and the data's hashes."""
        identity = asdict(self) | {"data": sorted(f.sha256 for f in snapshot.files)}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


class Stopped(Exception):
    """Training was asked to stop; its last step is checkpointed, and a next run resumes there."""


@dataclass(frozen=True)
class TrainResult:
    adapter: AdapterRegistered
    base_eval_loss: float | None
    reused: bool


Progress = Callable[[int, int, float], None]  # step, total steps, loss


def adapter_id_for(snapshot: DatasetSnapshot, config_hash: str) -> str:
    return f"{snapshot.snapshot_id}-{config_hash[:8]}"


def train(
    snapshot: DatasetSnapshot,
    config: TrainConfig,
    adapters_root: Path,
    *,
    base_model_name: str,
    progress: Progress = lambda step, total, loss: None,
    stop: threading.Event | None = None,
) -> TrainResult:
    """Train (or reuse) the snapshot's adapter; ``stop`` set: checkpoint, raise :class:`Stopped`."""
    # -- 1. configuration -------------------------------------------------------------------
    config_hash = config.digest(snapshot)
    adapter_id = adapter_id_for(snapshot, config_hash)
    output = adapters_root / adapter_id
    if (output / RESULT).is_file():
        return TrainResult(_registered(output), _base_loss(output), reused=True)

    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    train_rows = snapshots.rows(snapshot, Split.TRAIN)
    test_rows = snapshots.rows(snapshot, Split.TEST)
    preference_rows = snapshots.rows(snapshot, Split.PREFERENCE) if config.dpo else []
    if not train_rows:
        raise ValueError(f"{snapshot.snapshot_id} has no training rows")
    if config.dpo and not preference_rows:
        raise ValueError(
            f"{snapshot.snapshot_id} has no preference pairs: build it with "
            "`llm-twin snapshot --preferences` to train with DPO"
        )

    # -- 2. base model --------------------------------------------------------------------
    model, tokenizer = load_base(config.base_model)
    device = next(model.parameters()).device

    # -- 3. data ----------------------------------------------------------------------------
    train_examples = [e for row in train_rows for e in examples(row, tokenizer, config)]
    test_examples = [e for row in test_rows for e in examples(row, tokenizer, config)]
    sequences = pack(train_examples, config.max_seq_tokens)
    base_eval_loss = mean_loss(model, test_examples, tokenizer, config.batch_size, device)

    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    checkpoints = output.with_name(output.name + ".checkpoints")
    latest = _latest_checkpoint(checkpoints)
    if latest is not None:  # a killed run: resume from its last checkpoint
        model = PeftModel.from_pretrained(model, str(latest), is_trainable=True)
    else:
        model = get_peft_model(model, lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
    steps_per_epoch = math.ceil(len(sequences) / config.batch_size)
    total = steps_per_epoch * config.epochs
    step = 0
    if latest is not None:
        state = torch.load(latest / "trainer_state.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])

    # -- 4. the loop ----------------------------------------------------------------------
    model.train()
    train_losses: list[float] = []
    order = list(range(len(sequences)))
    while step < total:
        epoch, index = divmod(step, steps_per_epoch)
        rng = random.Random(config.seed + epoch)  # noqa: S311  # the same order on a resumed run
        shuffled = order[:]
        rng.shuffle(shuffled)
        batch = [sequences[i] for i in shuffled[index * config.batch_size :][: config.batch_size]]
        inputs = _collate_packed(batch, tokenizer, device)
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        train_losses.append(loss.item())
        progress(step, total, train_losses[-1])
        if stop is not None and stop.is_set() and step < total:
            _checkpoint(model, optimizer, step, checkpoints)  # asked to stop: keep the steps
            raise Stopped(f"stopped at step {step} of {total}; the next run resumes there")
        if step % config.checkpoint_every == 0 and step < total:
            _checkpoint(model, optimizer, step, checkpoints)

    # -- 4b. DPO, when asked --------------------------------------------------------------
    dpo_loss = _dpo(model, preference_rows, tokenizer, config, device) if config.dpo else None
    model.eval()

    # -- 5. held-out loss --------------------------------------------------------------------
    eval_loss = mean_loss(model, test_examples, tokenizer, config.batch_size, device)

    # -- 6. output ----------------------------------------------------------------------------
    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    recent = train_losses[-max(1, steps_per_epoch) :]
    adapter = AdapterRegistered(
        adapter_id=adapter_id,
        author=snapshot.author,
        snapshot_id=snapshot.snapshot_id,
        base_model=base_model_name,
        path=str(output),
        created_at=_now(),
        config_hash=config_hash,
        train_loss=sum(recent) / len(recent),
        eval_loss=eval_loss,
        eval_perplexity=math.exp(eval_loss) if eval_loss is not None else None,
    )
    metrics = {
        "adapter": json.loads(adapter.model_dump_json()),
        "base_eval_loss": base_eval_loss,
        "base_eval_perplexity": math.exp(base_eval_loss) if base_eval_loss is not None else None,
        "steps": total,
        "dpo_pairs": len(preference_rows),
        "dpo_loss": dpo_loss,
        "train_examples": len(train_examples),
        "train_sequences": len(sequences),
        "train_tokens": sum(len(e.input_ids) for e in train_examples),
        "packing_efficiency": _efficiency(sequences, config.max_seq_tokens),
        "test_examples": len(test_examples),
        "config": asdict(config),
    }
    (staging / "README.md").write_text(_model_card(adapter, metrics, snapshot), encoding="utf-8")
    (staging / RESULT).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return TrainResult(adapter, base_eval_loss, reused=False)


# -- pieces ------------------------------------------------------------------------------------


def load_base(base_model: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(base_model).is_dir()
    tokenizer = AutoTokenizer.from_pretrained(base_model, local_files_only=local)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if torch.cuda.is_available() and _has_bitsandbytes():
        # QLoRA: the frozen base in 4-bit NF4, the adapter trained in bfloat16.
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        model = AutoModelForCausalLM.from_pretrained(
            base_model, quantization_config=quantization, device_map={"": 0}
        )
        model = prepare_model_for_kbit_training(model)  # type: ignore[no-untyped-call]
    else:
        model = AutoModelForCausalLM.from_pretrained(base_model, local_files_only=local)
        if torch.cuda.is_available():
            model = model.to(device="cuda", dtype=torch.bfloat16)  # type: ignore[call-arg]
    return model, tokenizer


def _has_bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


@dataclass(frozen=True)
class _Example:
    input_ids: list[int]
    labels: list[int]


def prompt_text(row: dict[str, Any]) -> str:
    """What the user turn asks: the instruction, and the text the piece follows on from."""
    context = str(row.get("context") or "")
    instruction = str(row["instruction"])
    return f"{instruction}\n\nIt follows on from:\n{context}" if context else instruction


def encode(
    row: dict[str, Any], tokenizer: Any, config: TrainConfig, *, with_context: bool = True
) -> tuple[list[int], list[int]]:
    """The prompt's token ids (chat template, generation prompt) and the response's, end added."""
    specials = special_tokens(tokenizer)
    asked = prompt_text(row) if with_context else str(row["instruction"])
    instruction = neutralise(asked, specials)
    messages = [
        {"role": "system", "content": config.system_prompt},
        {"role": "user", "content": instruction},
    ]
    if getattr(tokenizer, "chat_template", None):
        prompt = list(
            tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )
    else:
        text = f"System: {config.system_prompt}\n\nUser: {instruction}\n\nAssistant:"
        prompt = list(tokenizer(text, split_special_tokens=True)["input_ids"])
    # The only special the response holds is the end we append.
    response_text = neutralise(row["response"], specials)
    encoded = tokenizer(response_text, add_special_tokens=False, split_special_tokens=True)
    response = list(encoded["input_ids"])
    response.append(tokenizer.eos_token_id)
    return [int(i) for i in prompt], [int(i) for i in response]


def examples(row: dict[str, Any], tokenizer: Any, config: TrainConfig) -> list[_Example]:
    """The row as examples of at most ``max_seq_tokens``: the whole response, in windows.

    A prompt that leaves less than a quarter of the sequence for the response is shown
    without its context; a response longer than the room left is cut into windows, each
    after the same prompt, so every token of the author's text is trained on.
    """
    prompt, response = encode(row, tokenizer, config)
    if config.max_seq_tokens - len(prompt) < config.max_seq_tokens // 4:
        prompt, response = encode(row, tokenizer, config, with_context=False)
    prompt = prompt[-(config.max_seq_tokens * 3 // 4) :]  # an instruction past all reason
    room = config.max_seq_tokens - len(prompt)
    return [
        _Example(prompt + window, [IGNORE] * len(prompt) + window)
        for window in (response[i : i + room] for i in range(0, len(response), room))
    ]


def example(row: dict[str, Any], tokenizer: Any, config: TrainConfig) -> _Example:
    """One example, truncated to ``max_seq_tokens``: a preference pair's side (DPO compares
    whole answers)."""
    prompt, response = encode(row, tokenizer, config)
    ids = (prompt + response)[: config.max_seq_tokens]
    labels = ([IGNORE] * len(prompt) + response)[: config.max_seq_tokens]
    return _Example(ids, labels)


@dataclass(frozen=True)
class _Packed:
    """Examples laid end to end in one sequence, each one's positions counted from 0."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]


def pack(items: list[_Example], length: int) -> list[_Packed]:
    """``items`` in sequences of at most ``length`` tokens: first fit, longest first.

    Deterministic (the same examples give the same sequences), so a resumed run sees the
    same data. No example is split between two sequences.
    """
    bins: list[list[_Example]] = []
    room: list[int] = []
    for item in sorted(items, key=lambda e: len(e.input_ids), reverse=True):
        size = len(item.input_ids)
        for index, left in enumerate(room):
            if size <= left:
                bins[index].append(item)
                room[index] -= size
                break
        else:
            bins.append([item])
            room.append(length - size)
    return [
        _Packed(
            [t for e in members for t in e.input_ids],
            [t for e in members for t in e.labels],
            [p for e in members for p in range(len(e.input_ids))],
        )
        for members in bins
    ]


def _efficiency(sequences: list[_Packed], length: int) -> float | None:
    """The share of the packed sequences' tokens that are examples' (not padding)."""
    if not sequences:
        return None
    width = max(len(s.input_ids) for s in sequences)
    return round(sum(len(s.input_ids) for s in sequences) / (width * len(sequences)), 4)


def _collate_packed(batch: list[_Packed], tokenizer: Any, device: Any) -> dict[str, Any]:
    """Packed sequences as tensors; no attention mask, so the positions mark the examples.

    transformers reads restarting position ids as packed sequences and masks attention
    to each one's own tokens; the padding at the end counts from 0 too, a sequence of
    its own that nothing attends to, and is not trained on.
    """
    import torch

    width = max(len(s.input_ids) for s in batch)
    pad = tokenizer.pad_token_id
    ids = [s.input_ids + [pad] * (width - len(s.input_ids)) for s in batch]
    labels = [s.labels + [IGNORE] * (width - len(s.labels)) for s in batch]
    positions = [s.position_ids + list(range(width - len(s.position_ids))) for s in batch]
    return {
        "input_ids": torch.tensor(ids, device=device),
        "labels": torch.tensor(labels, device=device),
        "position_ids": torch.tensor(positions, device=device),
        # With a cache, transformers does not look for packed sequences: examples would
        # attend to each other.
        "use_cache": False,
    }


def _collate(batch: list[_Example], tokenizer: Any, device: Any) -> dict[str, Any]:
    import torch

    width = max(len(e.input_ids) for e in batch)
    pad = tokenizer.pad_token_id
    ids = [e.input_ids + [pad] * (width - len(e.input_ids)) for e in batch]
    labels = [e.labels + [IGNORE] * (width - len(e.labels)) for e in batch]
    mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch]
    return {
        "input_ids": torch.tensor(ids, device=device),
        "labels": torch.tensor(labels, device=device),
        "attention_mask": torch.tensor(mask, device=device),
    }


def mean_loss(
    model: Any, examples: list[_Example], tokenizer: Any, batch_size: int, device: Any
) -> float | None:
    """Mean negative log-likelihood per response token (exp of it: the perplexity)."""
    import torch

    if not examples:
        return None
    total, tokens = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            inputs = _collate(batch, tokenizer, device)
            logits = model(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
            ).logits
            shifted = logits[:, :-1].float()
            targets = inputs["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                shifted.reshape(-1, shifted.shape[-1]),
                targets.reshape(-1),
                ignore_index=IGNORE,
                reduction="sum",
            )
            total += float(loss)
            tokens += int((targets != IGNORE).sum())
    return total / tokens if tokens else None


def _dpo(
    model: Any, rows: list[dict[str, Any]], tokenizer: Any, config: TrainConfig, device: Any
) -> float:
    """Direct preference optimisation of the adapter; the last epoch's mean loss."""
    import torch

    pairs = [
        (
            example(row | {"response": row["chosen"]}, tokenizer, config),
            example(row | {"response": row["rejected"]}, tokenizer, config),
        )
        for row in rows
    ]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.dpo_learning_rate)
    model.train()
    losses: list[float] = []
    for _ in range(config.dpo_epochs):
        losses = []
        for start in range(0, len(pairs), config.batch_size):
            batch = pairs[start : start + config.batch_size]
            chosen = _collate([c for c, _ in batch], tokenizer, device)
            rejected = _collate([r for _, r in batch], tokenizer, device)
            with torch.no_grad(), model.disable_adapter():
                reference = _sequence_logprob(model, chosen) - _sequence_logprob(model, rejected)
            policy = _sequence_logprob(model, chosen) - _sequence_logprob(model, rejected)
            loss = -torch.nn.functional.logsigmoid(config.dpo_beta * (policy - reference)).mean()
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
    return sum(losses) / len(losses)


def _sequence_logprob(model: Any, inputs: dict[str, Any]) -> Any:
    """Sum of the log-probabilities of each sequence's labelled (response) tokens."""
    import torch

    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    targets = inputs["labels"][:, 1:]
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (targets != IGNORE)).sum(-1)


def _checkpoint(model: Any, optimizer: Any, step: int, directory: Path) -> None:
    import torch

    target = directory / f"step-{step:08d}"
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    torch.save({"optimizer": optimizer.state_dict(), "step": step}, staging / "trainer_state.pt")
    staging.rename(target)
    for older in sorted(directory.glob("step-*"))[:-1]:
        if not older.name.endswith(".partial"):
            shutil.rmtree(older, ignore_errors=True)


def _latest_checkpoint(directory: Path) -> Path | None:
    done = [p for p in sorted(directory.glob("step-*")) if not p.name.endswith(".partial")]
    return done[-1] if done else None


def _registered(output: Path) -> AdapterRegistered:
    metrics = json.loads((output / RESULT).read_text(encoding="utf-8"))
    return AdapterRegistered.model_validate(metrics["adapter"])


def _base_loss(output: Path) -> float | None:
    value = json.loads((output / RESULT).read_text(encoding="utf-8")).get("base_eval_loss")
    return float(value) if value is not None else None


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _model_card(
    adapter: AdapterRegistered, metrics: dict[str, Any], snapshot: DatasetSnapshot
) -> str:
    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    training = sum(d.split == "train" for d in snapshot.documents)
    base_loss = number(metrics["base_eval_loss"])
    base_perplexity = number(metrics["base_eval_perplexity"])
    return f"""---
library_name: peft
base_model: {adapter.base_model}
tags: [lora, llm-twin]
---

# {adapter.adapter_id}

A LoRA adapter that writes in the voice of **{adapter.author}**, trained by LLM Twin on
dataset snapshot `{snapshot.snapshot_id}` ({training} training documents in
{snapshot.counts.train} examples, {snapshot.counts.test} held-out examples of
{len(snapshot.documents) - training} documents; the responses are the author's own texts,
with e-mail addresses and phone numbers scrubbed).

| | base model | this adapter |
|---|---|---|
| held-out loss (per response token) | {base_loss} | {number(adapter.eval_loss)} |
| held-out perplexity | {base_perplexity} | {number(adapter.eval_perplexity)} |

Training: {metrics["steps"]} steps, final loss {number(adapter.train_loss)}; configuration
hash `{adapter.config_hash}`:

```json
{json.dumps(metrics["config"], indent=2)}
```

Load it with peft (`PeftModel.from_pretrained(base, path)`) or serve it with TGI's LoRA
adapters (`--lora-adapters {adapter.adapter_id}=<path>`).
"""
