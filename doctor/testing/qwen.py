"""Tiny, REAL Qwen2-VL / Qwen2.5-VL model folders (transformers' own ``qwen2_vl`` / ``qwen2_5_vl``
classes and configs, seeded random weights), with a tokenizer carrying Qwen's special tokens and
chat template, and the processor files Qwen's hub repos ship.

``make_qwen_model(dir, family="qwen2_5_vl", layout="v4")`` writes:

- ``config.json``: ``layout="v4"`` the flat hub form transformers 4.x wrote (text keys at the
  top level, ``rope_scaling: {"type": "mrope", "mrope_section": [...]}``); ``"v5"`` the nested
  form transformers 5 writes (``text_config`` with ``rope_parameters``).
- weights: ``"v4"`` keys ``visual.*``, ``model.layers.*``, ``model.embed_tokens.*``,
  ``lm_head.*`` (what every Qwen2-VL hub checkpoint holds, and what transformers 5.25 itself
  saves); ``"v5"`` keys ``model.visual.*``, ``model.language_model.*``, ``lm_head.*`` (the
  in-memory module names of transformers 5). Both load with ``from_pretrained`` with no missing
  or unexpected keys.
- tokenizer files: the BPE tokenizer of ``doctor.testing.tokenizer`` plus ``<|image_pad|>``,
  ``<|video_pad|>``, ``<|vision_start|>``, ``<|vision_end|>``, ``<|im_start|>``, ``<|im_end|>``,
  ``<|endoftext|>`` (pad), no BOS (as Qwen), ``eos_token="<|im_end|>"``, Qwen's ChatML template;
  ``tokenizer_class`` is ``PreTrainedTokenizerFast``: transformers 5's ``Qwen2Tokenizer`` would
  replace the pre-tokenizer with Qwen's byte-level regex, which the tiny vocabulary lacks.
- processor files: ``processor_layout="split"`` (default, the hub layout):
  ``preprocessor_config.json`` with ``min_pixels`` / ``max_pixels`` / ``patch_size`` /
  ``merge_size`` / ``temporal_patch_size`` (and ``size``), ``chat_template.json``;
  ``"native"``: the single ``processor_config.json`` transformers 5 writes; ``None``: none.

AutoProcessor for Qwen2-VL needs torchvision (its video processor), which is never installed:
``image_processor(info)`` and ``processor(info)`` build the PIL image processor and a processor
without video support from the folder instead. Sizes default to a few hundred kB; head_dim is 16
so ``mrope_section`` defaults to ``[2, 3, 3]`` (sum * 2 == head_dim).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from doctor.testing import weights as _weights
from doctor.testing.models import ModelInfo
from doctor.testing.tokenizer import make_tokenizer
from doctor.testing.torch_context import seeded

QwenFamily = Literal["qwen2_vl", "qwen2_5_vl"]
QWEN_FAMILIES: tuple[str, ...] = ("qwen2_vl", "qwen2_5_vl")
Layout = Literal["v4", "v5"]

IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
QWEN_SPECIALS = (IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END, IM_START, IM_END)

# What LLaMA-Factory / TRL / unsloth users write for Qwen2-VL: attention + MLP of the LLM only.
QWEN_LANGUAGE_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"

# Qwen's ChatML template (images and videos as <|vision_start|><|image_pad|><|vision_end|>).
# Newlines are '\n' expressions: transformers renders with trim_blocks.
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system{{ '\\n' }}You are a helpful assistant.<|im_end|>{{ '\\n' }}{% endif %}"
    "<|im_start|>{{ message['role'] }}{{ '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>{{ '\\n' }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>{{ '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)

_CLASSES = {
    "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
    "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
}


@dataclass
class QwenInfo(ModelInfo):
    """A ``ModelInfo`` for a Qwen2(.5)-VL folder, plus Qwen's numbers: the other vision token
    ids, the key ``layout``, the processor's pixel limits and patching, and the text geometry
    that ``mrope_section`` must agree with."""

    layout: str = "v4"
    video_token: str = VIDEO_PAD
    video_token_id: int | None = None
    vision_start_token_id: int | None = None
    vision_end_token_id: int | None = None
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 0
    max_pixels: int = 0
    head_dim: int = 0
    mrope_section: list[int] = field(default_factory=list)
    num_heads: int = 0

    @property
    def factor(self) -> int:
        """Both sides of a resized image are multiples of this (patch_size * merge_size)."""
        return int(self.patch_size or 14) * self.merge_size

    def num_image_tokens(self, height: int, width: int) -> int:
        """``<|image_pad|>`` tokens the saved processor writes for one ``height`` x ``width`` image
        (counted in real processor output: image processor + tokenizer, no torchvision)."""
        return count_image_tokens(self, height, width)


def make_qwen_model(
    dir: str | Path,
    family: QwenFamily = "qwen2_5_vl",
    layout: Layout = "v4",
    seed: int = 0,
    dtype: Literal["float32", "float16", "bfloat16"] = "float32",
    shard_size: str | int | None = None,
    weights: _weights.WeightFormat = "safetensors",
    drop_tensors: Iterable[str] = (),
    text_layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 64,
    vision_layers: int = 1,
    vision_hidden: int = 32,
    vision_heads: int = 2,
    patch_size: int = 14,
    spatial_merge_size: int = 2,
    temporal_patch_size: int = 2,
    mrope_section: Sequence[int] | None = None,
    vision_out_hidden: int | None = None,
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 64,
    vocab_size: int = 300,
    tie_word_embeddings: bool = False,
    processor_layout: Literal["split", "native"] | None = "split",
    config_overrides: Mapping[str, Any] | None = None,
    processor_overrides: Mapping[str, Any] | None = None,
    tokenizer_overrides: Mapping[str, Any] | None = None,
) -> QwenInfo:
    """Write a tiny Qwen2-VL / Qwen2.5-VL folder into ``dir``; return its ``QwenInfo``.

    ``mrope_section`` defaults to a split of ``head_dim // 2`` (hidden // heads = 16 -> [2, 3, 3]).
    ``vision_out_hidden`` (default ``hidden``) is the merger's output width (Qwen2-VL
    ``vision_config.hidden_size``, Qwen2.5-VL ``out_hidden_size``): another value builds a model
    whose image features do not fit the text embeddings.
    ``max_pixels`` defaults to 64 merged tokens (28 * 28 * 64) so tests stay fast; ``min_pixels``
    to Qwen's 56 * 56. ``drop_tensors`` removes tensors whose ON-DISK name starts with a prefix
    (``"visual.merger"`` in v4, ``"model.visual.merger"`` in v5). ``config_overrides`` /
    ``processor_overrides`` / ``tokenizer_overrides`` set dotted keys in config.json /
    preprocessor_config.json (``processor_config.json``'s ``image_processor`` in the native
    layout) / tokenizer_config.json after saving, to plant defects; ``DELETE`` from
    ``doctor.testing`` removes a key. Weights always match the config as built.
    """
    import transformers

    if family not in _CLASSES:
        raise ValueError(f"family must be one of {QWEN_FAMILIES}, got {family!r}")
    if layout not in ("v4", "v5"):
        raise ValueError(f"layout must be 'v4' or 'v5', got {layout!r}")
    path = Path(dir)
    head_dim = hidden // heads
    out_width = hidden if vision_out_hidden is None else vision_out_hidden
    section = list(mrope_section) if mrope_section is not None else default_mrope_section(head_dim)
    tok = _write_tokenizer(path, vocab_size)
    ids = tok.special_ids
    config_cls, model_cls, _ = _CLASSES[family]
    text = dict(
        vocab_size=tok.size, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=text_layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
        max_window_layers=text_layers, rope_scaling={"type": "mrope", "mrope_section": section},
        bos_token_id=None, eos_token_id=ids[IM_END], pad_token_id=ids[ENDOFTEXT],
    )
    if family == "qwen2_vl":
        vision: dict[str, Any] = dict(
            depth=vision_layers, embed_dim=vision_hidden, hidden_size=out_width, mlp_ratio=2, num_heads=vision_heads,
            patch_size=patch_size, spatial_merge_size=spatial_merge_size, temporal_patch_size=temporal_patch_size)
    else:
        vision = dict(
            depth=vision_layers, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
            num_heads=vision_heads, out_hidden_size=out_width, fullatt_block_indexes=[vision_layers - 1],
            window_size=patch_size * spatial_merge_size * 2, patch_size=patch_size,
            spatial_merge_size=spatial_merge_size, temporal_patch_size=temporal_patch_size)
    config = getattr(transformers, config_cls)(
        text_config=text, vision_config=vision, image_token_id=ids[IMAGE_PAD], video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START], vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=tie_word_embeddings,
    )
    import torch

    with seeded(seed):
        model = getattr(transformers, model_cls)(config).to(getattr(torch, dtype)).eval()
        model.save_pretrained(path, max_shard_size=shard_size if shard_size is not None else "5GB")
    if layout == "v5":
        _weights.rewrite_weights(path, to_v5_keys)
    else:
        _weights.rewrite_weights(path, to_v4_keys)
        _flatten_config(path / "config.json")
    if processor_layout is not None:
        _write_processor(path, family, tok.chat_template, processor_layout, min_pixels=min_pixels,
                         max_pixels=max_pixels, patch_size=patch_size, merge_size=spatial_merge_size,
                         temporal_patch_size=temporal_patch_size)
        if processor_overrides:
            target = path / ("preprocessor_config.json" if processor_layout == "split" else "processor_config.json")
            prefix = "" if processor_layout == "split" else "image_processor."
            _weights.patch_json(target, {prefix + k: v for k, v in processor_overrides.items()})
    if tokenizer_overrides:
        _weights.patch_json(path / "tokenizer_config.json", tokenizer_overrides)
    files = _finish(path, weights, drop_tensors)
    saved = _weights.patch_json(path / "config.json", config_overrides)
    return QwenInfo(
        path=path, family=family, config=saved, tokenizer=tok, image_token=IMAGE_PAD,
        image_token_id=ids[IMAGE_PAD], image_size=None, patch_size=patch_size, image_seq_length=None,
        hidden_size=hidden, vision_hidden_size=vision_hidden, text_vocab_size=tok.size, weight_files=files,
        layout=layout, video_token_id=ids[VIDEO_PAD], vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END], merge_size=spatial_merge_size,
        temporal_patch_size=temporal_patch_size, min_pixels=min_pixels, max_pixels=max_pixels,
        head_dim=head_dim, mrope_section=section, num_heads=heads,
    )


def default_mrope_section(head_dim: int) -> list[int]:
    """A (temporal, height, width) split of ``head_dim // 2`` rotary frequencies in Qwen's
    proportions (16, 24, 24 of 64)."""
    half = head_dim // 2
    t = max(1, round(half * 16 / 64))
    h = (half - t) // 2
    return [t, h, half - t - h]


def to_v5_keys(state: dict[str, Any]) -> dict[str, Any]:
    """An ``edit`` for ``_weights.rewrite_weights``: 4.x keys -> transformers 5's module names."""
    out = {}
    for key, value in state.items():
        if key.startswith("visual."):
            key = "model." + key
        elif key.startswith("model.") and not key.startswith(("model.visual.", "model.language_model.")):
            key = "model.language_model." + key[len("model."):]
        out[key] = value
    return out


