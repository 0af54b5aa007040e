"""Qwen2-VL and Qwen2.5-VL (transformers' ``qwen2_vl`` / ``qwen2_5_vl``).

Read in transformers (``modeling_qwen2_vl.py``, ``image_processing_qwen2_vl.py``,
``processing_qwen2_vl.py``, ``configuration_qwen2_5_vl.py``):

- the vision encoder is ``visual`` (``patch_embed``, ``blocks.N.attn.qkv`` / ``attn.proj``,
  ``blocks.N.mlp.fc1/fc2`` in Qwen2-VL, ``mlp.gate_proj/up_proj/down_proj`` in Qwen2.5-VL), and
  its projector is ``visual.merger`` (``ln_q``, ``mlp.0``, ``mlp.2``): it merges
  ``spatial_merge_size``^2 patches and maps them to the text width (Qwen2-VL:
  ``vision_config.hidden_size``; Qwen2.5-VL: ``vision_config.out_hidden_size``);
- on disk (every hub checkpoint, and what transformers 5 still saves) the names are
  ``visual.*``, ``model.layers.*``, ``model.embed_tokens``, ``lm_head``; in memory from
  transformers 4.52 (and 5.x) ``model.visual.*``, ``model.language_model.*``, ``lm_head``;
- the processor resizes each image with ``smart_resize`` to multiples of
  ``patch_size * merge_size`` (28) with ``min_pixels <= h' * w' <= max_pixels`` and writes
  ``(h' / 28) * (w' / 28)`` ``<|image_pad|>`` tokens, wrapped in ``<|vision_start|>`` ...
  ``<|vision_end|>`` by the chat template;
- the language model's rotary embedding splits its ``head_dim / 2`` frequencies by
  ``rope_scaling.mrope_section`` (temporal, height, width): default ``[16, 24, 24]``.
"""

from __future__ import annotations

from dataclasses import replace

from doctor.families.spec import Family, KeyLayout

QWEN_LEGACY = KeyLayout(
    name="qwen-legacy",
    title="Qwen2(.5)-VL on disk / transformers < 4.52 (visual.*, model.layers.*)",
    language="model.",
    lm_head="lm_head",
    projector="visual.merger",
    vision=("visual.",),
    vision_style="visual",
)
QWEN_MODERN = KeyLayout(
    name="qwen-modern",
    title="Qwen2(.5)-VL in transformers >= 4.52 / 5.x (model.visual.*, model.language_model.*)",
    language="model.language_model.",
    lm_head="lm_head",
    projector="model.visual.merger",
    vision=("model.visual.",),
    vision_style="visual",
    modern=True,
)

TOKENS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}

QWEN2_VL = Family(
    name="qwen2_vl",
    model_types=("qwen2_vl",),
    title="Qwen2-VL (Qwen2VLForConditionalGeneration)",
    token_rule="dynamic",
    image_token="<|image_pad|>",
    projector="visual.merger",
    layouts=(QWEN_LEGACY, QWEN_MODERN),
    modern_since=(4, 52),
    tokens=TOKENS,
    tokens_per_image_extra=2,  # <|vision_start|> ... <|vision_end|>
    vision_keys={"depth": "depth", "patch_size": "patch_size", "merge_size": "spatial_merge_size",
                 "temporal_patch_size": "temporal_patch_size", "out_width": "hidden_size",
                 "width": "embed_dim"},
    processor_keys={"patch_size": "patch_size", "merge_size": "merge_size",
                    "temporal_patch_size": "temporal_patch_size"},
    processor_defaults={"patch_size": 14, "merge_size": 2, "temporal_patch_size": 2,
                        "min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280},
    # Qwen2VLVideoProcessor: size {"shortest_edge": 128 * 28 * 28, "longest_edge": 28 * 28 * 768}
    video_processor_defaults={"patch_size": 14, "merge_size": 2, "temporal_patch_size": 2,
                              "min_pixels": 128 * 28 * 28, "max_pixels": 28 * 28 * 768},
    rope="mrope",
    rope_default_sections=(16, 24, 24),
    vision_modules=("qkv", "proj", "fc1", "fc2"),
    projector_modules=("mlp.0", "mlp.2"),
)

QWEN2_5_VL = replace(
    QWEN2_VL,
    name="qwen2_5_vl",
    model_types=("qwen2_5_vl",),
    title="Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration)",
    vision_keys={**QWEN2_VL.vision_keys, "out_width": "out_hidden_size", "width": "hidden_size"},
    vision_modules=("qkv", "proj", "gate_proj", "up_proj", "down_proj"),
)
