"""The original LLaVA codebase's loading logic, replayed without running it (haotian-liu/LLaVA
``llava/model/builder.py``, ``llava/mm_utils.py``, ``llava/model/multimodal_projector/builder.py``),
and the projector shapes shared by the LLV and XTN families."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from doctor.io.safetensors_header import TensorInfo

PROJECTOR_PREFIX = "model.mm_projector."


def model_name_from_path(model_path: str) -> str:
    """``llava.mm_utils.get_model_name_from_path``: the last path component, or
    ``<parent>_<checkpoint-N>`` for a checkpoint folder."""
    parts = model_path.strip("/").split("/")
    if parts[-1].startswith("checkpoint-") and len(parts) > 1:
        return parts[-2] + "_" + parts[-1]
    return parts[-1]


@dataclass(frozen=True)
class Branch:
    """What ``load_pretrained_model(model_path, model_base, model_name)`` does."""

    name: str        # lora-merge | projector-only | llava-full | peft-causal-lm | causal-lm
    model_class: str
    loads: str       # what it reads from model_path, in words


def builder_branch(model_path: str, has_model_base: bool) -> Branch:
    """Replay the if/elif chain of ``load_pretrained_model`` on the folder name."""
    name = model_name_from_path(model_path).lower()
    if "llava" in name:
        if "lora" in name and has_model_base:
            return Branch("lora-merge", "LlavaLlamaForCausalLM",
                          "config.json, non_lora_trainables.bin, then the LoRA (PeftModel) merged into --model-base")
        if has_model_base:
            cls = "LlavaMptForCausalLM" if "mpt" in name else "LlavaLlamaForCausalLM"
            return Branch("projector-only", cls, "mm_projector.bin on top of --model-base")
        if "mpt" in name:
            return Branch("llava-full", "LlavaMptForCausalLM", "a full LLaVA checkpoint")
        if "mistral" in name:
            return Branch("llava-full", "LlavaMistralForCausalLM", "a full LLaVA checkpoint")
        return Branch("llava-full", "LlavaLlamaForCausalLM", "a full LLaVA checkpoint")
    if has_model_base:
        return Branch("peft-causal-lm", "AutoModelForCausalLM",
                      "--model-base as a text-only causal LM with the LoRA merged; no vision tower, no projector")
    return Branch("causal-lm", "AutoModelForCausalLM", "a text-only causal LM (no vision tower, no projector)")


#: the class load_pretrained_model must build for each model_type
CLASS_FOR_TYPE = {"llava_llama": "LlavaLlamaForCausalLM", "llava": "LlavaLlamaForCausalLM",
                  "llava_mistral": "LlavaMistralForCausalLM", "llava_mpt": "LlavaMptForCausalLM"}


def expected_projector(projector_type: str, hidden: int, mm_hidden: int) -> dict[str, tuple[int, ...]] | None:
    """Tensors of LLaVA's ``build_vision_projector`` (names relative to ``mm_projector.``):
    linear -> weight/bias; ``mlp<N>x_gelu`` -> ``0``, ``2``, ... (a GELU between); identity ->
    nothing. None for a type the builder rejects (``ValueError: Unknown projector type``)."""
    if projector_type == "linear":
        return {"weight": (hidden, mm_hidden), "bias": (hidden,)}
    if projector_type == "identity":
        return {}
    m = re.fullmatch(r"mlp(\d+)x_gelu", projector_type)
    if not m:
        return None
    out: dict[str, tuple[int, ...]] = {}
    for i in range(int(m.group(1))):
        out[f"{2 * i}.weight"] = (hidden, mm_hidden if i == 0 else hidden)
        out[f"{2 * i}.bias"] = (hidden,)
    return out


def projector_type_of(keys: list[str]) -> str | None:
    """What a set of projector tensor names (relative to ``mm_projector.``) was built as."""
    idx = sorted({int(k.split(".")[0]) for k in keys if re.match(r"^\d+\.", k)})
    if idx:
        return f"mlp{len(idx)}x_gelu"
    if any(k in ("weight", "bias") for k in keys):
        return "linear"
    return None


def normalise_non_lora(tensors: dict[str, TensorInfo]) -> dict[str, TensorInfo]:
    """The builder's key rewrite: drop ``base_model.``, then ``model.`` if keys start with
    ``model.model.``; the result is what ``model.load_state_dict(strict=False)`` receives."""
    out = {(k[11:] if k.startswith("base_model.") else k): v for k, v in tensors.items()}
    if any(k.startswith("model.model.") for k in out):
        out = {(k[6:] if k.startswith("model.") else k): v for k, v in out.items()}
    return out


def projector_tensors(tensors: dict[str, TensorInfo]) -> dict[str, TensorInfo]:
    """``model.mm_projector.*`` tensors, keyed relative to ``mm_projector.``."""
    return {k[len(PROJECTOR_PREFIX):]: v for k, v in tensors.items() if k.startswith(PROJECTOR_PREFIX)}


def compare_projector(found: dict[str, TensorInfo], expected: dict[str, tuple[int, ...]]) -> tuple[list[str], list[str], list[tuple[str, tuple[int, ...], tuple[int, ...]]]]:
    """(missing names, unexpected names, shape mismatches) of found vs expected projector tensors."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [(k, tuple(found[k].shape), expected[k]) for k in sorted(set(found) & set(expected))
              if tuple(found[k].shape) != expected[k]]
    return missing, unexpected, shapes


def file_mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
