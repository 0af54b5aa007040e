"""Converting original-LLaVA checkpoints to transformers' llava: the converted model computes
what the original layout computes, by hand, on the same weights."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402

from doctor.fixers.convert import convert  # noqa: E402

from doctor.errors import ArtifactError, UsageError  # noqa: E402
from doctor.testing.original import make_llava_original_model  # noqa: E402

from tests.helpers.convert import IMAGE_TOKEN_INDEX, hf_forward, original_forward, read_state  # noqa: E402


def compare_with_original(src_info: Any, out: Path, tower: Path) -> None:
    state = read_state(src_info.path)
    config = json.loads((src_info.path / "config.json").read_text())
    ids = [1, 40, 41, 42, IMAGE_TOKEN_INDEX, 50, 51, 60, 70]
    size = json.loads((tower / "config.json").read_text())["image_size"]
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    expected = original_forward(state, config, tower, ids, pixels)
    got, info = hf_forward(out, ids, pixels)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    vocab = expected.shape[-1]
    assert got.shape[-1] >= vocab + 1  # grown for <image> (and <pad>)
    torch.testing.assert_close(got[..., :vocab], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model_type, with_tower, weights", [
    ("llava_llama", True, "safetensors"),
    ("llava", False, "bin"),  # the v1.5 release's name collision; tower from --vision-tower
    ("llava_mistral", True, "safetensors"),
])
def test_converted_logits_equal_the_original_forward(tmp_path, model_type, with_tower, weights):
    src = make_llava_original_model(tmp_path, model_type=model_type, include_vision_tower=with_tower,
                                    weights=weights, shard_size="40KB" if weights == "bin" else None, seed=3)
    out = tmp_path / "hf"
    result = convert(src.path, out, vision_tower=None if with_tower else src.vision_tower_dir, dtype="fp32")
    assert not result.errors, [f.message for f in result.errors]
    compare_with_original(src, out, src.vision_tower_dir)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "llava" and cfg["text_config"]["model_type"] == model_type.replace(
        "llava_", "").replace("llava", "llama")
    assert cfg["vision_feature_layer"] == -2 and cfg["vision_feature_select_strategy"] == "default"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("conv")
    src = make_llava_original_model(root, seed=5)
    out = root / "hf"
    result = convert(src.path, out)
    return src, out, result


def test_tokenizer_config_and_embeddings_agree(converted):
    from transformers import AutoConfig, AutoTokenizer

    src, out, result = converted
    tok = AutoTokenizer.from_pretrained(str(out))
    cfg = AutoConfig.from_pretrained(str(out))
    assert tok.convert_tokens_to_ids("<image>") == cfg.image_token_id
    assert tok.pad_token == "<pad>" and cfg.pad_token_id == tok.pad_token_id
    old = read_state(src.path)
    new = read_state(out)
    embed, head = new["language_model.model.embed_tokens.weight"], new["language_model.lm_head.weight"]
    rows = old["model.embed_tokens.weight"].shape[0]
    assert embed.shape[0] % 64 == 0 and embed.shape[0] >= len(tok) and head.shape == embed.shape
    assert cfg.text_config.vocab_size == embed.shape[0]
    assert torch.equal(embed[:rows], old["model.embed_tokens.weight"])
    assert torch.equal(head[:rows], old["lm_head.weight"])
    # the converter's mean initialisation: new rows sit at the mean of the old ones, not at random
    mean = old["model.embed_tokens.weight"].float().mean(0)
    spread = (old["model.embed_tokens.weight"].float() - mean).norm(dim=1).mean()
    assert (embed[rows:].float() - mean).norm(dim=1).max() < 0.1 * spread
    assert result.dtype == "float16" and embed.dtype == torch.float16  # auto: the config's torch_dtype


def test_processor_is_slow_and_expands_the_image_token(converted):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from doctor.testing.images import pil_image

    src, out, _ = converted
    processor = AutoProcessor.from_pretrained(str(out))
    assert type(processor.image_processor).__name__.endswith("Pil")  # no torchvision needed
    assert processor.image_processor.do_pad  # image_aspect_ratio: pad (LLaVA's expand2square)
    inputs = processor(images=pil_image((40, 20)), text="USER: <image>\nwhat is this? ASSISTANT:", return_tensors="pt")
    model = AutoModelForImageTextToText.from_pretrained(str(out), dtype=torch.float32)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == model.config.image_seq_length
    with torch.no_grad():
        model(**{k: (v.float() if v.is_floating_point() else v) for k, v in inputs.items()})


def test_anyres_checkpoint_becomes_llava_next(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from doctor.testing.images import pil_image

    src = make_llava_original_model(tmp_path, seed=7, dtype="float32")
    cfg_path = src.path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    size = cfg_path.parent.joinpath("..", "clip-vit-tiny", "config.json").resolve()
    side = json.loads(size.read_text())["image_size"]
    cfg.update(image_aspect_ratio="anyres", mm_patch_merge_type="spatial_unpad",
               image_grid_pinpoints=[[side, side], [side, 2 * side], [2 * side, side]])
    cfg_path.write_text(json.dumps(cfg))
    weights = src.path / "model.safetensors"
    state = load_file(str(weights))
    newline = torch.randn(cfg["hidden_size"], generator=torch.Generator().manual_seed(1))
    state["model.image_newline"] = newline
    save_file(state, str(weights), metadata={"format": "pt"})
    out = tmp_path / "next"
    convert(src.path, out)
    model, info = AutoModelForImageTextToText.from_pretrained(str(out), output_loading_info=True, dtype=torch.float32)
    assert type(model).__name__ == "LlavaNextForConditionalGeneration"
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert torch.equal(read_state(out)["image_newline"], newline)
    processor = AutoProcessor.from_pretrained(str(out))
    assert processor.image_processor.image_grid_pinpoints == cfg["image_grid_pinpoints"]
    for shape in ((2 * side, side), (side, 2 * side)):  # portrait, landscape
        inputs = processor(images=pil_image(shape[::-1]), text="USER: <image>\nhi ASSISTANT:", return_tensors="pt")
        with torch.no_grad():
            model(**inputs)


def test_vision_tower_from_a_local_clip_folder_equals_it(tmp_path):
    src = make_llava_original_model(tmp_path, include_vision_tower=False, seed=9)
    out = tmp_path / "hf"
    convert(src.path, out, vision_tower=src.vision_tower_dir, dtype="fp32")
    tower = {re.sub(r"^vision_model\.", "", k): v for k, v in read_state(src.vision_tower_dir).items()}
    new = read_state(out)
    assert tower and all(torch.equal(new["vision_tower.vision_model." + k], v.float()) for k, v in tower.items())


def test_refusals_name_the_reason(tmp_path):
    linear = make_llava_original_model(tmp_path / "lin", projector_type="linear")
    with pytest.raises(UsageError, match="mlp2x_gelu"):
        convert(linear.path, tmp_path / "o1")
    no_tower = make_llava_original_model(tmp_path / "nt", include_vision_tower=False)
    cfg = json.loads((no_tower.path / "config.json").read_text())
    cfg["mm_vision_tower"] = "openai/clip-vit-large-patch14-336"  # a hub id: never downloaded
    (no_tower.path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UsageError, match="--vision-tower"):
        convert(no_tower.path, tmp_path / "o2")
    mpt = make_llava_original_model(tmp_path / "mpt")
    cfg = json.loads((mpt.path / "config.json").read_text())
    cfg["model_type"], cfg["architectures"] = "llava_mpt", ["LlavaMptForCausalLM"]
    (mpt.path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UsageError, match="llava_mpt"):
        convert(mpt.path, tmp_path / "o3")
    noproj = make_llava_original_model(tmp_path / "np")
    state = load_file(str(noproj.path / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "mm_projector" not in k}, str(noproj.path / "model.safetensors"))
    with pytest.raises(ArtifactError, match="projector"):
        convert(noproj.path, tmp_path / "o4")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))


def test_cli_convert_and_fixer(converted, tmp_path, capsys):
    from doctor.fixers import convert as convert_fixer

    from doctor.artifacts import classify
    from doctor.cli import main
    from doctor.runner import Options

    src, _, _ = converted
    assert main(["convert", str(src.path), "-o", str(tmp_path / "a"), "--no-progress", "--dtype", "bf16"]) == 0
    text = capsys.readouterr().out
    assert "converted" in text and "Checkpoint doctor on" in text
    assert main(["convert", str(tmp_path / "missing"), "-o", str(tmp_path / "b")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    art = classify(src.path)
    assert "llava-original" in art.kinds
    outcome = convert_fixer.apply(art, [], Options(extra={"convert_out": str(tmp_path / "c")}))
    assert outcome.error is None and (tmp_path / "c" / "config.json").exists()
