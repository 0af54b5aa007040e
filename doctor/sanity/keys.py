"""Turn transformers' loading info (missing / unexpected / mismatched keys) into findings.

Key names are the in-memory names transformers reports (``model.multi_modal_projector.linear_1.weight``
on transformers >= 4.52; ``multi_modal_projector.linear_1.weight`` before). Keys are grouped by the
part of the model they belong to, so "projector not loaded" is one precise finding.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from doctor.findings import Severity
from doctor.sanity.results import StageResult

# (part, substrings) in match order: the first part whose substring occurs in the key wins.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lora", (".lora_A", ".lora_B", "lora_embedding", ".base_layer.")),
    ("projector", ("multi_modal_projector", "mm_projector")),
    ("image_newline", ("image_newline",)),
    ("cross-attention", ("cross_attn",)),
    ("vision tower", ("vision_tower", "vision_model")),
    ("language model", ("",)),
)
SHOW = 6

_MISSING_HINTS = {
    "projector": "The projector was randomly initialised. For an original-LLaVA LoRA run it lives in "
                 "non_lora_trainables.bin (or mm_projector.bin): load it before merging; for a merged model, re-run "
                 "the merge so it writes the multi_modal_projector tensors.",
    "image_newline": "llava_next's learned image_newline vector is absent: copy it from the base checkpoint.",
    "cross-attention": "mllama sees images only through its cross-attention layers: copy their weights from the "
                       "base, and check text_config.cross_attention_layers matches the checkpoint.",
    "vision tower": "The vision tower was not in the weights: a merge or conversion must copy it from the base.",
    "language model": "The language model weights are incomplete: check that every shard in the index exists "
                      "(`vlm-doctor check`), or that config.json describes the same model size as the weights.",
    "lora": "LoRA parameters are missing from the model: the adapter did not match this model's modules.",
}


def part_of(key: str) -> str:
    for part, needles in PARTS:
        if any(n in key for n in needles):
            return part
    return "language model"


def group(keys: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k in sorted(keys):
        out.setdefault(part_of(k), []).append(k)
    return out


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOW])
    return shown + (f" and {len(keys) - SHOW} more" if len(keys) > SHOW else "")


def report_loading_info(stage: StageResult, folder: str, info: dict[str, Any]) -> None:
    missing = [str(k) for k in info.get("missing_keys") or ()]
    unexpected = [str(k) for k in info.get("unexpected_keys") or ()]
    mismatched = list(info.get("mismatched_keys") or ())
    stage.metrics.update({"missing_keys": len(missing), "unexpected_keys": len(unexpected),
                          "mismatched_keys": len(mismatched)})
    for part, keys in group(missing).items():
        stage.add(
            f"{part} not loaded: {len(keys)} tensor(s) missing from the weights in {folder} were randomly "
            f"initialised: {_listing(keys)}",
            path=folder, tensor=keys[0], hint=_MISSING_HINTS[part],
        )
    for entry in mismatched[:SHOW]:
        key, ckpt, model = _mismatch(entry)
        vocab = any(n in key for n in ("embed_tokens", "lm_head"))
        stage.add(
            f"{key}: the checkpoint holds shape {ckpt}, the model built from config.json expects {model}; "
            "transformers re-initialised it randomly",
            path=folder, tensor=key,
            hint=("Tokens were added during training: resize the embeddings to len(tokenizer) before loading "
                  "the weights, or set the vocab size in config.json to the checkpoint's." if vocab else
                  "config.json does not describe these weights (a different model size or base): use the config "
                  "that was saved with them."),
        )
    if len(mismatched) > SHOW:
        stage.add(f"{len(mismatched) - SHOW} more tensor(s) have a shape mismatch", path=folder,
                  hint="config.json does not describe these weights: use the config saved with them.")
    for part, keys in group(unexpected).items():
        _unexpected(stage, folder, part, keys)
    for msg in info.get("error_msgs") or ():
        stage.add(f"transformers reported a loading error: {msg}", path=folder,
                  hint="Read the message; the weights do not fit this model class.")


def _unexpected(stage: StageResult, folder: str, part: str, keys: list[str]) -> None:
    if part == "lora":
        stage.add(f"{len(keys)} LoRA tensor(s) left in the model weights and ignored by transformers: "
                  f"{_listing(keys)}", path=folder, tensor=keys[0],
                  hint="These come from a checkpoint saved without folding the LoRA in (DeepSpeed/FSDP export): "
                       "merge it (W + alpha/r * B @ A) and strip the peft prefixes.")
    elif any("mm_projector" in k for k in keys) or any(k.startswith("model.layers.") for k in keys):
        stage.add(f"{len(keys)} tensor(s) in the original LLaVA layout were ignored: {_listing(keys)}",
                  path=folder, tensor=keys[0],
                  hint="The weights use the original haotian-liu/LLaVA key layout: convert them to transformers' "
                       "layout (vlm-doctor convert) instead of loading them with this config.")
    else:
        stage.add(f"{part}: {len(keys)} tensor(s) in the weights are not used by the model class: {_listing(keys)}", path=folder, tensor=keys[0], severity=Severity.WARNING,
                  hint="Often harmless (buffers saved by another version), but if a module of this model is "
                       "also missing, the names were saved in another layout: rename them.")


def _mismatch(entry: Any) -> tuple[str, str, str]:
    if isinstance(entry, (tuple, list)) and len(entry) >= 3:
        return str(entry[0]), _shape(entry[1]), _shape(entry[2])
    return str(entry), "?", "?"


def _shape(s: Any) -> str:
    try:
        return "[" + ", ".join(str(int(d)) for d in s) + "]"
    except TypeError:
        return str(s)
