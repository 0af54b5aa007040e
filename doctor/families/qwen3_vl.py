"""Qwen3-VL (transformers' ``qwen3_vl``, ``Qwen3VLForConditionalGeneration``).

Read in transformers 5.25 (``configuration_qwen3_vl.py``, ``modeling_qwen3_vl.py``,
``processing_qwen3_vl.py``, ``video_processing_qwen3_vl.py``, and ``image_processing_auto.py``,
which maps ``qwen3_vl`` to ``Qwen2VLImageProcessor`` / ``Qwen2VLImageProcessorPil``):

- one naming world: the hub checkpoints (released with 4.57) and what 5.25 saves are the in-memory
  names ``model.visual.*``, ``model.language_model.*``, ``lm_head``; transformers has no key
  conversion for ``qwen3_vl`` (Qwen2-VL's ``visual.*`` / ``model.layers.*`` load as missing), so
  the table has the modern row only (shared with Qwen2(.5)-VL: the same prefixes);
- the vision encoder ``model.visual`` (``patch_embed.proj``, ``pos_embed``,
  ``blocks.N.attn.qkv`` / ``attn.proj``, ``blocks.N.mlp.linear_fc1`` / ``linear_fc2``), its
  projector ``model.visual.merger`` (``norm``, ``linear_fc1``, ``linear_fc2`` to
  ``vision_config.out_hidden_size``), and DeepStack's ``model.visual.deepstack_merger_list.N``
  (one merger per ``deepstack_visual_indexes`` entry, same leaves, added to the first text
  layers' hidden states; classified with the vision encoder here);
- the image processor is Qwen2-VL's: ``smart_resize`` to multiples of ``patch_size *
  merge_size`` (16 * 2 = 32 with the hub's ``preprocessor_config.json``; the class default stays
  14) between ``size.shortest_edge`` and ``size.longest_edge`` (``min_pixels`` / ``max_pixels``
  keys win), ``(h' / 32) * (w' / 32)`` ``<|image_pad|>`` tokens wrapped in ``<|vision_start|>``
  ... ``<|vision_end|>`` by the chat template: the ``"dynamic"`` rule with the factor read from
  the processor settings;
- videos differ from Qwen2-VL: ``Qwen3VLProcessor.replace_video_token`` writes, per temporal
  grid, a ``<{t:.1f} seconds>`` text timestamp plus its own ``<|vision_start|>`` /
  ``<|vision_end|>`` pair around the grid's ``<|video_pad|>`` tokens; the timestamp's token
  count depends on the tokenizer and the frame times, so the DAT budget does not count them
  (``video_tokens_not_counted``);
- the text rotary embedding is interleaved (``Qwen3VLTextRotaryEmbedding.recomposition_frequencies``):
  it reads ``mrope_section[1]`` and ``[2]`` as strided slices and never splits by the sum, so
  sections that do not add up to ``head_dim / 2`` neither raise nor change a Qwen2-VL-style
  split: ``rope`` is None (CKP501 does not apply; measured in tests/qwen3vl).
"""

from __future__ import annotations

from doctor.families.qwen2_vl import QWEN_MODERN, TOKENS
from doctor.families.spec import Family

QWEN3_VL = Family(
    name="qwen3_vl",
    model_types=("qwen3_vl",),
    title="Qwen3-VL (Qwen3VLForConditionalGeneration)",
    token_rule="dynamic",
    image_token="<|image_pad|>",
    projector="visual.merger",
    layouts=(QWEN_MODERN,),
    modern_since=(4, 57),
    tokens=TOKENS,
    tokens_per_image_extra=2,  # <|vision_start|> ... <|vision_end|>
    vision_keys={"depth": "depth", "patch_size": "patch_size", "merge_size": "spatial_merge_size",
                 "temporal_patch_size": "temporal_patch_size", "out_width": "out_hidden_size",
                 "width": "hidden_size"},
    processor_keys={"patch_size": "patch_size", "merge_size": "merge_size",
                    "temporal_patch_size": "temporal_patch_size"},
    # Qwen2VLImageProcessor's class defaults (the hub files override patch_size 16 and size)
    processor_defaults={"patch_size": 14, "merge_size": 2, "temporal_patch_size": 2,
                        "min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280},
    # Qwen3VLVideoProcessor: size {"shortest_edge": 128 * 32 * 32, "longest_edge": 32 * 32 * 768}, patch 16
    video_processor_defaults={"patch_size": 16, "merge_size": 2, "temporal_patch_size": 2,
                              "min_pixels": 128 * 32 * 32, "max_pixels": 32 * 32 * 768},
    video_tokens_not_counted=("Qwen3-VL's processor writes a \"<t seconds>\" text timestamp and a "
                              "<|vision_start|> / <|vision_end|> pair per frame group"),
    rope=None,
    vision_modules=("qkv", "proj", "linear_fc1", "linear_fc2"),
    projector_modules=("linear_fc1", "linear_fc2"),
)
