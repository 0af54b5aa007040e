"""The sanity pass on a CUDA GPU (fp16, bf16, 4-bit): skipped without one (tests/conftest.py)."""

from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from doctor.testing.adapters import make_lora_adapter
    from doctor.testing.models import make_llava_model

    root = tmp_path_factory.mktemp("cuda")
    m = {fam: make_llava_model(root / fam, family=fam).path for fam in ("llava", "llava_next")}
    m["adapter"] = make_lora_adapter(m["llava"], root / "adapter")
    return m


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("family", ["llava", "llava_next"])
def test_clean_model_passes_on_cuda(models, family, dtype):
    from doctor.sanity import run_sanity

    result = run_sanity(str(models[family]), device="cuda", dtype=dtype)
    assert result.ok and result.device == "cuda:0" and result.dtype == dtype, result.findings
    assert [s.status for s in result.stages[:4]] == ["pass"] * 4
    for st in result.stages[:4]:
        assert st.memory_kind == "cuda" and st.peak_memory_bytes > 0
    assert "gpu" in result.environment


def test_adapter_and_merge_agree_in_fp16_on_cuda(models):
    from doctor.sanity import run_sanity

    result = run_sanity(str(models["llava"]), adapter=str(models["adapter"]), device="cuda", dtype="fp16")
    st = result.stage(5)
    assert st.status == "pass", st.findings
    assert st.metrics["relative_difference"] <= st.metrics["tolerance"]


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
def test_4bit_loads_and_runs(models):
    from doctor.sanity import run_sanity

    result = run_sanity(str(models["llava"]), device="cuda", load_4bit=True)
    assert result.quantization == "4bit"
    assert [s.status for s in result.stages[:4]] == ["pass"] * 4, result.findings
    assert result.stage(5).status == "skip"


def test_auto_device_picks_cuda(models):
    from doctor.sanity import run_sanity

    result = run_sanity(str(models["llava"]))
    assert result.device == "cuda:0" and result.dtype in ("bf16", "fp16")
