"""The tiny Qwen2-VL / Qwen2.5-VL factory builds real, loadable folders in both key layouts."""

from __future__ import annotations

import json

import pytest

from doctor.testing.qwen import (
    IMAGE_PAD,
    QWEN_FAMILIES,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    image_processor,
    make_qwen_model,
    qwen_inputs,
)

pytestmark = pytest.mark.filterwarnings("ignore")


def _keys(info):
    from safetensors import safe_open

    with safe_open(str(info.path / info.weight_files[0]), "pt") as f:
        return set(f.keys())


@pytest.mark.parametrize("family", QWEN_FAMILIES)
@pytest.mark.parametrize("layout", ["v4", "v5"])
def test_loads_clean_and_runs(tmp_path, family, layout):
    import torch
    import transformers

    info = make_qwen_model(tmp_path, family=family, layout=layout,
                           processor_layout="split" if layout == "v4" else "native")
    keys = _keys(info)
    merger = "visual.merger." if layout == "v4" else "model.visual.merger."
    assert any(k.startswith(merger) for k in keys)
    if layout == "v4":
        assert "model.embed_tokens.weight" in keys and not any(k.startswith("model.language_model.") for k in keys)
    else:
        assert "model.language_model.embed_tokens.weight" in keys and not any(k.startswith("visual.") for k in keys)
    model, loading = transformers.AutoModelForImageTextToText.from_pretrained(info.path, output_loading_info=True)
    assert model.config.model_type == family
    assert not any(loading.values()), loading
    assert list(model.config.text_config.rope_parameters["mrope_section"]) == info.mrope_section
    assert sum(info.mrope_section) * 2 == info.head_dim
    inputs = qwen_inputs(info, (56, 84))
    assert int((inputs["input_ids"] == info.image_token_id).sum()) == 6  # (56/28) * (84/28)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == info.text_vocab_size and torch.isfinite(logits).all()


def test_tokenizer_has_qwen_specials(tmp_path):
    from transformers import AutoTokenizer

    info = make_qwen_model(tmp_path)
    tok = AutoTokenizer.from_pretrained(info.path)
    ids = tok.convert_tokens_to_ids([IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END])
    assert ids == [info.image_token_id, info.video_token_id, info.vision_start_token_id, info.vision_end_token_id]
    assert info.config["image_token_id"] == info.image_token_id
    assert info.config["vision_start_token_id"] == info.vision_start_token_id
    text = tok.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
                                   tokenize=False, add_generation_prompt=True)
    assert f"{VISION_START}{IMAGE_PAD}{VISION_END}hi<|im_end|>\n<|im_start|>assistant\n" in text
    assert tok("the cat").input_ids[0] != info.tokenizer.special_ids["<s>"]  # no BOS, as Qwen


def test_processor_files_carry_pixel_limits(tmp_path):
    info = make_qwen_model(tmp_path / "a", min_pixels=28 * 28 * 2, max_pixels=28 * 28 * 10)
    saved = json.loads((info.path / "preprocessor_config.json").read_text())
    assert (saved["min_pixels"], saved["max_pixels"], saved["patch_size"], saved["merge_size"],
            saved["temporal_patch_size"]) == (28 * 28 * 2, 28 * 28 * 10, 14, 2, 2)
    ip = image_processor(info)
    assert (ip.size["shortest_edge"], ip.size["longest_edge"]) == (28 * 28 * 2, 28 * 28 * 10)
    assert info.num_image_tokens(1000, 1000) <= 10
    native = make_qwen_model(tmp_path / "b", processor_layout="native")
    assert json.loads((native.path / "processor_config.json").read_text())["image_processor"]["max_pixels"]
