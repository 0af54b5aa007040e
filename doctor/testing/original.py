"""Folders in the layout of the original LLaVA codebase (haotian-liu/LLaVA), built tiny.

Read from upstream ``llava/train/train.py`` (end of ``train()``), ``llava/model/llava_arch.py``
and ``llava/model/builder.py``:

- LoRA run (``scripts/v1_5/finetune_lora.sh``): ``model.config.save_pretrained`` ->
  ``config.json`` (model_type ``llava_llama``; ``architectures`` still the base's
  ``LlamaForCausalLM``, since only the config is saved), ``model.save_pretrained(state_dict=lora
  tensors)`` -> ``adapter_config.json`` + ``adapter_model.*`` with keys
  ``base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`` (peft on
  ``LlavaLlamaForCausalLM``, whose LM tree is ``model.layers`` / ``lm_head``, like
  ``LlamaForCausalLM``), and ``torch.save(non_lora_trainables)`` -> ``non_lora_trainables.bin``
  with the trainable non-LoRA tensors, i.e. the projector:
  ``base_model.model.model.mm_projector.{0,2}.{weight,bias}`` (mlp2x_gelu) or
  ``...mm_projector.{weight,bias}`` (linear). Targets come from ``find_all_linear_names``:
  every Linear outside mm_projector / vision_tower, minus lm_head.
- merged / released model: one state dict with ``model.layers...``, ``lm_head.weight``,
  ``model.mm_projector.*`` and ``model.vision_tower.vision_tower.vision_model.*``; released v1.5
  configs say ``model_type: "llava"`` with ``architectures: ["LlavaLlamaForCausalLM"]``.

The builder routes on the folder NAME ('llava' and 'lora' -> LoRA merge), hence the defaults.
Configs carry ``transformers_version`` 4.37.2, the version LLaVA pins.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from doctor.testing import weights as _weights
from doctor.testing.models import ModelInfo, make_clip_vision_tower, make_text_model
from doctor.testing.tokenizer import make_tokenizer
from doctor.testing.torch_context import seeded

LLAVA_LORA_TARGETS = ("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj")
LLAVA_PINNED_TRANSFORMERS = "4.37.2"
_ARCH = {"llava_llama": "llama", "llava_mistral": "mistral", "llava": "llama"}


@dataclass
class LlavaOriginalInfo:
    """What an original-LLaVA builder wrote. ``projector_keys`` maps each projector tensor name,
    exactly as stored (``non_lora_trainables.bin`` or the model weights), to its shape."""

    path: Path
    model_type: str
    projector_type: str
    config: dict[str, Any]
    hidden_size: int
    mm_hidden_size: int
    base_dir: Path | None = None
    vision_tower_dir: Path | None = None
    projector_keys: dict[str, tuple[int, ...]] = field(default_factory=dict)
    target_modules: list[str] = field(default_factory=list)
    weight_files: list[str] = field(default_factory=list)


def make_llava_original_lora(
    out: str | Path,
    model_type: Literal["llava_llama", "llava_mistral"] = "llava_llama",
    projector_type: str = "mlp2x_gelu",
    base_dir: str | Path | None = None,
    vision_tower_dir: str | Path | None = None,
    with_non_lora: bool = True,
    folder_name: str | None = None,
    r: int = 4,
    alpha: int = 8,
    seed: int = 0,
    save_format: Literal["safetensors", "bin"] = "safetensors",
    hidden: int = 32,
    mm_hidden: int = 32,
    base_model_name_or_path: str | None = None,
    architectures: Sequence[str] | None = None,
) -> LlavaOriginalInfo:
    """Write the folder ``finetune_lora.sh`` leaves at the end of training, at
    ``out/<folder_name>`` (default "llava-v1.5-tiny-lora"); return its info.

    Also writes (unless the folders already hold a model) the tiny base LLM at ``base_dir``
    (default ``out/vicuna-tiny``, a Llama, or Mistral for ``llava_mistral``) and the CLIP tower
    at ``vision_tower_dir`` (default ``out/clip-vit-tiny``), named in config.json's
    ``_name_or_path`` / ``mm_vision_tower``. ``with_non_lora=False`` leaves out
    ``non_lora_trainables.bin`` (a run copied before its end). ``projector_type``: "linear",
    "mlp<N>x_gelu" or "identity". Scale r/alpha like upstream (r=128, alpha=256) with r=4, alpha=8.
    """
    from doctor.testing.adapters import make_lora_adapter

    out = Path(out)
    folder = out / (folder_name or "llava-v1.5-tiny-lora")
    base = _ensure_text_model(Path(base_dir) if base_dir else out / "vicuna-tiny", _ARCH[model_type], seed, hidden)
    tower = _ensure_tower(Path(vision_tower_dir) if vision_tower_dir else out / "clip-vit-tiny", seed + 1, mm_hidden)
    base_name = base_model_name_or_path or str(base.path)
    make_lora_adapter(base.path, folder, target_modules=list(LLAVA_LORA_TARGETS), r=r, alpha=alpha, seed=seed,
                      dropout=0.05, save_format=save_format, base_model_name_or_path=base_name)
    config = _llava_config(base.config, model_type, projector_type, tower, name=base_name,
                           architectures=architectures or base.config["architectures"])
    _weights.dump_json(folder / "config.json", config)
    keys: dict[str, tuple[int, ...]] = {}
    if with_non_lora:
        import torch

        state = {f"base_model.model.{k}": v.to(torch.bfloat16)  # finetune_lora.sh trains in bf16
                 for k, v in projector_state(projector_type, base.hidden_size, tower.hidden_size, seed).items()}
        torch.save(state, folder / "non_lora_trainables.bin")
        keys = {k: tuple(v.shape) for k, v in state.items()}
    return LlavaOriginalInfo(
        path=folder, model_type=model_type, projector_type=projector_type, config=config,
        hidden_size=base.hidden_size, mm_hidden_size=tower.hidden_size, base_dir=base.path,
        vision_tower_dir=tower.path, projector_keys=keys, target_modules=list(LLAVA_LORA_TARGETS),
        weight_files=_weights.weight_files(folder),
    )


def make_llava_original_model(
    out: str | Path,
    model_type: Literal["llava_llama", "llava_mistral", "llava"] = "llava_llama",
    projector_type: str = "mlp2x_gelu",
    folder_name: str | None = None,
    vision_tower_dir: str | Path | None = None,
    include_vision_tower: bool = True,
    seed: int = 0,
    dtype: Literal["float32", "float16", "bfloat16"] = "float16",
    shard_size: str | int | None = None,
    weights: Literal["safetensors", "bin"] = "safetensors",
    hidden: int = 32,
    mm_hidden: int = 32,
    layers: int = 2,
) -> LlavaOriginalInfo:
    """Write a merged / released original-layout checkpoint at ``out/<folder_name>`` (default
    "llava-v1.5-tiny"): weights ``model.layers...``, ``lm_head.weight``, ``model.mm_projector.*``
    and (``include_vision_tower``) ``model.vision_tower.vision_tower.vision_model.*``; config
    ``architectures: ["LlavaLlamaForCausalLM"]`` (Mistral: ``LlavaMistralForCausalLM``) with
    ``model_type`` as given: ``"llava"`` reproduces the v1.5 release's name collision with
    transformers' own llava. Tokenizer files are included; the tower folder
    (``out/clip-vit-tiny`` by default) is written too, as ``mm_vision_tower``.
    """
    import torch
    import transformers

    from doctor.testing.families import Sizes, clip_vision_config, text_config

    out = Path(out)
    folder = out / (folder_name or "llava-v1.5-tiny")
    tower = _ensure_tower(Path(vision_tower_dir) if vision_tower_dir else out / "clip-vit-tiny", seed + 1, mm_hidden)
    tok = make_tokenizer(folder, extra_special=(), pad_token=None)
    arch = _ARCH[model_type]
    llm_config = text_config(arch, tok, Sizes(text_layers=layers, hidden=hidden), vocab_size=tok.size)
    with seeded(seed):
        state = dict(transformers.AutoModelForCausalLM.from_config(llm_config).state_dict())
        if include_vision_tower:
            clip = transformers.CLIPVisionModel(clip_vision_config(Sizes(vision_hidden=mm_hidden)))
            for name, tensor in clip.state_dict().items():  # 4.x names start with vision_model.
                state["model.vision_tower.vision_tower.vision_model." + re.sub(r"^vision_model\.", "", name)] = tensor
    projector = projector_state(projector_type, hidden, mm_hidden, seed)
    state.update(projector)
    state = {k: v.to(getattr(torch, dtype)) for k, v in state.items()}
    files = _weights.write_state_dict(folder, state, weights, shard_size)
    llm_json = json.loads(llm_config.to_json_string())
    llm_json["architectures"] = [f"Llava{arch.capitalize()}ForCausalLM"]
    config = _llava_config(llm_json, model_type, projector_type, tower, name=f"./checkpoints/{folder.name}",
                           architectures=llm_json["architectures"], dtype=dtype)
    _weights.dump_json(folder / "config.json", config)
    _weights.dump_json(folder / "generation_config.json", {
        "_from_model_config": True, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
        "max_length": 4096, "pad_token_id": 0, "transformers_version": LLAVA_PINNED_TRANSFORMERS})
    return LlavaOriginalInfo(
        path=folder, model_type=model_type, projector_type=projector_type, config=config, hidden_size=hidden,
        mm_hidden_size=mm_hidden, vision_tower_dir=tower.path, weight_files=files,
        projector_keys={k: tuple(v.shape) for k, v in projector.items()},
    )


def projector_state(projector_type: str, hidden: int, mm_hidden: int, seed: int = 0) -> dict[str, Any]:
    """Seeded projector tensors named as in LLaVA's ``build_vision_projector`` under
    ``model.mm_projector``: linear -> ``.weight/.bias`` [hidden, mm_hidden]; mlp<N>x_gelu ->
    ``.0``, ``.2``, ... (a GELU between), first [hidden, mm_hidden], then [hidden, hidden]."""
    import torch

    generator = torch.Generator().manual_seed(seed + 7)
    if projector_type == "identity":
        return {}
    if projector_type == "linear":
        shapes = {"": (hidden, mm_hidden)}
    else:
        match = re.fullmatch(r"mlp(\d+)x_gelu", projector_type)
        if not match:
            raise ValueError(f"unknown projector type {projector_type!r}; use linear, mlp<N>x_gelu or identity")
        depth = int(match.group(1))
        shapes = {f".{2 * i}": (hidden, mm_hidden if i == 0 else hidden) for i in range(depth)}
    state = {}
    for suffix, shape in shapes.items():
        state[f"model.mm_projector{suffix}.weight"] = torch.randn(shape, generator=generator) * 0.02
        state[f"model.mm_projector{suffix}.bias"] = torch.randn(shape[0], generator=generator) * 0.02
    return state


def _llava_config(llm: dict[str, Any], model_type: str, projector_type: str, tower: ModelInfo, name: str,
                  architectures: Sequence[str], dtype: str = "float16") -> dict[str, Any]:
    config = {k: v for k, v in llm.items() if k not in ("transformers_version", "dtype", "torch_dtype", "head_dim",
                                                        "mlp_bias", "rope_parameters", "_name_or_path")}
    rope = llm.get("rope_parameters") or {}
    config.update({
        "_name_or_path": name, "architectures": list(architectures), "model_type": model_type,
        "rope_theta": rope.get("rope_theta", llm.get("rope_theta", 10000.0)), "rope_scaling": None,
        "torch_dtype": dtype, "transformers_version": LLAVA_PINNED_TRANSFORMERS, "use_cache": True,
        "mm_vision_tower": str(tower.path), "mm_hidden_size": tower.hidden_size,
        "mm_projector_type": projector_type, "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "mm_patch_merge_type": "flat", "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "mm_projector_lr": 2e-05, "use_mm_proj": True, "image_aspect_ratio": "pad", "image_grid_pinpoints": None,
        "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False,
        "tokenizer_model_max_length": 2048, "tokenizer_padding_side": "right",
    })
    return config


def _ensure_text_model(path: Path, arch: str, seed: int, hidden: int) -> ModelInfo:
    if (path / "config.json").exists():
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        return ModelInfo(path=path, family=config["model_type"], config=config, hidden_size=config["hidden_size"],
                         text_vocab_size=config["vocab_size"])
    return make_text_model(path, arch=arch, seed=seed, hidden=hidden)  # type: ignore[arg-type]


def _ensure_tower(path: Path, seed: int, hidden: int) -> ModelInfo:
    if (path / "config.json").exists():
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        vision = config.get("vision_config", config)  # a full CLIPModel folder nests it
        return ModelInfo(path=path, family=config["model_type"], config=config, hidden_size=vision["hidden_size"],
                         vision_hidden_size=vision["hidden_size"], image_size=vision.get("image_size"),
                         patch_size=vision.get("patch_size"))
    return make_clip_vision_tower(path, seed=seed, hidden=hidden)
