"""doctor.layouts: classify, split and map names between the LLaVA key layouts.

The expected names are the ones transformers 5.24 really produces (module names of a tiny
LlavaForConditionalGeneration / MllamaForConditionalGeneration and what save_pretrained writes),
checked live in ``test_layouts_agree_with_transformers``."""

from __future__ import annotations

import pytest

from doctor import layouts as L

MODERN = [
    "model.language_model.layers.0.self_attn.q_proj",
    "model.vision_tower.encoder.layers.0.self_attn.q_proj",
    "model.multi_modal_projector.linear_1",
    "lm_head",
]
LEGACY = [
    "language_model.model.layers.0.self_attn.q_proj",
    "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj",
    "multi_modal_projector.linear_1",
    "language_model.lm_head",
]
ORIGINAL = [
    "model.layers.0.self_attn.q_proj",
    "model.vision_tower.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj",
    "model.mm_projector.0",
    "lm_head",
]


@pytest.mark.parametrize(("names", "layout"), [(MODERN, L.HF_MODERN), (LEGACY, L.HF_LEGACY), (ORIGINAL, L.ORIGINAL)])
def test_classify_and_parts(names, layout):
    guess = L.classify(names)
    assert guess.layout is layout
    assert not guess.mixed
    assert [L.part_of(n) for n in names] == ["language", "vision", "projector", "lm_head"]


def test_text_model_is_not_original():
    guess = L.classify(["model.layers.0.mlp.up_proj.weight", "model.embed_tokens.weight", "lm_head.weight"])
    assert guess.layout is L.TEXT
    assert guess.parts["language"] == 2 and guess.parts["lm_head"] == 1


def test_mixed_layouts_are_reported():
    guess = L.classify([MODERN[0], LEGACY[0], LEGACY[1]])
    assert guess.mixed and guess.layout is L.HF_LEGACY


@pytest.mark.parametrize(("src", "dst", "layout"), [
    (MODERN, LEGACY, L.HF_LEGACY), (LEGACY, MODERN, L.HF_MODERN), (ORIGINAL, MODERN, L.HF_MODERN),
    (MODERN, ORIGINAL, L.ORIGINAL), (ORIGINAL, LEGACY, L.HF_LEGACY),
])
def test_map_between_layouts(src, dst, layout):
    assert [L.map_name(n, layout) for n in src] == dst


def test_peft_keys_keep_their_prefix_and_module():
    key = "base_model.model.model.language_model.layers.3.mlp.down_proj.lora_B.weight"
    assert L.adapter_module_name(key) == "model.language_model.layers.3.mlp.down_proj"
    assert L.map_name(key, L.HF_LEGACY) == "base_model.model.language_model.model.layers.3.mlp.down_proj.lora_B.weight"
    assert L.adapter_module_name("base_model.model.lm_head.weight") == "lm_head"
    assert L.adapter_module_name("base_model.model.model.layers.0.q_proj.lora_A.default.weight") == "model.layers.0.q_proj"


def test_mllama_vision_model_and_unknown_names():
    assert L.map_name("vision_model.transformer.layers.0.self_attn.q_proj", L.HF_MODERN) == (
        "model.vision_model.transformer.layers.0.self_attn.q_proj")
    assert L.vision_style(["vision_model.transformer.layers.0.mlp.fc1"]) == "model"
    assert L.part_of("transformer.h.0.attn.c_attn") == "other"
    assert L.map_name("transformer.h.0.attn.c_attn", L.HF_MODERN) is None
    assert L.map_name("model.vision_tower.vision_tower.vision_model.x", L.TEXT) is None


def test_layouts_agree_with_transformers(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors import safe_open

    tc = dict(model_type="llama", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
              num_attention_heads=2, num_key_value_heads=2, vocab_size=64)
    vc = dict(model_type="clip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
              num_attention_heads=2, image_size=28, patch_size=14)
    with torch.device("meta"):
        model = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(text_config=tc, vision_config=vc))
    modules = [n for n, _ in model.named_modules() if n not in ("", "model")]  # containers
    guess = L.classify(modules)
    if transformers.__version__ >= "4.52":
        assert guess.layout is L.HF_MODERN
    assert guess.parts["other"] == 0
    # what save_pretrained writes maps onto the in-memory parameter names
    model = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(text_config=tc, vision_config=vc))
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        on_disk = list(f.keys())
    params = {n for n, _ in model.named_parameters()}
    mapped = {L.map_name(n, guess.layout, vision_prefix=guess.vision_prefix) for n in on_disk}
    assert mapped == params
