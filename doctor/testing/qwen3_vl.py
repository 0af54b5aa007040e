"""Tiny, REAL Qwen3-VL model folders (transformers' own ``Qwen3VLConfig`` /
``Qwen3VLForConditionalGeneration``, seeded random weights), with the Qwen tokenizer of
``doctor.testing.qwen`` (``<|image_pad|>``, ``<|video_pad|>``, ``<|vision_start|>``,
``<|vision_end|>``, ChatML template) and the processor files Qwen3-VL's hub repos ship.

``make_qwen3_vl_model(dir, config_form="hub")`` writes:

- ``config.json``: ``"hub"`` the form the hub repos carry (written by 4.57: ``text_config.rope_scaling``
  ``{"rope_type": "default", "mrope_section": [...], "mrope_interleaved": true}`` and
  ``text_config.rope_theta``); ``"v5"`` what transformers 5 writes (``text_config.rope_parameters``).
- weights: ``model.visual.*`` (with ``deepstack_merger_list.N``), ``model.language_model.*``,
  ``lm_head.*``: the hub's names and the in-memory ones (Qwen3-VL has a single naming world).
- processor files (``processor_layout="split"``, the hub layout): ``preprocessor_config.json``
  with ``size`` {``shortest_edge``, ``longest_edge``} pixel limits, ``patch_size`` 16,
  ``merge_size``, ``temporal_patch_size`` and no ``min_pixels`` / ``max_pixels`` keys;
  ``video_preprocessor_config.json``; ``chat_template.json``. ``"native"``: one
  ``processor_config.json``; ``None``: none.

The image processor class of ``qwen3_vl`` is Qwen2-VL's: ``image_processor(info)`` loads the PIL
one; ``processor(info)`` builds ``Qwen3VLProcessor`` without its video processor (which needs
torchvision). head_dim is 16, so ``mrope_section`` defaults to ``[2, 3, 3]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from doctor.testing import weights as _weights
from doctor.testing.models import ModelInfo
from doctor.testing.qwen import (
    ENDOFTEXT,
    IM_END,
    IMAGE_PAD,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    QwenInfo,
    _finish,
    _without_video,
    _write_tokenizer,
    default_mrope_section,
)
from doctor.testing.torch_context import seeded

ConfigForm = Literal["hub", "v5"]

# What TRL's SFT examples and unsloth pass as target_modules: the seven LLM projections, bare.
TRL_BARE_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# A language-only regex (LLaMA-Factory's freeze_vision_tower leaves the same modules).
QWEN3_LANGUAGE_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def make_qwen3_vl_model(
    dir: str | Path,
    config_form: ConfigForm = "hub",
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
    vision_layers: int = 2,
    vision_hidden: int = 32,
    vision_heads: int = 2,
    patch_size: int = 16,
    spatial_merge_size: int = 2,
    temporal_patch_size: int = 2,
    deepstack_visual_indexes: Sequence[int] = (0,),
    num_position_embeddings: int = 64,
    mrope_section: Sequence[int] | None = None,
    vision_out_hidden: int | None = None,
    min_pixels: int = 64 * 64,
    max_pixels: int = 32 * 32 * 64,
    vocab_size: int = 300,
    tie_word_embeddings: bool = False,
    processor_layout: Literal["split", "native"] | None = "split",
    config_overrides: Mapping[str, Any] | None = None,
    processor_overrides: Mapping[str, Any] | None = None,
    tokenizer_overrides: Mapping[str, Any] | None = None,
) -> QwenInfo:
    """Write a tiny Qwen3-VL folder into ``dir``; return its ``QwenInfo`` (family ``"qwen3_vl"``).

    ``max_pixels`` defaults to 64 merged tokens (32 * 32 * 64), ``min_pixels`` to 64 * 64 (the
    hub's 65,536 would make every test image large). ``drop_tensors`` removes tensors whose name
    starts with a prefix; ``*_overrides`` set dotted keys after saving (``DELETE`` removes one):
    config.json, preprocessor_config.json (``processor_config.json``'s ``image_processor`` in the
    native layout), tokenizer_config.json. Weights always match the config as built.
    """
    import torch
    import transformers

    if config_form not in ("hub", "v5"):
        raise ValueError(f"config_form must be 'hub' or 'v5', got {config_form!r}")
    path = Path(dir)
    head_dim = hidden // heads
    out_width = hidden if vision_out_hidden is None else vision_out_hidden
    section = list(mrope_section) if mrope_section is not None else default_mrope_section(head_dim)
    tok = _write_tokenizer(path, vocab_size)
    ids = tok.special_ids
    text = dict(
        vocab_size=tok.size, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=text_layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim, max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": section,
                         "mrope_interleaved": True},
        bos_token_id=None, eos_token_id=ids[IM_END], pad_token_id=ids[ENDOFTEXT],
    )
    vision = dict(
        depth=vision_layers, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, num_heads=vision_heads,
        out_hidden_size=out_width, patch_size=patch_size, spatial_merge_size=spatial_merge_size,
        temporal_patch_size=temporal_patch_size, num_position_embeddings=num_position_embeddings,
        deepstack_visual_indexes=list(deepstack_visual_indexes))
    config = transformers.Qwen3VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids[IMAGE_PAD], video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START], vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=tie_word_embeddings,
    )
    with seeded(seed):
        model = transformers.Qwen3VLForConditionalGeneration(config).to(getattr(torch, dtype)).eval()
        model.save_pretrained(path, max_shard_size=shard_size if shard_size is not None else "5GB")
    if config_form == "hub":
        _hub_config(path / "config.json")
    if processor_layout is not None:
        _write_processor(path, tok.chat_template, processor_layout, min_pixels=min_pixels, max_pixels=max_pixels,
                         patch_size=patch_size, merge_size=spatial_merge_size,
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
        path=path, family="qwen3_vl", config=saved, tokenizer=tok, image_token=IMAGE_PAD,
        image_token_id=ids[IMAGE_PAD], image_size=None, patch_size=patch_size, image_seq_length=None,
        hidden_size=hidden, vision_hidden_size=vision_hidden, text_vocab_size=tok.size, weight_files=files,
        layout=config_form, video_token_id=ids[VIDEO_PAD], vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END], merge_size=spatial_merge_size,
        temporal_patch_size=temporal_patch_size, min_pixels=min_pixels, max_pixels=max_pixels,
        head_dim=head_dim, mrope_section=section, num_heads=heads,
    )


def image_processor(info: QwenInfo | str | Path) -> Any:
    """The saved image processor, as the PIL class ``qwen3_vl`` maps to (Qwen2-VL's; no torchvision)."""
    import transformers

    path = Path(info.path if isinstance(info, ModelInfo) else info)
    return transformers.Qwen2VLImageProcessorPil.from_pretrained(path)


def processor(info: QwenInfo | str | Path) -> Any:
    """``Qwen3VLProcessor`` over the saved tokenizer and image processor, without the video processor."""
    import transformers

    path = Path(info.path if isinstance(info, ModelInfo) else info)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    return _without_video(transformers.Qwen3VLProcessor)(
        image_processor=image_processor(path), tokenizer=tokenizer, video_processor=None,
        chat_template=tokenizer.chat_template)


def qwen3_vl_inputs(info: QwenInfo, image_shape: tuple[int, int] = (64, 96), prompt: str = "What is in this image?",
                    seed: int = 0) -> Any:
    """Processor outputs (``return_tensors="pt"``) for one chat turn with one ``image_shape`` =
    (height, width) image."""
    from doctor.testing.images import pil_image

    height, width = image_shape
    proc = processor(info)
    text = proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}],
        add_generation_prompt=True, tokenize=False)
    return proc(images=pil_image((width, height), seed, "noise"), text=text, return_tensors="pt")