def to_v4_keys(state: dict[str, Any]) -> dict[str, Any]:
    """An ``edit``: transformers 5's module names -> the 4.x / hub keys."""
    out = {}
    for key, value in state.items():
        if key.startswith("model.visual."):
            key = key[len("model."):]
        elif key.startswith("model.language_model."):
            key = "model." + key[len("model.language_model."):]
        out[key] = value
    return out


def image_processor(info: QwenInfo | str | Path) -> Any:
    """The saved image processor, as the PIL class (no torchvision)."""
    import transformers

    path = Path(info.path if isinstance(info, ModelInfo) else info)
    cls = getattr(transformers, "Qwen2VLImageProcessorPil", None) or transformers.Qwen2VLImageProcessor
    return cls.from_pretrained(path)


def processor(info: QwenInfo | str | Path) -> Any:
    """The family's processor over the saved tokenizer and image processor, without the video
    processor (which needs torchvision)."""
    import transformers

    path = Path(info.path if isinstance(info, ModelInfo) else info)
    family = json.loads((path / "config.json").read_text(encoding="utf-8"))["model_type"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    return _without_video(getattr(transformers, _CLASSES[family][2]))(
        image_processor=image_processor(path), tokenizer=tokenizer, video_processor=None,
        chat_template=tokenizer.chat_template)


def _without_video(cls: type) -> type:
    """``cls`` accepting ``video_processor=None`` (transformers 5 type-checks every part, and the
    video processor class cannot be imported without torchvision)."""

    class ImagesOnly(cls):  # type: ignore[misc, valid-type]
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument is None and argument_name == "video_processor":
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    ImagesOnly.__name__ = ImagesOnly.__qualname__ = cls.__name__
    return ImagesOnly


def qwen_inputs(info: QwenInfo, image_shape: tuple[int, int] = (56, 84), prompt: str = "What is in this image?",
                seed: int = 0, kind: Literal["noise", "gradient", "blank"] = "noise") -> Any:
    """Processor outputs (``return_tensors="pt"``: input_ids, attention_mask, pixel_values,
    image_grid_thw) for one chat turn with one PIL image of ``image_shape`` = (height, width)."""
    from doctor.testing.images import pil_image

    height, width = image_shape
    proc = processor(info)
    text = proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}],
        add_generation_prompt=True, tokenize=False)
    return proc(images=pil_image((width, height), seed, kind), text=text, return_tensors="pt")


