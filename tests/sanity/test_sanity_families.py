"""The sanity pass runs on what people have: folders without processor files (most merge and
training outputs), Qwen2-VL / Qwen2.5-VL / Qwen3-VL without torchvision, Gemma 3, processors from --processor or the
base; it shows each family every shape its processor treats apart, and NaN weights fail stage 2
on every family."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from doctor.sanity import run_sanity  # noqa: E402
from doctor.testing.gemma3 import make_gemma3_model  # noqa: E402
from doctor.testing.models import make_llava_model  # noqa: E402
from doctor.testing.qwen import make_qwen_model  # noqa: E402
from doctor.testing.qwen3_vl import make_qwen3_vl_model  # noqa: E402

from tests.helpers.sanity import open_gates, plant_nan, remove_processor_files  # noqa: E402

FAMILIES = ("llava", "llava_next", "mllama", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "gemma3")
# Stage 2's images per family, besides the main one: llava's CLIP processor crops every image to one
# square (none); the factory's llava_next pinpoints [28, 28], [56, 28], [28, 56] (three ratios) and a
# very tall and a very wide image; mllama's 8 tile arrangements of max_image_tiles=4; Qwen portrait,
# square, landscape.
EXTRA_IMAGES = {"llava": 0, "llava_next": 5, "mllama": 8, "qwen2_vl": 3, "qwen2_5_vl": 3, "qwen3_vl": 3, "gemma3": 0}


def build(folder: Path, family: str, **kwargs) -> Path:
    if family == "qwen3_vl":
        return make_qwen3_vl_model(folder, **kwargs).path
    if family == "gemma3":
        return make_gemma3_model(folder, **kwargs).path
    if family.startswith("qwen"):
        return make_qwen_model(folder, family=family, **kwargs).path
    path = make_llava_model(folder, family=family, **kwargs).path
    if family == "mllama":
        open_gates(path)
    return path


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """Each family as a merge or training output leaves it: config, weights, tokenizer; no processor files."""
    root = tmp_path_factory.mktemp("bare")
    return {f: remove_processor_files(build(root / f, f)) for f in FAMILIES}


def statuses(result) -> dict[int, str]:
    return {s.number: s.status for s in result.stages}


def messages(result, stage: int) -> str:
    return " | ".join(f.message for f in result.stage(stage).findings)


@pytest.mark.parametrize("family", FAMILIES)
def test_folder_without_processor_files_passes_stages_1_to_4(bare, family):
    assert not any((bare[family] / n).exists() for n in ("processor_config.json", "preprocessor_config.json"))
    result = run_sanity(str(bare[family]), device="cpu", max_new_tokens=4)
    assert statuses(result) == {1: "pass", 2: "pass", 3: "pass", 4: "pass", 5: "skip", 6: "skip"}, result.findings
    detail = result.stage(1).detail
    assert "built from config.json's vision settings" in detail and "no processor files in the folder" in detail
    assert f"the tokenizer of {bare[family]}" in detail
    images = result.stage(2).metrics["images"]
    assert len(images) == 1 + EXTRA_IMAGES[family], images
    assert all(re.search(r": \d+ tokens$", i) for i in images), images


@pytest.mark.parametrize("family", FAMILIES)
def test_nan_weight_fails_stage_2_on_every_family(bare, family, tmp_path):
    folder = tmp_path / family
    shutil.copytree(bare[family], folder)
    name = plant_nan(folder)  # one element of the first text layer's q_proj
    result = run_sanity(str(folder), device="cpu", max_new_tokens=4)
    assert statuses(result)[1] == "pass" and statuses(result)[2] == "fail", result.findings
    (finding,) = result.stage(2).findings
    assert finding.code == "SAN002" and "logits are NaN or inf" in finding.message
    # named as transformers names it in memory (the on-disk name may carry another prefix)
    assert finding.location.tensor.endswith(name.split("layers.0.", 1)[1])
    assert "layers.0.self_attn.q_proj.weight" in finding.message
    assert statuses(result)[3] == "skip" and "NaN/inf logits" in result.stage(3).detail


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_that_no_prompt_reaches_still_fails_stage_2(bare, tmp_path, value):
    """A NaN / inf embedding row of a token the prompts never use leaves the logits finite; the
    parameter scan still finds it (any prompt with that token answers NaN)."""
    folder = tmp_path / "m"
    shutil.copytree(bare["llava"], folder)
    plant_nan(folder, re.compile(r"embed_tokens\.weight$"), row=299, value=value)  # '<unused299>', never produced
    result = run_sanity(str(folder), device="cpu", max_new_tokens=4)
    assert statuses(result)[2] == "fail"
    assert "although the logits for these images are finite" in messages(result, 2)
    assert result.stage(2).findings[0].location.tensor.endswith("embed_tokens.weight")
    assert statuses(result)[3] == "pass" and statuses(result)[4] == "pass"  # the main image's logits are fine


@pytest.mark.parametrize("side", ["processor", "config"])
def test_llava_next_pinpoints_that_disagree_fail_stage_2_naming_the_shape(tmp_path, side):
    extra = [[28, 28], [56, 28], [28, 56], [56, 56]]  # [56, 56]: a 2x2 grid the other side does not know
    kwargs = ({"processor_overrides": {"image_processor.image_grid_pinpoints": extra}} if side == "processor"
              else {"config_overrides": {"image_grid_pinpoints": extra}})
    folder = make_llava_model(tmp_path / "m", family="llava_next", **kwargs).path
    result = run_sanity(str(folder), device="cpu", max_new_tokens=4)
    assert statuses(result)[2] == "fail"
    (finding,) = result.stage(2).findings  # one cause, one finding
    where = "the image processor's" if side == "processor" else "config.json's"
    assert f"the pinpoint [56, 56] image 56x56 (only in {where} image_grid_pinpoints)" in finding.message
    # the processor tiles on the finer grid: too many image tokens; the model on the finer grid: too few patches
    raised = ("Image features and image tokens do not match" if side == "processor" else
              "split_with_sizes expects split_sizes to sum exactly to 2")
    assert raised in finding.message
    assert "[[28, 28], [56, 28], [28, 56]]" in finding.hint and "[[28, 28], [56, 28], [28, 56], [56, 56]]" in finding.hint
    assert "56x56: raised" in result.stage(2).detail


def test_llava_next_processor_from_a_folder_with_other_pinpoints_fails_the_same_way(bare, tmp_path):
    other = make_llava_model(tmp_path / "other", family="llava_next",
                             processor_overrides={"image_processor.image_grid_pinpoints": [[28, 28], [56, 56]]}).path
    result = run_sanity(str(bare["llava_next"]), processor=str(other), device="cpu", max_new_tokens=4)
    assert f"the image processor of --processor {other}" in result.stage(1).detail
    assert statuses(result)[2] == "fail" and "pinpoint [56, 56] image 56x56" in messages(result, 2)


def test_mllama_processor_with_more_tiles_than_the_model_fails_stage_2_once(tmp_path):
    folder = build(tmp_path / "m", "mllama", processor_overrides={"image_processor.max_image_tiles": 6})
    result = run_sanity(str(folder), device="cpu", max_new_tokens=4)
    assert statuses(result)[2] == "fail"
    (finding,) = result.stage(2).findings
    assert "the 2x3 tiles image 84x56" in finding.message and "the 1x1 tiles image 28x28" in finding.message
    assert "max_image_tiles is 6, config.json's vision_config.max_num_tiles is 4" in finding.hint


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen_merge_size_that_disagrees_fails_stage_2(tmp_path, family):
    folder = build(tmp_path / "m", family, processor_overrides={"merge_size": 1})
    result = run_sanity(str(folder), device="cpu", max_new_tokens=4)
    assert statuses(result)[2] == "fail"
    (finding,) = result.stage(2).findings
    assert "the portrait image" in finding.message and "the landscape image" in finding.message
    assert "merge_size is 1, config.json's vision_config.spatial_merge_size is 2" in finding.hint


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("layout", ["split", "native"])
def test_qwen_with_its_processor_files_runs_without_torchvision(tmp_path, family, layout):
    folder = make_qwen_model(tmp_path / "m", family=family, layout="v4" if layout == "split" else "v5",
                             processor_layout=layout, min_pixels=28 * 28 * 8, max_pixels=28 * 28 * 16).path
    result = run_sanity(str(folder), device="cpu", max_new_tokens=4)
    assert statuses(result) == {1: "pass", 2: "pass", 3: "pass", 4: "pass", 5: "skip", 6: "skip"}, result.findings
    assert f"from {folder}'s processor files, without a video processor" in result.stage(1).detail
    images = result.stage(2).metrics["images"]
    # the folder's min_pixels 28*28*8 (not the default 56*56): the smallest 1:2 image is 56x112 (2x4 merged
    # patches), the smallest square 84x84 (3x3)
    assert [i.split(":")[0] for i in images[1:]] == ["portrait 56x112", "square 84x84", "landscape 112x56"]
    assert result.stage(2).metrics["images"][0].startswith("default (square) 336x336")


def test_processor_and_tokenizer_come_from_the_base(bare, tmp_path):
    base = build(tmp_path / "base", "llava")
    folder = tmp_path / "merged"
    shutil.copytree(bare["llava"], folder)
    remove_processor_files(folder, tokenizer=True)
    alone = run_sanity(str(folder), device="cpu", max_new_tokens=4)
    assert statuses(alone)[1] == "fail" and "no tokenizer files" in messages(alone, 1)
    with_base = run_sanity(str(folder), base=str(base), device="cpu", max_new_tokens=4)
    assert statuses(with_base)[1] == "pass" and with_base.ok, with_base.findings
    assert f"the image processor of the base {base} and the tokenizer of {base}" in with_base.stage(1).detail


def test_processor_dir_gives_the_image_processor_and_the_folder_keeps_its_tokenizer(bare, tmp_path):
    other = build(tmp_path / "other", "llava")
    result = run_sanity(str(bare["llava"]), processor=str(other), device="cpu", max_new_tokens=4)
    assert result.ok and statuses(result)[4] == "pass"
    assert (f"LlavaProcessor from the image processor of --processor {other} and the tokenizer of {bare['llava']}"
            in result.stage(1).detail)


def test_processor_dir_without_processor_files_fails_stage_1(bare, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_sanity(str(bare["llava"]), processor=str(empty), device="cpu")
    assert statuses(result)[1] == "fail" and "holds no preprocessor_config.json" in messages(result, 1)


def test_qwen_adapter_agrees_with_its_merge_and_a_merged_folder_takes_the_base_processor(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from doctor.testing.qwen import make_qwen_lora_adapter

    base = build(tmp_path / "base", "qwen2_5_vl")
    adapter = make_qwen_lora_adapter(base, tmp_path / "lora")
    in_memory = run_sanity(str(adapter), device="cpu", max_new_tokens=4)
    assert statuses(in_memory) == {1: "pass", 2: "pass", 3: "pass", 4: "pass", 5: "pass", 6: "skip"}, \
        in_memory.findings
    assert in_memory.stage(5).metrics["adapter_effect"] > 0
    merged = tmp_path / "merged"  # what a merge script leaves: weights and config, nothing else
    PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), adapter).merge_and_unload() \
        .save_pretrained(merged)
    result = run_sanity(str(merged), adapter=str(adapter), base=str(base), device="cpu", max_new_tokens=4)
    assert statuses(result)[5] == "pass", result.findings
    assert f"the image processor of the base {base} and the tokenizer of {base}" in result.stage(1).detail


def test_check_sanity_runs_on_folders_without_processor_or_tokenizer_files(bare, tmp_path):
    from doctor.runner import Options, run
    from doctor.selection import Selection

    def check(folder, **options):
        report = run([str(folder)], Options(sanity=True, device="cpu", extra={"sanity_max_new_tokens": 4}, **options),
                     Selection.from_lists(select=None, ignore=[]))
        return report, {r.code: r for r in report.results if r.code.startswith("SAN")}

    report, san = check(bare["llava"])
    assert [san[c].status.value for c in sorted(san)] == ["pass", "pass", "pass", "pass", "skip", "skip"]
    ckp406 = [f for f in report.findings if f.code == "CKP406"]
    assert ckp406 and ckp406[0].severity.value == "warning"  # the static side says it, as a warning
    (model,) = report.sections["sanity"]["models"]
    stage1 = model["stages"][0]
    assert "built from config.json's vision settings" in stage1["detail"]

    folder = tmp_path / "no-tokenizer"
    shutil.copytree(bare["llava"], folder)
    remove_processor_files(folder, tokenizer=True)
    report, san = check(folder)
    # No tokenizer anywhere: CKP401 warns (a tokenizer may come from the base), and the pass
    # itself fails stage 1 saying so, instead of being skipped behind the static finding.
    assert [f.severity.value for f in report.findings if f.code == "CKP401"] == ["warning"]
    assert san["SAN001"].status.value == "fail"
    assert any("tokenizer" in f.message for f in report.findings if f.code == "SAN001")
    base = build(tmp_path / "base", "llava")
    _, san = check(folder, base=str(base))
    assert [san[c].status.value for c in sorted(san)] == ["pass", "pass", "pass", "pass", "skip", "skip"]


def test_qwen_without_any_chat_template_uses_its_chatml_turn(tmp_path):
    from doctor.testing import DELETE

    folder = make_qwen_model(tmp_path / "m", family="qwen2_vl", processor_layout=None,
                             tokenizer_overrides={"chat_template": DELETE}).path
    result = run_sanity(str(folder), device="cpu", max_new_tokens=4)
    assert [statuses(result)[n] for n in (1, 2, 3, 4)] == ["pass"] * 4, result.findings
    assert result.stage(2).detail.endswith("(default prompt, no chat template)")


def test_inf_weight_on_the_path_fails_stage_2(bare, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(bare["qwen2_5_vl"], folder)
    plant_nan(folder, value=float("inf"))
    result = run_sanity(str(folder), device="cpu", max_new_tokens=4)
    assert statuses(result)[2] == "fail" and "layers.0.self_attn.q_proj.weight" in messages(result, 2)


def test_qwen3_vl_with_its_processor_files_runs_without_torchvision(tmp_path):
    """Qwen3VLProcessor holds a video processor that needs torchvision; the pass assembles the
    same processor without it (before, stage 1 failed with advice to copy processor files)."""
    folder = make_qwen3_vl_model(tmp_path / "m").path
    result = run_sanity(str(folder), device="cpu", max_new_tokens=4)
    assert statuses(result) == {1: "pass", 2: "pass", 3: "pass", 4: "pass", 5: "skip", 6: "skip"}, result.findings
    try:
        import torchvision  # noqa: F401
    except ImportError:
        assert f"from {folder}'s processor files, without a video processor" in result.stage(1).detail
    else:
        assert f"AutoProcessor from {folder}" in result.stage(1).detail
    assert [i.split(" ")[0] for i in result.stage(2).metrics["images"][1:]] == ["portrait", "square", "landscape"]