def count_image_tokens(info: QwenInfo | str | Path, height: int, width: int) -> int:
    """``<|image_pad|>`` ids in the real processor's output for one ``height`` x ``width`` image."""
    from doctor.testing.images import pil_image

    proc = processor(info)
    out = proc(images=pil_image((width, height), 0, "blank"), text=f"{VISION_START}{IMAGE_PAD}{VISION_END}")
    return sum(1 for i in out["input_ids"][0] if i == proc.image_token_id)


def _hub_config(path: Path) -> None:
    """transformers 5's ``text_config.rope_parameters`` -> the hub's ``rope_scaling`` + ``rope_theta``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    text = data.get("text_config") or {}
    rope = dict(text.pop("rope_parameters", None) or {})
    theta = rope.pop("rope_theta", None)
    text["rope_scaling"] = rope
    if theta is not None:
        text["rope_theta"] = theta
    (data.get("vision_config") or {}).pop("rope_parameters", None)
    data["transformers_version"] = "4.57.0"
    _weights.dump_json(path, data)


def _write_processor(path: Path, template: str | None, layout: str, **numbers: int) -> None:
    """The hub's processor files: pixel limits in ``size`` only, Qwen3-VL's 0.5 mean / std."""
    common = {
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3, "rescale_factor": 1 / 255,
        "patch_size": numbers["patch_size"], "merge_size": numbers["merge_size"],
        "temporal_patch_size": numbers["temporal_patch_size"],
    }
    image = {**common, "image_processor_type": "Qwen2VLImageProcessorFast",
             "size": {"shortest_edge": numbers["min_pixels"], "longest_edge": numbers["max_pixels"]}}
    video = {**common, "video_processor_type": "Qwen3VLVideoProcessor", "fps": 2, "min_frames": 4, "max_frames": 768,
             "size": {"shortest_edge": 4096, "longest_edge": 25165824}}
    if layout == "split":
        _weights.dump_json(path / "preprocessor_config.json", {**image, "processor_class": "Qwen3VLProcessor"})
        _weights.dump_json(path / "video_preprocessor_config.json", {**video, "processor_class": "Qwen3VLProcessor"})
        if template:
            _weights.dump_json(path / "chat_template.json", {"chat_template": template})
    else:
        _weights.dump_json(path / "processor_config.json", {
            "image_processor": image, "video_processor": video, "processor_class": "Qwen3VLProcessor"})
        if template:
            (path / "chat_template.jinja").write_text(template, encoding="utf-8")