def count_image_tokens(info: QwenInfo | str | Path, height: int, width: int) -> int:
    """``<|image_pad|>`` ids in the processor's output for one ``height`` x ``width`` image."""
    from doctor.testing.images import pil_image

    proc = processor(info)
    out = proc(images=pil_image((width, height), 0, "blank"), text=f"{VISION_START}{IMAGE_PAD}{VISION_END}")
    return sum(1 for i in out["input_ids"][0] if i == proc.image_token_id)


def make_qwen_lora_adapter(base: QwenInfo | str | Path, out: str | Path,
                           target_modules: str | Sequence[str] | None = None, r: int = 4, alpha: int = 8,
                           train_steps: int = 2, seed: int = 0, modules_to_save: Sequence[str] | None = None,
                           base_model_name_or_path: str | None = None) -> Path:
    """A PEFT LoRA adapter on a Qwen2(.5)-VL folder (default targets: the LLM's attention and
    MLP, ``QWEN_LANGUAGE_TARGETS``), trained a few steps on text; every ``lora_B`` non-zero."""
    import transformers
    from peft import LoraConfig, get_peft_model

    from doctor.testing.adapters import _tidy_config, train_lora

    base_path = Path(base.path if isinstance(base, ModelInfo) else base)
    model = transformers.AutoModelForImageTextToText.from_pretrained(base_path)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
        target_modules=(QWEN_LANGUAGE_TARGETS if target_modules is None
                        else target_modules if isinstance(target_modules, str) else list(target_modules)),
        modules_to_save=list(modules_to_save) if modules_to_save else None)
    with seeded(seed):
        peft_model = get_peft_model(model, config)
        train_lora(peft_model, model.config.model_type, steps=train_steps)
        out = Path(out)
        peft_model.save_pretrained(out)
    _tidy_config(out, base_model_name_or_path)
    return out


