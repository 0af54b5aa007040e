"""DAT on Qwen2-VL / Qwen2.5-VL: image tokens by the dynamic-resolution rule, computed from
headers without torch, EQUAL to the processor's own count; records over --max-length found."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doctor.checks.dataset.vision import vision_spec

import doctor
from doctor.testing import make_image
from doctor.testing.qwen import QWEN_FAMILIES, count_image_tokens, image_processor, make_qwen_model

pytestmark = pytest.mark.filterwarnings("ignore")

# (width, height): square, portrait, landscape, off-grid, tiny, extreme aspect ratios, large
SIZES = [(56, 56), (84, 56), (56, 84), (57, 29), (1, 1), (3, 5), (10, 500), (500, 10), (1999, 11), (13, 90),
         (300, 400), (1000, 999), (640, 480), (28, 2000)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen_dat")
    return {
        "qwen2_vl": make_qwen_model(root / "q2", family="qwen2_vl", min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 40),
        "qwen2_5_vl": make_qwen_model(root / "q25", family="qwen2_5_vl", layout="v5", processor_layout="native"),
        "merge1": make_qwen_model(root / "m1", spatial_merge_size=1, patch_size=16, min_pixels=16 * 16 * 2,
                                  max_pixels=16 * 16 * 100),
    }


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl", "merge1"])
def test_image_tokens_equal_the_processors_count(models, name):
    info = models[name]
    spec = vision_spec(str(info.path))
    assert spec.family in QWEN_FAMILIES and spec.extra == 2
    for w, h in SIZES:
        assert spec.tokens(w, h) - spec.extra == count_image_tokens(info, h, w), (name, w, h)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(w=st.integers(1, 4000), h=st.integers(1, 4000))
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


def test_unknown_size_is_the_largest_case_and_aspect_over_200(models):
    info = models["qwen2_vl"]
    spec = vision_spec(str(info.path))
    # unknown size: an upper bound; thin images whose short side is clamped to 28 px go past
    # max_pixels / 28^2 = 40 (the processor's own arithmetic, checked above)
    assert spec.tokens() >= max(spec.tokens(w, h) for w, h in SIZES)
    assert max(spec.tokens(w, h) - 2 for w, h in SIZES) > 40
    assert spec.tokens(1, 500) == spec.tokens()  # refused by the processor: counted as the most it could take
    assert "max_pixels 31,360" in spec.description


def test_video_tokens_follow_the_same_rule(models):
    spec = vision_spec(str(models["qwen2_vl"].path))
    per_frame = spec.tokens(300, 400) - 2
    assert spec.video_tokens(8, 300, 400) == 4 * per_frame + 2  # temporal_patch_size 2
    assert spec.video_tokens(7, 300, 400) == 4 * per_frame + 2  # padded to a multiple of 2
    assert spec.video_tokens(1, 300, 400) == per_frame + 2


def test_vision_spec_imports_no_torch(models):
    code = ("import sys; from doctor.checks.dataset.vision import vision_spec; "
            f"s = vision_spec({str(models['qwen2_vl'].path)!r}); s.tokens(640, 480); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)


def _records(images: list[tuple[str, int, int]], root: Path) -> list[dict]:
    recs = []
    for name, w, h in images:
        make_image(root / name, size=(w, h))
        recs.append({"messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is in this image"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a cat on the street"}]}],
            "images": [name]})
    return recs


def _real_lengths(info, recs, root: Path) -> list[int]:
    """input_ids length of each record through the real processor and chat template."""
    from PIL import Image

    from doctor.testing.qwen import processor

    proc = processor(info)
    out = []
    for rec in recs:
        text = proc.apply_chat_template(rec["messages"], tokenize=False)
        images = [Image.open(root / name).convert("RGB") for name in rec["images"]]
        out.append(len(proc(images=images, text=text)["input_ids"][0]))
    return out


def test_records_over_max_length_found(models, tmp_path):
    info = models["qwen2_vl"]
    sizes = [("small.png", 56, 56), ("large.png", 1000, 1000), ("wide.png", 840, 56), ("thin.png", 1999, 11)]
    recs = _records(sizes, tmp_path)
    data = tmp_path / "d.json"
    data.write_text(json.dumps(recs))
    spec = vision_spec(str(info.path))
    assert [spec.tokens(w, h) - 2 for _, w, h in sizes] == [count_image_tokens(info, h, w) for _, w, h in sizes]
    real = _real_lengths(info, recs, tmp_path)
    for limit in sorted(set(real))[:-1]:
        report = doctor.check(str(data), select=["DAT3", "DAT903"], model=str(info.path), max_length=limit)
        over = {f.location.record for f in report.findings if f.code.startswith("DAT30")}
        assert over == {i for i, n in enumerate(real) if n > limit}, (limit, real, [f.message for f in report.findings])
    (summary,) = [f for f in report.findings if f.code == "DAT903"]
    assert "qwen2_vl" in summary.message
    clean = doctor.check(str(data), select=["DAT3"], model=str(info.path), max_length=max(real))
    assert not [f for f in clean.findings if f.code.startswith("DAT30")]


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_aspect_ratio_the_processor_refuses_is_dat304(models, tmp_path, family):
    """The real image processor raises on the 205:1 image and takes the 195:1 twin; DAT304 says the same."""
    from PIL import Image

    info = models[family]
    sizes = [("thin.png", 4100, 20), ("ok.png", 3900, 20), ("tall.png", 20, 4100)]
    recs = _records(sizes, tmp_path)
    data = tmp_path / "d.json"
    data.write_text(json.dumps(recs))
    proc = image_processor(info)
    refused = set()
    for i, (name, _, _) in enumerate(sizes):
        try:
            proc(images=[Image.open(tmp_path / name).convert("RGB")])
        except ValueError as e:
            assert "aspect ratio" in str(e)
            refused.add(i)
    assert refused == {0, 2}
    report = doctor.check(str(data), select=["DAT304"], model=str(info.path))
    found = {f.location.record: f for f in report.findings}
    assert set(found) == refused
    assert found[0].severity.value == "error" and "'thin.png' is 4,100 x 20 px" in found[0].message
    assert found[0].fix is not None  # drop the record (unsafe)
    llava = doctor.check(str(data), select=["DAT304"], tokenizer=str(info.path))  # no --model: no family rule
    assert not llava.findings
