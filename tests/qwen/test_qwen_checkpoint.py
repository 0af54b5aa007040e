"""CKP on tiny real Qwen2-VL / Qwen2.5-VL folders in both key layouts: every planted failure of
the family is found (and shown to be real with the installed transformers), its clean twin is
clean, and the meta-build load prediction equals ``from_pretrained(output_loading_info=True)``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from doctor.testing import DELETE
from doctor.testing.qwen import QWEN_FAMILIES, make_qwen_model

from tests.helpers.qwen import codes, fails, forward_error, passes, run

pytestmark = pytest.mark.filterwarnings("ignore")

VARIANTS = [(f, lay) for f in QWEN_FAMILIES for lay in ("v4", "v5")]
NEW_CODES = ("CKP501", "CKP502", "CKP503", "CKP504", "CKP505", "CKP506")


def build(tmp: Path, name: str, family: str = "qwen2_5_vl", layout: str = "v4", **kw: Any):
    return make_qwen_model(tmp / name, family=family, layout=layout, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("family", "layout"), VARIANTS)
def test_clean_twins_are_clean(tmp_path: Path, family: str, layout: str) -> None:
    info = build(tmp_path, "clean", family, layout, processor_layout="split" if layout == "v4" else "native")
    report = run(info.path, "CKP")
    assert codes(report) == set(), [(f.code, f.message) for f in report.findings]
    for code in NEW_CODES + ("CKP104", "CKP105", "CKP106", "CKP403", "CKP406"):
        passes(report, code)
    assert forward_error(info) is None


# ---- the merger (Qwen's projector) ----------------------------------------------------------------


@pytest.mark.parametrize(("family", "layout"), VARIANTS)
def test_merger_missing_is_found_as_the_projector(tmp_path: Path, family: str, layout: str) -> None:
    import transformers

    prefix = "visual.merger" if layout == "v4" else "model.visual.merger"
    info = build(tmp_path, "nomerger", family, layout, drop_tensors=[prefix])
    found = fails(run(info.path, "CKP"), "CKP104", "the projector", "visual.merger.")
    assert len(found) == 1
    _, loading = transformers.AutoModelForImageTextToText.from_pretrained(info.path, output_loading_info=True)
    assert {k for k in loading["missing_keys"]} >= {"model.visual.merger.mlp.0.weight", "model.visual.merger.mlp.2.weight"}


def test_merger_width_mismatch(tmp_path: Path) -> None:
    for family in QWEN_FAMILIES:
        bad = build(tmp_path, f"wide-{family}", family, vision_out_hidden=32)
        key = "out_hidden_size" if family == "qwen2_5_vl" else "hidden_size"
        fails(run(bad.path, "CKP"), "CKP502", f"vision_config.{key} is 32", "hidden_size is 64")
        err = forward_error(bad)
        assert err is not None
    # the weights contradicting config.json are CKP106's (one finding per cause)
    edited = build(tmp_path, "edited", config_overrides={"vision_config.out_hidden_size": 32})
    report = run(edited.path, "CKP")
    fails(report, "CKP106", "merger")
    assert "CKP502" not in codes(report)


# ---- mrope ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["v4", "v5"])
def test_mrope_sections_against_head_dim(tmp_path: Path, layout: str) -> None:
    bad = build(tmp_path, "bad", layout=layout, mrope_section=[4, 4, 4])
    key = "rope_scaling.mrope_section" if layout == "v4" else "text_config.rope_parameters.mrope_section"
    found = fails(run(bad.path, "CKP"), "CKP501", "[4, 4, 4]", "head dim is 16", "needs 8")
    assert found[0].location.key == key
    assert "split_with_sizes" in (forward_error(bad) or "")
    # no mrope_section: the model falls back to [16, 24, 24], which only fits head dim 128
    gone = "rope_scaling.mrope_section" if layout == "v4" else "text_config.rope_parameters.mrope_section"
    missing = build(tmp_path, "missing", layout=layout, config_overrides={gone: DELETE})
    fails(run(missing.path, "CKP"), "CKP501", "[16, 24, 24]")
    assert "split_with_sizes" in (forward_error(missing) or "")
    # the clean twin: another head dim with matching sections
    twin = build(tmp_path, "twin", layout=layout, hidden=96, heads=4, mrope_section=[3, 4, 5])
    passes(run(twin.path, "CKP"), "CKP501")
    assert forward_error(twin) is None


# ---- token ids ------------------------------------------------------------------------------------


def test_token_ids_beyond_the_embedding(tmp_path: Path) -> None:
    video = build(tmp_path, "video", config_overrides={"video_token_id": 400})
    fails(run(video.path, "CKP"), "CKP505", "video_token_id is 400", "307 rows")
    start = build(tmp_path, "start", layout="v5", config_overrides={"vision_start_token_id": 999})
    fails(run(start.path, "CKP"), "CKP505", "vision_start_token_id is 999")
    image = build(tmp_path, "image", config_overrides={"image_token_id": 400})
    report = run(image.path, "CKP")
    fails(report, "CKP005", "image_token_id is 400")
    assert "CKP505" not in codes(report)  # the image token is CKP005's and CKP403's
    assert forward_error(image) is not None


def test_token_ids_against_the_tokenizer(tmp_path: Path) -> None:
    info = build(tmp_path, "swap", config_overrides={"video_token_id": 303, "vision_end_token_id": 301})
    found = fails(run(info.path, "CKP"), "CKP505", "'<|video_pad|>' is 301", "'<|vision_end|>' is 303")
    assert {f.location.key for f in found} == {"video_token_id", "vision_end_token_id"}
    wrong_image = build(tmp_path, "image", config_overrides={"image_token_id": 301})
    fails(run(wrong_image.path, "CKP"), "CKP403", "'<|image_pad|>' is 300")
    assert "Image features and image tokens do not match" in (forward_error(wrong_image) or "")


# ---- processor geometry and pixel limits ----------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "vision_key"), [
    ("merge_size", 1, "spatial_merge_size"), ("patch_size", 16, "patch_size"),
    ("temporal_patch_size", 1, "temporal_patch_size")])
@pytest.mark.parametrize("processor_layout", ["split", "native"])
def test_processor_geometry(tmp_path: Path, key: str, value: int, vision_key: str, processor_layout: str) -> None:
    info = build(tmp_path, "bad", processor_layout=processor_layout, processor_overrides={key: value})
    found = fails(run(info.path, "CKP"), "CKP503", f"{key} is {value}", f"vision_config.{vision_key} is")
    assert found[0].location.pointer.endswith(f"/{key}")
    assert forward_error(info) is not None


def test_processor_key_left_out_uses_the_class_default(tmp_path: Path) -> None:
    # a model merging 1x1 whose processor file has no merge_size: the processor merges 2x2 (default)
    info = build(tmp_path, "m1", spatial_merge_size=1, processor_overrides={"merge_size": DELETE})
    fails(run(info.path, "CKP"), "CKP503", "has no merge_size (the processor then uses 2)")
    assert "Image features and image tokens do not match" in (forward_error(info) or "")
    twin = build(tmp_path, "m1-twin", spatial_merge_size=1)
    passes(run(twin.path, "CKP"), "CKP503")
    assert forward_error(twin) is None


def test_pixel_limits(tmp_path: Path) -> None:
    reversed_ = build(tmp_path, "rev", min_pixels=28 * 28 * 100, max_pixels=28 * 28 * 4)
    fails(run(reversed_.path, "CKP"), "CKP504", "above max_pixels")
    tiny = build(tmp_path, "tiny", min_pixels=100, max_pixels=400)
    fails(run(tiny.path, "CKP"), "CKP504", "below one merged patch")
    # one image may take 1280 tokens; training length 512: truncation cuts the image tokens
    big = build(tmp_path, "big", max_pixels=28 * 28 * 1280, tokenizer_overrides={"model_max_length": 512})
    fails(run(big.path, "CKP"), "CKP504", "up to 1280 image tokens", "model_max_length 512")
    assert "image" in (_truncated_forward_error(big, (28 * 40, 28 * 32), 512) or "")
    twin = build(tmp_path, "twin", max_pixels=28 * 28 * 256, tokenizer_overrides={"model_max_length": 512})
    passes(run(twin.path, "CKP"), "CKP504")
    assert _truncated_forward_error(twin, (28 * 40, 28 * 32), 512) is None


def _truncated_forward_error(info: Any, shape: tuple[int, int], max_length: int) -> str | None:
    import torch
    import transformers

    from doctor.testing.images import pil_image
    from doctor.testing.qwen import processor

    proc = processor(info)
    text = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
                                    tokenize=False, add_generation_prompt=True)
    model = transformers.AutoModelForImageTextToText.from_pretrained(info.path)
    try:
        inputs = proc(images=pil_image((shape[1], shape[0]), 0, "blank"), text=text, truncation=True,
                      max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            model(**inputs)
    except Exception as e:  # noqa: BLE001
        return str(e)
    return None


def test_processor_files_and_chat_template_missing(tmp_path: Path) -> None:
    info = build(tmp_path, "bare", processor_layout=None, tokenizer_overrides={"chat_template": DELETE})
    report = run(info.path, "CKP")
    fails(report, "CKP406")
    fails(report, "CKP404")
    assert not {"CKP503", "CKP504"} & codes(report)


# ---- the load prediction against from_pretrained ---------------------------------------------------


def _edit_weights(info: Any, edit: Any) -> None:
    from doctor.testing import weights as _weights

    _weights.rewrite_weights(info.path, edit)


@pytest.mark.parametrize(("family", "layout"), VARIANTS)
@pytest.mark.parametrize("plant", ["clean", "drop-merger", "drop-layer", "extra", "shards"])
def test_prediction_equals_from_pretrained(tmp_path: Path, family: str, layout: str, plant: str) -> None:
    import transformers

    from doctor.checks.checkpoint.expected import predict_load
    from doctor.checks.checkpoint.fixtures import read_model_weights

    info = build(tmp_path, "m", family, layout, shard_size="40KB" if plant == "shards" else None)
    v5 = layout == "v5"
    if plant == "drop-merger":
        _edit_weights(info, lambda s: {k: v for k, v in s.items() if ".merger.mlp.2." not in k})
    elif plant == "drop-layer":
        _edit_weights(info, lambda s: {k: v for k, v in s.items() if ".layers.1.mlp." not in k})
    elif plant == "extra":
        import torch

        name = "model.visual.extra_head.weight" if v5 else "visual.extra_head.weight"
        _edit_weights(info, lambda s: {**s, name: torch.zeros(2, 2)})
    pred = predict_load(info.path, read_model_weights(info.path))
    _, loading = transformers.AutoModelForImageTextToText.from_pretrained(info.path, output_loading_info=True)
    assert sorted(pred.missing) == sorted(loading["missing_keys"])
    assert pred.unexpected_as_loaded == sorted(loading["unexpected_keys"])
    assert [m[1] for m in pred.mismatched] == sorted(k for k, *_ in loading["mismatched_keys"])
    if plant == "clean" or plant == "shards":
        assert not pred.missing and not pred.unexpected
    if plant == "drop-merger":
        assert pred.missing and all("merger.mlp.2" in k for k in pred.missing)


# A text-only Qwen2.5-Instruct-style ChatML template: list content is printed as text
TEXT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}{{ '\\n' }}{{ message['content'] }}"
                 "<|im_end|>{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}"
                 "{% endif %}")


def test_chat_template_that_drops_images(tmp_path: Path) -> None:
    from doctor.testing.images import pil_image
    from doctor.testing.qwen import processor

    info = build(tmp_path, "text-template", tokenizer_overrides={"chat_template": TEXT_TEMPLATE})
    (info.path / "chat_template.json").write_text(json.dumps({"chat_template": TEXT_TEMPLATE}))
    found = fails(run(info.path, "CKP"), "CKP506", "writes no <|image_pad|>")
    assert found[0].path.endswith("chat_template.json")
    proc = processor(info)
    text = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
                                    tokenize=False, add_generation_prompt=True)
    assert "<|image_pad|>" not in text
    with pytest.raises(Exception, match="(?i)image"):  # the real failure: no placeholder for the image
        import torch
        import transformers

        inputs = proc(images=pil_image((84, 56), 0, "blank"), text=text, return_tensors="pt")
        with torch.no_grad():
            transformers.AutoModelForImageTextToText.from_pretrained(info.path)(**inputs)
    passes(run(build(tmp_path, "twin").path, "CKP"), "CKP506")