def _write_tokenizer(path: Path, vocab_size: int) -> Any:
    """The BPE test tokenizer with Qwen's specials, reshaped to Qwen's conventions: no BOS
    prepended, no prefix space, ``<|im_end|>`` as EOS, ``<|endoftext|>`` as pad, ChatML template."""
    tok = make_tokenizer(path, vocab_size=vocab_size, extra_special=QWEN_SPECIALS, pad_token=ENDOFTEXT,
                         chat_template=QWEN_CHAT_TEMPLATE, tokenizer_class="PreTrainedTokenizerFast",
                         model_max_length=32768)
    backend = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
    backend["post_processor"] = None
    # Qwen's byte-level BPE adds no prefix space: a text tokenizes the same alone as inside a prompt
    backend["pre_tokenizer"]["prepend_scheme"] = "never"
    (path / "tokenizer.json").write_text(json.dumps(backend, ensure_ascii=False), encoding="utf-8")
    config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.update(bos_token=None, eos_token=IM_END, pad_token=ENDOFTEXT, add_bos_token=False, errors="replace")
    config.pop("legacy", None)
    _weights.dump_json(path / "tokenizer_config.json", config)
    _weights.dump_json(path / "special_tokens_map.json", {
        "eos_token": IM_END, "pad_token": ENDOFTEXT, "additional_special_tokens": list(QWEN_SPECIALS)})
    from dataclasses import replace

    ids = tok.special_ids
    return replace(tok, bos_token_id=None, eos_token_id=ids[IM_END], pad_token_id=ids[ENDOFTEXT])


