"""llava and llava_next: CLIP/SigLIP tower + ``multi_modal_projector`` + a Llama-style LM. Their
key layouts are ``doctor.layouts``' generic ORIGINAL / HF_LEGACY / HF_MODERN (shared by every
LLaVA-like model type), so the tables declare none of their own."""

from __future__ import annotations

from doctor.families.spec import Family

_CLIP_LINEAR = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

LLAVA = Family(
    name="llava",
    model_types=("llava", "vipllava"),
    title="LLaVA-1.5 (transformers' LlavaForConditionalGeneration)",
    token_rule="fixed",
    image_token="<image>",
    projector="multi_modal_projector",
    tokens={"image_token_id": "<image>"},
    vision_keys={"depth": "num_hidden_layers", "patch_size": "patch_size", "image_size": "image_size",
                 "out_width": "hidden_size"},
    processor_keys={"patch_size": "patch_size"},
    vision_modules=_CLIP_LINEAR,
    projector_modules=("linear_1", "linear_2"),
)

LLAVA_NEXT = Family(
    name="llava_next",
    model_types=("llava_next",),  # llava_next_video / llava_onevision tile differently: no table yet
    title="LLaVA-NeXT (anyres tiling, image_grid_pinpoints)",
    token_rule="anyres",
    image_token="<image>",
    projector="multi_modal_projector",
    tokens={"image_token_id": "<image>"},
    vision_keys=LLAVA.vision_keys,
    processor_keys={"patch_size": "patch_size"},
    vision_modules=_CLIP_LINEAR,
    projector_modules=("linear_1", "linear_2"),
)
