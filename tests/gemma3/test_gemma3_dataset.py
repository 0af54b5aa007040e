"""DAT on Gemma 3: every image takes the processor's ``image_seq_length`` ``<image_soft_token>`` plus
the 4 tokens around them, whatever its size (EQUAL to the real processor's expansion); the false
DAT301 of the generic "fixed" rule ((896 / 14) ** 2 patches) is gone; records over --max-length
are still found; pan-and-scan crops are replayed exactly and stated as not counted."""

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
from doctor.families.gemma3 import PanAndScan, pan_and_scan_crops
from doctor.testing import make_image
from doctor.testing.gemma3 import count_image_tokens, image_processor, make_gemma3_model, processor

pytestmark = pytest.mark.filterwarnings("ignore")

# (width, height): square, portrait, landscape, tiny, extreme aspect ratios, large
SIZES = [(56, 56), (56, 84), (84, 56), (1, 1), (3, 5), (10, 500), (500, 10), (1999, 11), (640, 480), (1000, 999)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("gemma3_dat")
    return {"tiny": make_gemma3_model(root / "tiny"),
            "seq9": make_gemma3_model(root / "seq9", image_size=84, mm_tokens_per_image=9, layout="modern"),
            "pas": make_gemma3_model(root / "pas", pan_and_scan={"do_pan_and_scan": True})}


@pytest.mark.parametrize("name", ["tiny", "seq9"])
def test_image_tokens_equal_the_processors_count(models, name):
    info = models[name]
    spec = vision_spec(str(info.path))
    assert spec.family == "gemma3" and spec.per_image == info.mm_tokens_per_image + 4
    for w, h in SIZES:
        assert spec.tokens(w, h) == count_image_tokens(info, h, w), (name, w, h)
    assert spec.tokens() == spec.per_image  # unknown size: the same count
    assert "pan-and-scan" in spec.description and "not counted" in spec.description


def test_image_seq_length_falls_back_to_the_config(models, tmp_path):
    import shutil

    folder = tmp_path / "noproc"
    shutil.copytree(models["seq9"].path, folder)
    (folder / "processor_config.json").unlink()
    spec = vision_spec(str(folder))
    assert spec.per_image == 9 + 4 and "mm_tokens_per_image in config.json" in spec.description


def test_saved_pan_and_scan_is_overridden_by_the_processor(models):
    """Measured: Gemma3Processor passes its images_kwargs (do_pan_and_scan False) over the image
    processor's saved settings, so a saved ``do_pan_and_scan: true`` adds nothing; only a call with
    ``do_pan_and_scan=True`` adds crops (and a sentence around them), which the count leaves out."""
    info = models["pas"]
    assert image_processor(info).do_pan_and_scan is True
    spec = vision_spec(str(info.path))
    assert count_image_tokens(info, 300, 900) == spec.tokens(900, 300) == 8
    crops = pan_and_scan_crops(900, 300, PanAndScan())
    assert crops == 3
    called = count_image_tokens(info, 300, 900, do_pan_and_scan=True)
    assert called > (1 + crops) * spec.tokens(900, 300)  # 4 image sequences + the sentence's tokens


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(w=st.integers(1, 1400), h=st.integers(1, 1400), min_crop=st.sampled_from([64, 256]),
       max_crops=st.sampled_from([2, 4, 7]), ratio=st.sampled_from([1.2, 2.0]))
def test_pan_and_scan_crops_equal_the_image_processor(models, w, h, min_crop, max_crops, ratio):
    from PIL import Image

    proc = image_processor(models["tiny"])
    out = proc(images=[Image.new("RGB", (w, h))], do_pan_and_scan=True, pan_and_scan_min_crop_size=min_crop,
               pan_and_scan_max_num_crops=max_crops, pan_and_scan_min_ratio_to_activate=ratio)
    want = int(out["num_crops"][0]) if hasattr(out["num_crops"][0], "__int__") else out["num_crops"][0]
    assert pan_and_scan_crops(w, h, PanAndScan(min_crop, max_crops, ratio)) == want


def test_vision_spec_imports_no_torch(models):
    code = ("import sys; from doctor.checks.dataset.vision import vision_spec; "
            f"s = vision_spec({str(models['tiny'].path)!r}); s.tokens(640, 480); "
            "from doctor.families.gemma3 import pan_and_scan_crops, PanAndScan; pan_and_scan_crops(9, 3, PanAndScan()); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)


def _records(images: list[tuple[str, int, int]], root: Path, answer: str = "a cat on the street") -> list[dict]:
    recs = []
    for name, w, h in images:
        make_image(root / name, size=(w, h))
        recs.append({"messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is in this image"}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
            "images": [name]})
    return recs


def _real_lengths(info, recs, root: Path) -> list[int]:
    """input_ids length of each record through the real processor and chat template, tokenized
    as ``processor.apply_chat_template(..., tokenize=True)`` does (no second BOS: the template
    writes it)."""
    from PIL import Image

    proc = processor(info)
    out = []
    for rec in recs:
        text = proc.apply_chat_template(rec["messages"], tokenize=False)
        images = [Image.open(root / name).convert("RGB") for name in rec["images"]]
        out.append(len(proc(images=images, text=text, add_special_tokens=False)["input_ids"][0]))
    return out


def test_records_over_max_length_found(models, tmp_path):
    info = models["seq9"]
    sizes = [("small.png", 56, 56), ("wide.png", 840, 56), ("tall.png", 30, 700)]
    recs = _records(sizes, tmp_path)
    recs[1]["messages"][1]["content"][0]["text"] = "there are two dogs in the park and a red cat"
    data = tmp_path / "d.json"
    data.write_text(json.dumps(recs))
    real = _real_lengths(info, recs, tmp_path)
    assert len(set(real)) == 2
    for limit in sorted({n - d for n in real for d in (0, 1)}):  # exact: over at n - 1, not at n
        report = doctor.check(str(data), select=["DAT3", "DAT903"], model=str(info.path), max_length=limit)
        over = {f.location.record for f in report.findings if f.code.startswith("DAT30")}
        assert over == {i for i, n in enumerate(real) if n > limit}, (limit, real, [f.message for f in report.findings])
    clean = doctor.check(str(data), select=["DAT3"], model=str(info.path), max_length=max(real))
    assert not [f for f in clean.findings if f.code.startswith("DAT30")]


def test_the_false_truncation_of_the_generic_rule_is_gone(tmp_path):
    """Gemma 3's real geometry (896 px, patch 14, 256 tokens per image): the generic "fixed" rule
    counted (896 / 14) ** 2 = 4,096 tokens per image and reported DAT303 on every record under a
    1,024 limit; the processor writes 260."""
    info = make_gemma3_model(tmp_path / "g", image_size=896, patch_size=14, mm_tokens_per_image=256)
    recs = _records([("photo.png", 640, 480)], tmp_path)
    data = tmp_path / "d.json"
    data.write_text(json.dumps(recs))
    (real,) = _real_lengths(info, recs, tmp_path)
    assert real < 1024 < (896 // 14) ** 2
    assert vision_spec(str(info.path)).tokens(640, 480) == count_image_tokens(info, 480, 640) == 260
    report = doctor.check(str(data), select=["DAT3", "DAT903"], model=str(info.path), max_length=1024)
    assert not [f for f in report.findings if f.code.startswith("DAT30")], [f.message for f in report.findings]
    (summary,) = [f for f in report.findings if f.code == "DAT903"]
    assert f"max {real}" in summary.message and "260 per image" in summary.message
    over = doctor.check(str(data), select=["DAT3"], model=str(info.path), max_length=real - 1)
    assert {f.code for f in over.findings} & {"DAT301", "DAT303"}  # the twin: one token short