def _write_processor(path: Path, family: str, template: str | None, layout: str, **numbers: int) -> None:
    """Hub (split) or transformers-5 (native) processor files with Qwen's pixel limits."""
    image = {
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor", "resample": 3, "rescale_factor": 1 / 255,
        "min_pixels": numbers["min_pixels"], "max_pixels": numbers["max_pixels"],
        "size": {"shortest_edge": numbers["min_pixels"], "longest_edge": numbers["max_pixels"]},
        "patch_size": numbers["patch_size"], "merge_size": numbers["merge_size"],
        "temporal_patch_size": numbers["temporal_patch_size"],
    }
    processor_class = _CLASSES[family][2]
    if layout == "split":
        _weights.dump_json(path / "preprocessor_config.json", {**image, "processor_class": processor_class})
        if template:
            _weights.dump_json(path / "chat_template.json", {"chat_template": template})
    else:
        _weights.dump_json(path / "processor_config.json", {"image_processor": image, "processor_class": processor_class})
        if template:
            (path / "chat_template.jinja").write_text(template, encoding="utf-8")


def _flatten_config(path: Path) -> None:
    """transformers 5's nested config.json -> the flat hub form of 4.x (text keys at the top,
    ``rope_scaling`` rather than ``rope_parameters``)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    text = data.pop("text_config", {})
    rope = dict(text.pop("rope_parameters", None) or {})
    for key in ("model_type", "layer_types", "dtype"):
        text.pop(key, None)
    theta = rope.pop("rope_theta", None)
    rope.pop("rope_type", None)
    rope.setdefault("type", "mrope")
    data.update(text)
    data["rope_scaling"] = rope
    if theta is not None:
        data["rope_theta"] = theta
    vision = data.get("vision_config") or {}
    vision.pop("rope_parameters", None)
    data["transformers_version"] = "4.49.0"
    _weights.dump_json(path, data)


def _finish(path: Path, weights: str, drop: Iterable[str]) -> list[str]:
    drop = tuple(drop)
    if weights not in ("safetensors", "bin"):
        raise ValueError(f"weights must be 'safetensors' or 'bin', got {weights!r}")
    if weights == "bin" or drop:
        return _weights.rewrite_weights(path, _weights.drop_prefixes(drop), fmt=weights)  # type: ignore[arg-type]
    return _weights.weight_files(path)
