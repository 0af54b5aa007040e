"""mllama (Llama 3.2 Vision): a tiled vision encoder feeding cross-attention layers; one
``<|image|>`` token per image. Key layouts: ``doctor.layouts``' generic ones (vision style
``model``: ``vision_model.*``)."""

from __future__ import annotations

from doctor.families.spec import Family

MLLAMA = Family(
    name="mllama",
    model_types=("mllama",),
    title="Llama 3.2 Vision (MllamaForConditionalGeneration)",
    token_rule="one",
    image_token="<|image|>",
    projector="multi_modal_projector",
    tokens={"image_token_id": "<|image|>"},
    vision_keys={"depth": "num_hidden_layers", "patch_size": "patch_size", "image_size": "image_size",
                 "out_width": "vision_output_dim"},
    vision_modules=("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"),
)
