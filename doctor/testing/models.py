"""Tiny, real, transformers-native model folders with random (seeded) weights.

Each builder writes what ``save_pretrained`` writes (``config.json`` with
``transformers_version``, ``generation_config.json``, safetensors weights) plus tokenizer and
processor files, so ``AutoConfig`` / ``AutoProcessor`` / ``AutoModelForImageTextToText`` load
the folder offline with no missing or unexpected keys. Sizes are a few hundred kB; a build
takes well under a second once transformers is imported.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from doctor.testing import families as _families
from doctor.testing import weights as _weights
from doctor.testing.families import Sizes
from doctor.testing.tokenizer import TokenizerInfo, make_tokenizer
from doctor.testing.torch_context import seeded

Family = Literal["llava", "llava_next", "mllama"]
DType = Literal["float32", "float16", "bfloat16"]


@dataclass
class ModelInfo:
    """What a model builder wrote: its folder, family (a transformers ``model_type`` such as
    "llava", "mllama", "llama", "clip_vision_model"), the saved ``config.json`` as a dict, and
    the numbers tests need (token ids, vision geometry, weight file names)."""

    path: Path
    family: str
    config: dict[str, Any]
    tokenizer: TokenizerInfo | None = None
    image_token: str | None = None
    image_token_id: int | None = None
    image_size: int | None = None
    patch_size: int | None = None
    image_seq_length: int | None = None  # image tokens for one tower-sized image (llava); None if it varies
    hidden_size: int = 0
    vision_hidden_size: int | None = None
    text_vocab_size: int = 0
    weight_files: list[str] = field(default_factory=list)

    def num_image_tokens(self, height: int, width: int) -> int:
        """Image tokens the saved processor writes for one image of this size (llava: fixed;
        llava_next: depends on the tiling; mllama: one ``<|image|>``, the image enters by
        cross-attention)."""
        inputs = tiny_inputs(self, image_shape=(height, width))
        return int((inputs["input_ids"] == self.image_token_id).sum())


def make_llava_model(
    dir: str | Path,
    family: Family = "llava",
    seed: int = 0,
    dtype: DType = "float32",
    shard_size: str | int | None = None,
    weights: _weights.WeightFormat = "safetensors",
    drop_tensors: Iterable[str] = (),
    text_layers: int = 2,
    hidden: int = 32,
    vision_layers: int = 2,
    image_size: int = 28,
    patch_size: int = 14,
    vocab_size: int = 300,
    text_arch: Literal["llama", "mistral"] = "llama",
    image_grid_pinpoints: Sequence[Sequence[int]] | None = None,
    cross_attention_layers: Sequence[int] | None = None,
    intermediate_layers_indices: Sequence[int] | None = None,
    processor: bool = True,
    processor_layout: Literal["native", "split"] = "native",
    config_overrides: Mapping[str, Any] | None = None,
    processor_overrides: Mapping[str, Any] | None = None,
) -> ModelInfo:
    """Write a tiny llava / llava_next / mllama model folder; return its ``ModelInfo``.

    - llava: CLIP tower (``image_size`` px, ``patch_size`` patches) + Llama (or Mistral,
      ``text_arch``) LM, ``image_token_id`` = the tokenizer's ``<image>``, LlavaProcessor with
      ``patch_size`` and ``vision_feature_select_strategy`` so it expands ``<image>``.
    - llava_next: the same plus ``image_grid_pinpoints`` (default one tile, 2x1, 1x2), written
      identically into config.json and the image processor.
    - mllama: tiled vision encoder (``intermediate_layers_indices`` default: every vision layer)
      and a text model with ``cross_attention_layers`` (default: the last layer); ``<|image|>``
      id == text ``vocab_size``.

    ``shard_size`` ("20KB") forces several shards and an index; ``weights="bin"`` rewrites them
    as ``pytorch_model*.bin`` (transformers 5 always saves safetensors). ``drop_tensors`` deletes
    tensors whose on-disk name starts with a prefix (e.g. "multi_modal_projector",
    "image_newline"). ``config_overrides`` / ``processor_overrides`` set dotted keys in
    config.json / processor_config.json after saving, to plant mismatches; the weights still
    match the original config. Processor keys starting with ``image_processor.`` reach the image
    processor in either layout. Examples: ``config_overrides={"image_token_index": 5}`` (C8),
    ``processor_overrides={"patch_size": DELETE}`` (C9; ``DELETE`` from ``doctor.testing``
    removes a key), ``processor_overrides={"image_processor.image_grid_pinpoints": [[28, 28]]}``
    (H2). ``processor=False`` writes the tokenizer files only (C10).
    ``processor_layout="split"`` writes the hub layout of 4.4x (preprocessor_config.json +
    processor_config.json + chat_template.json) instead of 5.x's single processor_config.json.
    """
    path = Path(dir)
    sizes = Sizes(text_layers=text_layers, hidden=hidden, vision_layers=vision_layers, vision_hidden=hidden,
                  image_size=image_size, patch_size=patch_size)
    if family not in _families.FAMILIES:
        raise ValueError(f"family must be one of {_families.FAMILIES}, got {family!r}")
    tok = make_tokenizer(path, vocab_size=vocab_size, extra_special=(_families.IMAGE_TOKENS[family],),
                         pad_in_vocab=family == "mllama")
    config = _families.vlm_config(family, tok, sizes, text_arch, image_grid_pinpoints, cross_attention_layers,
                                  intermediate_layers_indices)
    _save_model(path, config, "AutoModelForImageTextToText", seed, dtype, shard_size)
    if processor:
        from transformers import AutoTokenizer

        _families.processor(family, AutoTokenizer.from_pretrained(path), config, sizes).save_pretrained(path)
        if processor_layout == "split":
            _split_processor_files(path)
        if processor_overrides:
            _patch_processor(path, processor_overrides)
    files = _finish_weights(path, weights, drop_tensors)
    saved = _weights.patch_json(path / "config.json", config_overrides)
    return ModelInfo(
        path=path, family=family, config=saved, tokenizer=tok, image_token=tok.image_token,
        image_token_id=tok.image_token_id, image_size=image_size, patch_size=patch_size,
        image_seq_length=(image_size // patch_size) ** 2 if family == "llava" else None,
        hidden_size=hidden, vision_hidden_size=hidden,
        text_vocab_size=config.text_config.vocab_size, weight_files=files,
    )


def make_text_model(
    dir: str | Path,
    arch: Literal["llama", "mistral"] = "llama",
    seed: int = 0,
    dtype: DType = "float32",
    layers: int = 2,
    hidden: int = 32,
    vocab_size: int = 300,
    extra_special: Sequence[str] = (),
    shard_size: str | int | None = None,
    weights: _weights.WeightFormat = "safetensors",
) -> ModelInfo:
    """Write a tiny LlamaForCausalLM / MistralForCausalLM with its tokenizer (a Vicuna stand-in:
    no pad token, no ``<image>`` unless ``extra_special`` adds one)."""
    path = Path(dir)
    sizes = Sizes(text_layers=layers, hidden=hidden)
    tok = make_tokenizer(path, vocab_size=vocab_size, extra_special=tuple(extra_special), pad_token=None)
    config = _families.text_config(arch, tok, sizes, vocab_size=tok.size)
    _save_model(path, config, "AutoModelForCausalLM", seed, dtype, shard_size)
    files = _finish_weights(path, weights, ())
    return ModelInfo(path=path, family=arch, config=_read(path), tokenizer=tok, hidden_size=hidden,
                     text_vocab_size=tok.size, weight_files=files)


def make_clip_vision_tower(
    dir: str | Path,
    seed: int = 0,
    dtype: DType = "float32",
    layers: int = 2,
    hidden: int = 32,
    image_size: int = 28,
    patch_size: int = 14,
    layout: Literal["v4", "native"] = "v4",
) -> ModelInfo:
    """Write a tiny CLIPVisionModel folder with ``preprocessor_config.json`` (a stand-in for
    openai/clip-vit-large-patch14-336, the tower original LLaVA and XTuner load by name).

    ``layout="v4"`` stores tensors as ``vision_model.*`` like hub checkpoints and transformers
    4.x; ``"native"`` keeps what transformers 5 saves (no ``vision_model.`` prefix: its
    CLIPVisionModel has no such submodule). Both load with no missing keys.
    """
    path = Path(dir)
    sizes = Sizes(vision_layers=layers, vision_hidden=hidden, image_size=image_size, patch_size=patch_size)
    config = _families.clip_vision_config(sizes)
    _save_model(path, config, "CLIPVisionModel", seed, dtype, None)
    _families.clip_image_processor(sizes).save_pretrained(path)
    if layout == "v4":
        _weights.rewrite_weights(path, _weights.rename_keys(r"^(?!vision_model\.)", "vision_model."))
    return ModelInfo(path=path, family="clip_vision_model", config=_read(path), image_size=image_size,
                     patch_size=patch_size, image_seq_length=(image_size // patch_size) ** 2,
                     hidden_size=hidden, vision_hidden_size=hidden, weight_files=_weights.weight_files(path))


def tiny_inputs(info: ModelInfo, image_shape: tuple[int, int] = (48, 48), prompt: str | None = None,
                seed: int = 0, kind: Literal["noise", "gradient", "blank"] = "noise") -> Any:
    """Processor outputs (``return_tensors="pt"``) for one prompt and one real PIL image of
    ``image_shape`` = (height, width); text models get tokenizer outputs only."""
    from transformers import AutoProcessor, AutoTokenizer

    from doctor.testing.images import pil_image

    if info.image_token is None:
        return AutoTokenizer.from_pretrained(info.path)(prompt or "Describe the image.", return_tensors="pt")
    height, width = image_shape
    image = pil_image((width, height), seed, kind)
    if prompt is None:
        prompt = (f"{info.image_token}What is shown in this image?" if info.family == "mllama"
                  else f"USER: {info.image_token}\nWhat is shown in this image? ASSISTANT:")
    return AutoProcessor.from_pretrained(info.path)(images=image, text=prompt, return_tensors="pt")


def _save_model(path: Path, config: Any, auto_class: str, seed: int, dtype: str, shard_size: str | int | None) -> None:
    import torch
    import transformers

    cls = getattr(transformers, auto_class)
    with seeded(seed):
        model = cls.from_config(config) if auto_class.startswith("Auto") else cls(config)
        model.to(getattr(torch, dtype)).eval()
        model.save_pretrained(path, max_shard_size=shard_size if shard_size is not None else "5GB")


def _finish_weights(path: Path, weights: str, drop: Iterable[str]) -> list[str]:
    drop = tuple(drop)
    if weights not in ("safetensors", "bin"):
        raise ValueError(f"weights must be 'safetensors' or 'bin', got {weights!r}")
    if weights == "bin" or drop:
        return _weights.rewrite_weights(path, _weights.drop_prefixes(drop), fmt=weights)  # type: ignore[arg-type]
    return _weights.weight_files(path)


def _split_processor_files(path: Path) -> None:
    processor_config = _read(path, "processor_config.json")
    image_processor = processor_config.pop("image_processor", None)
    if image_processor is not None:
        _weights.dump_json(path / "preprocessor_config.json", image_processor)
    _weights.dump_json(path / "processor_config.json", processor_config)
    template = path / "chat_template.jinja"
    if template.exists():
        _weights.dump_json(path / "chat_template.json", {"chat_template": template.read_text(encoding="utf-8")})
        template.unlink()


def _patch_processor(path: Path, overrides: Mapping[str, Any]) -> None:
    image = {k.removeprefix("image_processor."): v for k, v in overrides.items() if k.startswith("image_processor.")}
    rest = {k: v for k, v in overrides.items() if not k.startswith("image_processor.")}
    if image and (path / "preprocessor_config.json").exists():  # the split layout
        _weights.patch_json(path / "preprocessor_config.json", image)
    else:
        rest.update({f"image_processor.{k}": v for k, v in image.items()})
    _weights.patch_json(path / "processor_config.json", rest)


def _read(path: Path, name: str = "config.json") -> dict[str, Any]:
    return json.loads((path / name).read_text(encoding="utf-8"))
