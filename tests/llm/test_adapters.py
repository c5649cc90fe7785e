"""LoRA adapters in the local backend: several beside one base model, never crossing.

Two adapters made here with peft (random, non-zero LoRA weights, so each one
changes what the tiny model says) are loaded into one LocalBackend; requests
for adapter a, adapter b and the bare base model, run at once, must each get
exactly what that model says when asked alone.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from llm.backend import ChatMessage, Piece, Sampling
from llm.errors import BackendFailed
from llm.local import LocalBackend
from tests import tiny_model

MESSAGES: list[ChatMessage] = [{"role": "user", "content": "Write about Kafka and the twin"}]
GREEDY = Sampling(max_new_tokens=12, temperature=0.0)


def make_adapter(model_dir: Path, target: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    config = LoraConfig(
        r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(base, config)
    with torch.no_grad():  # large enough to change the greedy answer
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name:
                parameter.mul_(8.0)
    peft_model.save_pretrained(str(target))
    return target


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model.build(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {name: make_adapter(model_dir, root / name, seed) for seed, name in enumerate("ab")}


async def say(backend: LocalBackend, adapter: str | None) -> str:
    pieces = [
        event.text
        async for event in backend.stream(MESSAGES, GREEDY, adapter=adapter)
        if isinstance(event, Piece)
    ]
    return "".join(pieces)


def test_concurrent_requests_for_different_adapters_never_cross(
    model_dir: Path, adapters: dict[str, Path]
) -> None:
    backend = LocalBackend.load(model_dir, concurrency=4)
    base_alone = asyncio.run(say(backend, None))

    async def load() -> None:
        for name, path in adapters.items():
            await backend.add_adapter(name, path)

    asyncio.run(load())
    assert backend.adapters == {"a", "b"}

    async def alone() -> dict[str | None, str]:
        return {name: await say(backend, name) for name in (None, "a", "b")}

    reference = asyncio.run(alone())
    assert reference[None] == base_alone  # loading adapters leaves the base model as it was
    assert len(set(reference.values())) == 3, "each adapter changes what the model says"

    order: list[str | None] = [None, "a", "b", "a", "b", None, "b", "a", "a", None, "b", "b"]

    async def together() -> list[str]:
        return await asyncio.gather(*(say(backend, name) for name in order))

    for answer, wanted in zip(asyncio.run(together()), order, strict=True):
        assert answer == reference[wanted], f"a request for {wanted!r} got another model's answer"


def test_an_unknown_adapter_is_refused(model_dir: Path) -> None:
    backend = LocalBackend.load(model_dir)

    async def ask() -> None:
        await say(backend, "nobody")

    with pytest.raises(BackendFailed, match="nobody"):
        asyncio.run(ask())


def test_a_broken_adapter_directory_is_a_clear_error(model_dir: Path, tmp_path: Path) -> None:
    backend = LocalBackend.load(model_dir)
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(BackendFailed, match="cannot load adapter"):
        asyncio.run(backend.add_adapter("broken", tmp_path))
    assert backend.adapters == frozenset()
