"""LoRA / QLoRA training throughput on a CUDA GPU; prints one JSON object (never run by CI).

    python benchmarks/train_gpu.py [--sizes 1b 8b] [--steps 20] [--batch 4] [--seq 1024] [--qlora]

For each size, a Llama-shaped model is built from a config with random weights
(throughput and memory do not depend on the weights, and nothing is
downloaded), wrapped in a LoRA adapter (r=16 on every projection, as
trainer/lora.py does) and trained for ``--steps`` steps on random tokens after
``--warmup`` untimed ones. Reported per size: tokens/s, seconds per step, peak
GPU memory, trainable parameters, and model FLOPs utilisation (MFU: 6 FLOPs per
parameter per token for the forward and backward passes, plus attention, over
the GPU's dense bf16 peak; ``--peak-tflops`` overrides the table). ``--qlora``
loads the frozen base in 4-bit NF4 (needs bitsandbytes).

On a machine without CUDA it exits 2 with a message.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

SIZES: dict[str, dict[str, int]] = {
    # Llama 3.2 1B and Llama 3.1 8B shapes.
    "1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
    },
    "8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
    },
}
# Dense bf16 tensor-core peaks (TFLOPs), by a substring of the device name.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def measure(size: str, arguments: argparse.Namespace) -> dict[str, Any]:
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    # transformers' constructors are untyped or over-typed for **kwargs: used as Any here.
    LlamaConfig: Any = transformers.LlamaConfig
    LlamaForCausalLM: Any = transformers.LlamaForCausalLM
    BitsAndBytesConfig: Any = transformers.BitsAndBytesConfig

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    config = LlamaConfig(**SIZES[size], max_position_embeddings=max(4096, arguments.seq))
    with torch.device("meta"):
        shell = LlamaForCausalLM(config)
    parameters = sum(p.numel() for p in shell.parameters())
    del shell
    model: Any
    if arguments.qlora:
        import tempfile

        # 4-bit loading needs a checkpoint: a random one, saved once to local disk.
        with tempfile.TemporaryDirectory() as scratch:
            LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(scratch)
            model = LlamaForCausalLM.from_pretrained(
                scratch,
                quantization_config=BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_compute_dtype=torch.bfloat16,
                ),
                device_map={"": 0},
            )
    else:
        with torch.device("cuda"):
            model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.gradient_checkpointing_enable()
    model.enable_input_require_grads()
    model = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, target_modules=PROJECTIONS, task_type="CAUSAL_LM")
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    tokens = torch.randint(0, config.vocab_size, (arguments.batch, arguments.seq), device="cuda")

    def step() -> None:
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(arguments.warmup):
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(arguments.steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / arguments.steps
    per_second = arguments.batch * arguments.seq / seconds
    # 6 N per token (forward 2N, backward 4N; with LoRA the frozen weights' gradients are
    # not formed, but the backward through them is, so 6N stays the convention), plus
    # attention's 12 * layers * hidden * seq; recomputation is not counted (model FLOPs).
    attention = 12 * config.num_hidden_layers * config.hidden_size * arguments.seq
    flops = (6 * parameters + attention) * per_second
    name = torch.cuda.get_device_name(0)
    peak = arguments.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return {
        "size": size,
        "parameters": parameters,
        "trainable_parameters": trainable,
        "qlora": arguments.qlora,
        "batch": arguments.batch,
        "seq": arguments.seq,
        "seconds_per_step": round(seconds, 4),
        "tokens_per_s": round(per_second, 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "model_tflops": round(flops / 1e12, 1),
        "mfu": round(flops / (peak * 1e12), 4) if peak else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["1b", "8b"], choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--qlora", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None)
    arguments = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark measures GPU training", file=sys.stderr)
        sys.exit(2)
    results = [measure(size, arguments) for size in arguments.sizes]
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "runs": results}
    print(f"{'size':>5} {'tokens/s':>10} {'s/step':>8} {'peak GiB':>9} {'MFU':>6}", file=sys.stderr)
    for run in results:
        print(
            f"{run['size']:>5} {run['tokens_per_s']:>10} {run['seconds_per_step']:>8} "
            f"{run['peak_memory_gib']:>9} {run['mfu']!s:>6}",
            file=sys.stderr,
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
