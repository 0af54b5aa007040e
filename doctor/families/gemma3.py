"""Gemma 3 (transformers' ``gemma3``, ``Gemma3ForConditionalGeneration``): a SigLIP tower, a
projector that pools and projects, and a Gemma 3 language model.

Read in transformers 5.25 (``modeling_gemma3.py``, ``processing_gemma3.py``,
``image_processing_pil_gemma3.py``, ``configuration_gemma3.py``, ``conversion_mapping.py``):

- modules: ``model.vision_tower`` (``SiglipVisionModel``: ``vision_model.encoder.layers.N.self_attn.
  q_proj/k_proj/v_proj/out_proj``, ``mlp.fc1/fc2``), ``model.multi_modal_projector`` (no Linear:
  ``mm_input_projection_weight`` is a bare ``nn.Parameter`` of vision width x text width, applied
  with ``torch.matmul`` after an ``AvgPool2d`` to ``mm_tokens_per_image`` tokens and the RMSNorm
  ``mm_soft_emb_norm``), ``model.language_model`` (``Gemma3TextModel``), ``lm_head`` tied to the
  embedding by default. transformers < 4.52 saved ``language_model.model.*``,
  ``language_model.lm_head``, ``vision_tower.*``, ``multi_modal_projector.*``: the conversion
  mapping treats ``gemma3`` as ``llava``, so the generic LLaVA key layouts cover both worlds
  (``layouts`` stays empty);
- config.json: ``mm_tokens_per_image`` (256), ``image_token_index`` (262144,
  ``<image_soft_token>``; ``image_token_id`` is its alias), ``boi_token_index`` (255999,
  ``<start_of_image>``), ``eoi_token_index`` (256000, ``<end_of_image>``), ``vision_config`` a
  ``siglip_vision_model`` (896 px, patch 14); the model reads only the image token id: it
  replaces ids >= the text ``vocab_size`` by 0 before the embedding lookup, and nothing in
  transformers reads ``boi_token_index`` / ``eoi_token_index`` (the processor takes both tokens
  from the tokenizer), so they are not listed in ``tokens``;
- the processor: the text placeholder is the tokenizer's ``boi_token`` (``<start_of_image>``,
  what the chat template writes for an image part); each one becomes
  ``"\\n\\n<start_of_image>" + "<image_soft_token>" * image_seq_length + "<end_of_image>\\n\\n"``
  (``image_seq_length`` from processor_config.json, default 256): the ``"fixed_wrapped"`` token
  rule, ``image_seq_length`` + 4 tokens with each ``"\\n\\n"`` one token (Gemma's vocabulary has
  newline runs as single pieces, so a newline next to the image may merge with them: one token
  less). Pan-and-scan cuts 2 or more crops from an image whose aspect ratio is at least 1.2
  (``pan_and_scan_crops`` replays ``Gemma3ImageProcessor.pan_and_scan``) and writes a full image
  sequence per crop after the original's, inside a sentence ("Here is the original image ... and
  here are some crops to help you see better"). It is on only when the processor is CALLED with
  ``do_pan_and_scan=True``: measured in 5.25, ``Gemma3Processor`` passes its own ``images_kwargs``
  (``do_pan_and_scan: False``) over the image processor's saved settings, so a saved
  ``"do_pan_and_scan": true`` changes nothing. The DAT budget does not count crops (it cannot see
  the training code's call) and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from doctor.families.spec import Family

IMAGE_SOFT_TOKEN = "<image_soft_token>"
BOI_TOKEN = "<start_of_image>"
EOI_TOKEN = "<end_of_image>"
DEFAULT_IMAGE_SEQ_LENGTH = 256
WRAP_TOKENS = 4  # "\n\n", <start_of_image>, <end_of_image>, "\n\n"

GEMMA3 = Family(
    name="gemma3",
    model_types=("gemma3",),
    title="Gemma 3 (Gemma3ForConditionalGeneration)",
    token_rule="fixed_wrapped",
    image_token=IMAGE_SOFT_TOKEN,
    projector="multi_modal_projector",
    tokens={"image_token_id": IMAGE_SOFT_TOKEN},  # config.json writes image_token_index (an alias)
    tokens_per_image_extra=WRAP_TOKENS,
    vision_keys={"depth": "num_hidden_layers", "patch_size": "patch_size", "image_size": "image_size",
                 "out_width": "hidden_size"},
    # Gemma3Processor.images_kwargs: what the processor uses when the saved file says null
    processor_defaults={"image_seq_length": DEFAULT_IMAGE_SEQ_LENGTH, "pan_and_scan_min_crop_size": 256,
                        "pan_and_scan_max_num_crops": 4},
    vision_modules=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    projector_modules=(),  # mm_input_projection_weight is a Parameter, not a Linear: LoRA cannot reach it
)

PAN_AND_SCAN_MIN_RATIO = 1.2  # Gemma3Processor.images_kwargs pan_and_scan_min_ratio_to_activate


@dataclass(frozen=True)
class PanAndScan:
    """The saved pan-and-scan settings (``Gemma3ImageProcessor``; a null in the file is the
    processor's default)."""

    min_crop_size: int = 256
    max_num_crops: int = 4
    min_ratio_to_activate: float = PAN_AND_SCAN_MIN_RATIO


def pan_and_scan_crops(width: int, height: int, pas: PanAndScan) -> int:
    """How many crops ``Gemma3ImageProcessor.pan_and_scan`` cuts from a ``width`` x ``height``
    image (0: none; the processor then writes one image sequence, else 1 + crops)."""
    if width <= 0 or height <= 0:
        return 0
    long, short = (width, height) if width >= height else (height, width)
    if long / short < pas.min_ratio_to_activate:
        return 0
    n = int(math.floor(long / short + 0.5))
    n = min(int(math.floor(long / pas.min_crop_size)), n)
    n = min(pas.max_num_crops, max(2, n))
    crop_long = int(math.ceil(long / n))
    if min(crop_long, short) < pas.min_crop_size:
        return 0
    return n
