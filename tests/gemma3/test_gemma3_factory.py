"""The tiny Gemma 3 builder writes what the family table describes: config keys by id equal to the
tokenizer's, a valid ``layer_types``, a processor whose expansion of ``<start_of_image>`` is
``\\n\\n<start_of_image>`` + ``image_seq_length`` ``<image_soft_token>`` + ``<end_of_image>\\n\\n``."""

from __future__ import annotations

import json

import pytest

from doctor.families import family_of
from doctor.testing.gemma3 import BOI_TOKEN, EOI_TOKEN, IMAGE_SOFT_TOKEN, make_gemma3_model, processor

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.mark.parametrize("layers", [1, 3])
def test_config_and_tokenizer_agree(tmp_path, layers):
    info = make_gemma3_model(tmp_path / "m", text_layers=layers)
    config = json.loads((info.path / "config.json").read_text())
    assert config["model_type"] == "gemma3" and family_of("gemma3").name == "gemma3"
    ids = info.tokenizer.special_ids
    assert config["image_token_index"] == ids[IMAGE_SOFT_TOKEN] == info.image_token_id
    assert config["boi_token_index"] == ids[BOI_TOKEN] and config["eoi_token_index"] == ids[EOI_TOKEN]
    assert config["mm_tokens_per_image"] == 4 and config["vision_config"]["model_type"] == "siglip_vision_model"
    types = config["text_config"]["layer_types"]
    assert len(types) == layers and types[-1] == "full_attention"
    tokenizer_config = json.loads((info.path / "tokenizer_config.json").read_text())
    assert tokenizer_config["extra_special_tokens"] == {
        "boi_token": BOI_TOKEN, "eoi_token": EOI_TOKEN, "image_token": IMAGE_SOFT_TOKEN}


def test_processor_expands_the_begin_of_image_placeholder(tmp_path):
    from doctor.testing.images import pil_image

    info = make_gemma3_model(tmp_path / "m", image_size=84, mm_tokens_per_image=9)
    proc = processor(info)
    assert proc.image_token == BOI_TOKEN and proc.tokenizer.image_token == IMAGE_SOFT_TOKEN
    out = proc(images=pil_image((84, 56), 0, "blank"), text=f"Look.{BOI_TOKEN}What", add_special_tokens=False,
               return_tensors="pt")
    text = proc.tokenizer.decode(out["input_ids"][0])
    assert text == f"Look.\n\n{BOI_TOKEN}{IMAGE_SOFT_TOKEN * 9}{EOI_TOKEN}\n\nWhat"
    assert out["pixel_values"].shape[-2:] == (84, 84)
