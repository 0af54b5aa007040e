"""Builders for the sanity-pass tests: tiny model folders with tensors rewritten in place (NaN
planted, mllama gates opened, processor files removed)."""

from __future__ import annotations

import re
from pathlib import Path

# The first self-attention query projection of the language model, in every family's key layout
# (llava "model.language_model.layers.0...", Qwen 4.x "model.layers.0...", mllama "...language_model.model.layers.0...").
FIRST_TEXT_Q = re.compile(r"^(?!.*visu)(?!.*vision).*layers\.0\.self_attn\.q_proj\.weight$")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "chat_template.jinja", "chat_template.json",
                   "video_preprocessor_config.json")


def rewrite_tensors(folder: Path, fn) -> None:
    """Rewrite model.safetensors with ``fn(name, tensor)`` applied to every tensor."""
    from safetensors.torch import load_file, save_file

    path = Path(folder) / "model.safetensors"
    save_file({k: fn(k, v.clone()) for k, v in load_file(path).items()}, path, metadata={"format": "pt"})


def open_gates(folder: Path) -> None:
    """A trained mllama has non-zero cross-attention gates; the factory's fresh init leaves them 0."""
    rewrite_tensors(folder, lambda k, t: t.fill_(0.5) if k.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate"))
                    else t)


def plant_nan(folder: Path, pattern: re.Pattern[str] = FIRST_TEXT_Q, row: int | None = None,
              value: float = float("nan")) -> str:
    """Set one element (or one ``row``) of the first tensor whose on-disk name matches to NaN (or
    ``value``, e.g. inf); return that name."""
    from safetensors import safe_open

    with safe_open(str(Path(folder) / "model.safetensors"), "pt") as f:
        name = next(k for k in sorted(f.keys()) if pattern.search(k))

    def edit(k, t):
        if k == name:
            if row is None:
                t.view(-1)[0] = value
            else:
                t[row] = value
        return t

    rewrite_tensors(folder, edit)
    return name


def remove_processor_files(folder: Path, tokenizer: bool = False) -> Path:
    """Delete the processor files (and, with ``tokenizer``, the tokenizer files) from ``folder``."""
    names = PROCESSOR_FILES + (("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                "tokenizer.model") if tokenizer else ())
    for n in names:
        (Path(folder) / n).unlink(missing_ok=True)
    return Path(folder)
