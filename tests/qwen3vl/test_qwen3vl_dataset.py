"""DAT on Qwen3-VL: the image token count of the "dynamic" rule, with the factor (patch 16 x merge 2
= 32) read from the saved processor, EQUALS the real processor's count (Qwen3VLProcessor over the
PIL image processor ``qwen3_vl`` maps to: no torchvision); records over --max-length are found;
videos are not counted, with the reason, because Qwen3-VL's placeholder is not Qwen2-VL's."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doctor.checks.dataset.vision import vision_spec

import doctor
from doctor.testing import make_image
from doctor.testing.qwen3_vl import count_image_tokens, image_processor, make_qwen3_vl_model, processor

pytestmark = pytest.mark.filterwarnings("ignore")

# (width, height): square, portrait, landscape, off-grid, tiny, extreme aspect ratios, large
SIZES = [(64, 64), (96, 64), (64, 96), (65, 33), (1, 1), (3, 5), (10, 500), (500, 10), (1999, 11), (13, 90),
         (300, 400), (1000, 999), (640, 480), (32, 2000)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen3_dat")
    return {
        "hub": make_qwen3_vl_model(root / "hub"),
        "native": make_qwen3_vl_model(root / "native", config_form="v5", processor_layout="native",
                                      min_pixels=32 * 32 * 4, max_pixels=32 * 32 * 40),
        # min_pixels / max_pixels keys win over size (Qwen2VLImageProcessor.__init__)
        "keys": make_qwen3_vl_model(root / "keys", processor_overrides={"min_pixels": 32 * 32 * 2,
                                                                        "max_pixels": 32 * 32 * 20}),
    }


def test_the_family_rule_not_the_fixed_fallback(models):
    spec = vision_spec(str(models["hub"].path))
    assert spec.family == "qwen3_vl" and spec.dynamic is not None and spec.extra == 2
    assert spec.dynamic.factor == 32 and spec.dynamic.sources["patch_size"] == "patch_size"
    assert spec.dynamic.sources["max_pixels"] == "size.longest_edge"
    assert "(h'/32) x (w'/32)" in spec.description
    keys = vision_spec(str(models["keys"].path)).dynamic
    assert (keys.min_pixels, keys.max_pixels, keys.sources["max_pixels"]) == (32 * 32 * 2, 32 * 32 * 20, "max_pixels")


@pytest.mark.parametrize("name", ["hub", "native", "keys"])
def test_image_tokens_equal_the_processors_count(models, name):
    info = models[name]
    spec = vision_spec(str(info.path))
    for w, h in SIZES:
        assert spec.tokens(w, h) - spec.extra == count_image_tokens(info, h, w), (name, w, h)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(w=st.integers(1, 5000), h=st.integers(1, 5000))
def test_image_tokens_equal_get_number_of_image_patches(models, w, h):
    from doctor.families.resize import AspectRatioError

    for info in models.values():
        spec = vision_spec(str(info.path))
        proc = image_processor(info)
        try:
            want = proc.get_number_of_image_patches(h, w) // (info.merge_size ** 2)
        except ValueError:  # the processor refuses aspect ratios over 200
            with pytest.raises(AspectRatioError):
                spec.dynamic.image_tokens(w, h)
            continue
        assert spec.tokens(w, h) - spec.extra == want
        assert spec.tokens(w, h) <= spec.tokens()  # the unknown-size count bounds every image


def _records(images: list[tuple[str, int, int]], root: Path) -> list[dict]:
    recs = []
    for name, w, h in images:
        make_image(root / name, size=(w, h))
        recs.append({"messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is in this image"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a cat on the street"}]}],
            "images": [name]})
    return recs


def test_records_over_max_length_found(models, tmp_path):
    from PIL import Image

    info = models["hub"]
    sizes = [("small.png", 64, 64), ("large.png", 1000, 1000), ("wide.png", 960, 64), ("thin.png", 1999, 11)]
    recs = _records(sizes, tmp_path)
    data = tmp_path / "d.json"
    data.write_text(json.dumps(recs))
    proc = processor(info)
    real = []
    for rec in recs:
        text = proc.apply_chat_template(rec["messages"], tokenize=False)
        images = [Image.open(tmp_path / name).convert("RGB") for name in rec["images"]]
        real.append(len(proc(images=images, text=text)["input_ids"][0]))
    assert len(set(real)) > 2
    for limit in sorted(set(real))[:-1]:
        report = doctor.check(str(data), select=["DAT3", "DAT903"], model=str(info.path), max_length=limit)
        over = {f.location.record for f in report.findings if f.code.startswith("DAT30")}
        assert over == {i for i, n in enumerate(real) if n > limit}, (limit, real, [f.message for f in report.findings])
    (summary,) = [f for f in report.findings if f.code == "DAT903"]
    assert "qwen3_vl" in summary.message
    clean = doctor.check(str(data), select=["DAT3"], model=str(info.path), max_length=max(real))
    assert not [f for f in clean.findings if f.code.startswith("DAT30")]


def test_qwen3_video_placeholder_is_not_qwen2_vls_rule(models):
    """The real Qwen3VLProcessor writes a text timestamp and a vision start / end pair per frame
    group: more tokens than Qwen2-VL's ``t * h * w / merge^2 + 2`` for the same grid, and a number
    that depends on the frame times. So the family's videos are not counted."""
    import torch

    info = models["hub"]
    proc = processor(info)
    proc.video_processor = SimpleNamespace(merge_size=2, temporal_patch_size=2)  # what replace_video_token reads
    grid = torch.tensor([[3, 4, 6]])  # 3 frame groups of 4 x 6 patches
    text = proc.replace_video_token({"video_grid_thw": grid, "video_metadata": [
        SimpleNamespace(fps=2.0, frames_indices=list(range(6)))]}, 0)
    ids = proc.tokenizer(text, add_special_tokens=False)["input_ids"]
    pads = ids.count(proc.video_token_id)
    assert pads == 3 * 4 * 6 // 4
    assert ids.count(proc.vision_start_token_id) == 3 and "seconds>" in text
    assert len(ids) > pads + 2  # what the Qwen2-VL rule would count


def test_videos_not_counted_with_the_reason(models, tmp_path):
    pytest.importorskip("av")
    from tests.helpers.video import Clip, encode, sharegpt, write_json

    encode(tmp_path, Clip("clip.mp4"))
    data = write_json(tmp_path / "d.json", [sharegpt(["clip.mp4"])])
    report = doctor.check(str(data), select=["DAT"], model=str(models["hub"].path))
    (summary,) = [f for f in report.findings if f.code == "DAT903"]
    assert "1 video(s) not counted (by the rule above)" in summary.message and "timestamp" in summary.message
    assert not [f for f in report.findings if f.code == "DAT116"]  # Qwen3-VL takes videos
