"""Real PEFT LoRA adapters on the tiny models, and (re-exported) the original-LLaVA layouts.

``make_lora_adapter`` loads a base folder, wraps it with ``peft.get_peft_model``, trains the
LoRA for a few AdamW steps on seeded random token ids (language-model loss; a feature loss for
a bare vision tower), and saves with ``save_pretrained``: the file is what peft writes, with
non-zero ``lora_B``. Keys follow the in-memory module names of the installed transformers
(e.g. ``base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from doctor.testing.models import ModelInfo
from doctor.testing.original import LlavaOriginalInfo, make_llava_original_lora, make_llava_original_model
from doctor.testing.torch_context import seeded

__all__ = ["make_lora_adapter", "make_llava_original_lora", "make_llava_original_model", "LlavaOriginalInfo",
           "VLM_LANGUAGE_TARGETS"]

# What peft users write for VLMs so that bare names do not also hit the vision tower.
VLM_LANGUAGE_TARGETS = r".*language_model.*\.(q_proj|v_proj)"
_VLM_TYPES = frozenset({"llava", "llava_next", "mllama"})


def make_lora_adapter(
    base: ModelInfo | str | Path,
    out: str | Path,
    target_modules: str | Sequence[str] | None = None,
    r: int = 4,
    alpha: int = 8,
    train_steps: int = 3,
    seed: int = 0,
    use_rslora: bool = False,
    rank_pattern: Mapping[str, int] | None = None,
    alpha_pattern: Mapping[str, int] | None = None,
    zero_lora_b: bool = False,
    nan: bool = False,
    modules_to_save: Sequence[str] | None = None,
    save_format: Literal["safetensors", "bin"] = "safetensors",
    base_model_name_or_path: str | None = None,
    lr: float = 1e-2,
    dropout: float = 0.0,
) -> Path:
    """Write a PEFT LoRA adapter folder for ``base`` into ``out``; return ``out``.

    ``target_modules``: default ``VLM_LANGUAGE_TARGETS`` (a regex limited to the language model)
    for llava / llava_next / mllama, ``["q_proj", "v_proj"]`` for text models and vision
    towers; a plain list is passed to peft as is (bare names then also match the vision tower).
    ``zero_lora_b=True`` skips training, leaving peft's all-zero ``lora_B`` (an adapter with no
    effect); ``nan=True`` plants a NaN in the first ``lora_B``. ``base_model_name_or_path``
    replaces the recorded base (default: the base folder's path). ``save_format="bin"`` writes
    ``adapter_model.bin``. A list of ``target_modules`` is stored sorted (peft keeps a set, whose
    order would change from run to run).
    """
    from peft import LoraConfig, get_peft_model

    base_path = Path(base.path if isinstance(base, ModelInfo) else base)
    model, model_type = _load_base(base_path)
    if target_modules is None:
        target_modules = VLM_LANGUAGE_TARGETS if model_type in _VLM_TYPES else ["q_proj", "v_proj"]
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
        target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
        use_rslora=use_rslora, rank_pattern=dict(rank_pattern or {}), alpha_pattern=dict(alpha_pattern or {}),
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        task_type=None if model_type == "clip_vision_model" else "CAUSAL_LM",
    )
    with seeded(seed), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        peft_model = get_peft_model(model, config)
        if not zero_lora_b and train_steps > 0:
            train_lora(peft_model, model_type, steps=train_steps, lr=lr)
        if nan:
            plant_nan(peft_model)
        out = Path(out)
        peft_model.save_pretrained(out, safe_serialization=save_format == "safetensors")
    _tidy_config(out, base_model_name_or_path)
    return out


def train_lora(peft_model: Any, model_type: str, steps: int = 3, lr: float = 1e-2, seq_len: int = 12) -> float:
    """A few AdamW steps on the trainable (LoRA) parameters; returns the last loss. Token ids
    stay below 256 + 3 so no image token is drawn; a bare vision tower is pushed toward larger
    features on random pixels instead. Text-only steps never reach a VLM's vision tower, so any
    ``lora_B`` still all-zero afterwards (e.g. targets inside the tower) gets seeded noise:
    every trained adapter has an effect."""
    import torch

    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    peft_model.train()
    loss = torch.zeros(())
    for _ in range(steps):
        if model_type == "clip_vision_model":
            size = peft_model.config.image_size
            hidden = peft_model(pixel_values=torch.randn(2, 3, size, size)).last_hidden_state
            loss = -hidden.pow(2).mean()
        else:
            ids = torch.randint(3, 259, (2, seq_len))
            loss = peft_model(input_ids=ids, labels=ids).loss
        if not loss.requires_grad:  # no LoRA module on the text path
            break
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.eval()
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name and not param.any():
                param.normal_(std=0.02)
    return float(loss.detach())


def plant_nan(peft_model: Any) -> str:
    """Set element [0, 0] of the first ``lora_B`` weight to NaN; returns the parameter name."""
    import torch

    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            with torch.no_grad():
                param[0, 0] = float("nan")
            return name
    raise ValueError("no lora_B parameter to poison")


def _load_base(path: Path) -> tuple[Any, str]:
    import transformers

    model_type = json.loads((path / "config.json").read_text(encoding="utf-8"))["model_type"]
    if model_type in _VLM_TYPES:
        cls: Any = transformers.AutoModelForImageTextToText
    elif model_type == "clip_vision_model":
        cls = transformers.CLIPVisionModel
    else:
        cls = transformers.AutoModelForCausalLM
    return cls.from_pretrained(path), model_type


def _tidy_config(out: Path, base_name: str | None) -> None:
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    if base_name is not None:
        config["base_model_name_or_path"] = base_name
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
