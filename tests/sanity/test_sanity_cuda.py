"""The sanity pass on a CUDA GPU (fp16, bf16, 4-bit): skipped without one (tests/conftest.py).

The same cases as the CPU tests: every family from a folder without processor files passes
stages 1-4, a NaN weight fails stage 2, llava_next pinpoints that disagree fail stage 2, and the
adapter agrees with its merge."""

from __future__ import annotations

import importlib.util
import re
import shutil

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.cuda

FAMILIES = ("llava", "llava_next", "mllama", "qwen2_vl", "qwen2_5_vl")
BNB = importlib.util.find_spec("bitsandbytes") is not None
MODES = ["fp16", "bf16", pytest.param("4bit", marks=pytest.mark.skipif(not BNB, reason="needs bitsandbytes"))]
# bitsandbytes quantizes Linear weights only: a norm weight stays floating point in every mode
FIRST_TEXT_NORM = re.compile(r"^(?!.*visu)(?!.*vision).*layers\.0\.input_layernorm\.weight$")


def mode_kwargs(mode):
    return {"load_4bit": True} if mode == "4bit" else {"dtype": mode}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from doctor.testing.adapters import make_lora_adapter
    from doctor.testing.models import make_llava_model
    from doctor.testing.qwen import make_qwen_model

    from tests.helpers.sanity import open_gates, remove_processor_files

    root = tmp_path_factory.mktemp("cuda")
    m = {}
    for fam in FAMILIES:
        m[fam] = (make_qwen_model(root / fam, family=fam) if fam.startswith("qwen")
                  else make_llava_model(root / fam, family=fam)).path
        if fam == "mllama":
            open_gates(m[fam])
        remove_processor_files(m[fam])
    m["llava_full"] = make_llava_model(root / "llava_full").path
    m["adapter"] = make_lora_adapter(m["llava_full"], root / "adapter")
    return m


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_clean_folder_without_processor_files_passes_on_cuda(models, family, mode):
    from doctor.sanity import run_sanity

    result = run_sanity(str(models[family]), device="cuda", max_new_tokens=4, **mode_kwargs(mode))
    assert result.device == "cuda:0" and (result.quantization == "4bit" if mode == "4bit" else result.dtype == mode)
    assert [s.status for s in result.stages[:4]] == ["pass"] * 4, result.findings
    assert "built from config.json's vision settings" in result.stage(1).detail
    for st in result.stages[:4]:
        assert st.memory_kind == "cuda" and st.peak_memory_bytes > 0
    assert "gpu" in result.environment


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_nan_weight_fails_stage_2_on_cuda(models, family, mode, tmp_path):
    from doctor.sanity import run_sanity

    from tests.helpers.sanity import plant_nan

    folder = tmp_path / family
    shutil.copytree(models[family], folder)
    plant_nan(folder, FIRST_TEXT_NORM, row=None)
    result = run_sanity(str(folder), device="cuda", max_new_tokens=4, **mode_kwargs(mode))
    assert result.stage(1).status == "pass" and result.stage(2).status == "fail", result.findings
    assert "input_layernorm" in result.stage(2).findings[0].message


@pytest.mark.parametrize("mode", ["fp16", "bf16"])
def test_llava_next_pinpoints_that_disagree_fail_on_cuda(tmp_path, mode):
    from doctor.sanity import run_sanity
    from doctor.testing.models import make_llava_model

    folder = make_llava_model(tmp_path / "m", family="llava_next", processor_overrides={
        "image_processor.image_grid_pinpoints": [[28, 28], [56, 28], [28, 56], [56, 56]]}).path
    result = run_sanity(str(folder), device="cuda", dtype=mode, max_new_tokens=4)
    assert result.stage(2).status == "fail" and "pinpoint [56, 56] image 56x56" in result.stage(2).findings[0].message


def test_adapter_and_merge_agree_in_fp16_on_cuda(models):
    from doctor.sanity import run_sanity

    result = run_sanity(str(models["llava_full"]), adapter=str(models["adapter"]), device="cuda", dtype="fp16")
    st = result.stage(5)
    assert st.status == "pass", st.findings
    assert st.metrics["relative_difference"] <= st.metrics["tolerance"]


@pytest.mark.skipif(not BNB, reason="needs bitsandbytes")
def test_4bit_skips_stage_5(models):
    from doctor.sanity import run_sanity

    result = run_sanity(str(models["llava_full"]), adapter=str(models["adapter"]), device="cuda", load_4bit=True)
    assert result.quantization == "4bit" and result.stage(5).status == "skip"


def test_auto_device_picks_cuda(models):
    from doctor.sanity import run_sanity

    result = run_sanity(str(models["llava_full"]))
    assert result.device == "cuda:0" and result.dtype in ("bf16", "fp16")
