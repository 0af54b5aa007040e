"""Helpers of the convert and merge tests: a checkpoint's tensors, and the forward passes of a
transformers llava model and of a hand-written original-LLaVA model on the same inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

IMAGE_TOKEN_INDEX = -200  # LLaVA's sentinel for the image position (never in the vocabulary)


def read_state(folder: Path) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(f)))
    for f in sorted(folder.glob("pytorch_model*.bin")):
        state.update(torch.load(f, weights_only=True))
    return state


def original_forward(state: dict[str, Any], config: dict[str, Any], tower: Path, ids: list[int],
                     pixel_values: Any) -> Any:
    """LLaVA's forward written out (llava_arch.py): CLIP hidden states at mm_vision_select_layer,
    patch tokens only for "patch", the mlp2x_gelu projector, the features spliced in place of
    the IMAGE_TOKEN_INDEX token, then the LLM on the embeddings."""
    from transformers import AutoConfig, AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel

    text_type = "mistral" if "Mistral" in " ".join(config["architectures"]) else "llama"
    keep = {k: v for k, v in config.items() if not k.startswith("mm_") and k not in ("model_type", "architectures")}
    llm = AutoModelForCausalLM.from_config(AutoConfig.for_model(text_type, **keep)).float().eval()
    llm.load_state_dict({k: v.float() for k, v in state.items()
                         if k == "lm_head.weight" or (k.startswith("model.") and "mm_projector" not in k
                                                      and "vision_tower" not in k)}, strict=True)
    vision_cfg = json.loads((tower / "config.json").read_text())
    clip = CLIPVisionModel(CLIPVisionConfig(**{k: v for k, v in vision_cfg.items() if k != "architectures"}))
    prefix = "model.vision_tower.vision_tower.vision_model."
    vision = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} or \
        {re.sub(r"^vision_model\.", "", k): v for k, v in read_state(tower).items()}
    wants_prefix = next(iter(clip.state_dict())).startswith("vision_model.")
    clip.load_state_dict({("vision_model." + k if wants_prefix else k): v.float() for k, v in vision.items()},
                         strict=False)
    clip.float().eval()
    with torch.no_grad():
        feats = clip(pixel_values.float(), output_hidden_states=True).hidden_states[config["mm_vision_select_layer"]]
        if config["mm_vision_select_feature"] == "patch":
            feats = feats[:, 1:]
        w1, b1 = state["model.mm_projector.0.weight"].float(), state["model.mm_projector.0.bias"].float()
        w2, b2 = state["model.mm_projector.2.weight"].float(), state["model.mm_projector.2.bias"].float()
        image = torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(feats, w1, b1)), w2, b2)
        k = ids.index(IMAGE_TOKEN_INDEX)
        embed = llm.get_input_embeddings()
        embeds = torch.cat([embed(torch.tensor(ids[:k])), image[0], embed(torch.tensor(ids[k + 1:]))])
        return llm(inputs_embeds=embeds[None]).logits


def hf_forward(out: Path, ids: list[int], pixel_values: Any) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForImageTextToText

    cfg = AutoConfig.from_pretrained(str(out))
    n = cfg.image_seq_length
    k = ids.index(IMAGE_TOKEN_INDEX)
    hf_ids = ids[:k] + [cfg.image_token_id] * n + ids[k + 1:]
    model, info = AutoModelForImageTextToText.from_pretrained(str(out), output_loading_info=True,
                                                             dtype=torch.float32)
    with torch.no_grad():
        got = model.eval()(input_ids=torch.tensor([hf_ids]), pixel_values=pixel_values.float()).logits
    return got, info

