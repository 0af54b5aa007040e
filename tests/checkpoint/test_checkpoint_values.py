"""CKP301-CKP303 and ``doctor.io.deep_scan``: NaN / Inf / all-zero detection through integer bit
views, checked against numpy's and torch's own float semantics for every supported format."""

from __future__ import annotations

import json
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doctor.io.deep_scan import scan_bytes, scan_file
from doctor.testing import make_llava_model
from doctor.testing import weights as _weights

from tests.helpers.checkpoint import FAMILIES, assert_fails, assert_passes, build_clean_models, clone, run_ckp

VALUE_CODES = ("CKP301", "CKP302", "CKP303")
TORCH_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
                "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
WIDTH = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def _reference(dtype: str, raw: bytes) -> tuple[int, int, bool]:
    """NaN count, Inf count, all-zero, as torch itself reads these bits."""
    import torch

    t = torch.frombuffer(bytearray(raw), dtype=getattr(torch, TORCH_DTYPES[dtype])).to(torch.float64)
    return int(torch.isnan(t).sum()), int(torch.isinf(t).sum()), bool((t == 0).all())


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(sorted(TORCH_DTYPES)), data=st.data())
def test_random_bit_patterns_match_torch(dtype: str, data: Any) -> None:
    n = data.draw(st.integers(1, 64))
    raw = data.draw(st.binary(min_size=n * WIDTH[dtype], max_size=n * WIDTH[dtype]))
    chunk = data.draw(st.sampled_from([8, 16, 64, 1 << 20]))
    s = scan_bytes("t", dtype, raw, buffer_bytes=chunk)
    assert (s.nan, s.inf, s.all_zero) == _reference(dtype, raw)


@pytest.mark.parametrize("dtype", sorted(TORCH_DTYPES))
def test_special_values_and_signed_zero(dtype: str) -> None:
    import torch

    tdt = getattr(torch, TORCH_DTYPES[dtype])
    zeros = torch.tensor([0.0, -0.0, 0.0], dtype=torch.float32).to(tdt)
    assert scan_bytes("z", dtype, zeros.view(torch.uint8).numpy().tobytes()).all_zero
    tiny = torch.tensor([0.0, -2.0 ** -20, 0.0], dtype=torch.float32).to(tdt)  # a negative subnormal / tiny value
    raw = tiny.view(torch.uint8).numpy().tobytes()
    assert scan_bytes("t", dtype, raw).all_zero == _reference(dtype, raw)[2]
    special = torch.tensor([1.0, float("nan"), float("-inf"), float("inf"), -float("nan")]).to(tdt)
    raw = special.view(torch.uint8).numpy().tobytes()
    s = scan_bytes("s", dtype, raw)
    assert (s.nan, s.inf, s.all_zero) == _reference(dtype, raw)


def _write_safetensors(path: Path, tensors: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path))


def test_scan_file_over_many_chunks_and_dtypes(tmp_path: Path) -> None:
    import torch

    g = torch.Generator().manual_seed(0)
    tensors = {
        "a.f32": torch.randn(1000, generator=g),
        "b.bf16": torch.randn(3000, generator=g).to(torch.bfloat16),
        "c.f16": torch.randn(777, generator=g).to(torch.float16),
        "d.zero": torch.zeros(513, dtype=torch.bfloat16),
        "e.int": torch.arange(10),
        "f.e4m3": torch.randn(100, generator=g).to(torch.float8_e4m3fn),
        "g.bool": torch.zeros(9, dtype=torch.bool),
    }
    tensors["a.f32"][[5, 999]] = float("nan")
    tensors["b.bf16"][2999] = float("-inf")
    tensors["c.f16"][0] = 70000.0  # overflows to inf in fp16
    path = tmp_path / "w.safetensors"
    _write_safetensors(path, tensors)
    seen = []
    stats = {s.name: s for s in scan_file(path, buffer_bytes=64, progress=seen.append)}
    assert (stats["a.f32"].nan, stats["a.f32"].inf) == (2, 0)
    assert (stats["b.bf16"].nan, stats["b.bf16"].inf) == (0, 1)
    assert stats["c.f16"].inf == 1
    assert stats["d.zero"].all_zero and stats["g.bool"].all_zero
    assert not stats["e.int"].all_zero and not stats["f.e4m3"].all_zero
    assert sum(seen) == sum(t.numel() * t.element_size() for t in tensors.values())


def test_scan_refuses_a_malformed_header(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    header = json.dumps({"x": {"dtype": "F32", "shape": [10], "data_offsets": [0, 400]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 40)
    with pytest.raises(ValueError):
        scan_file(path)


def test_memory_stays_bounded(tmp_path: Path) -> None:
    """One buffer, whatever the file size: a 48 MB file scans in well under 8 MB of Python memory."""
    n = 12 * 2**20
    header = json.dumps({"big": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    path = tmp_path / "big.safetensors"
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        block = np.ones(2**20, dtype=np.float32).tobytes()
        for _ in range(12):
            f.write(block)
    tracemalloc.start()
    try:
        [s] = scan_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert s.numel == n and not s.nan and not s.all_zero
    assert peak < 8 * 2**20, peak


# ---- the checks on factory models -------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    models = build_clean_models(tmp_path_factory)
    # A freshly initialized mllama has zero tanh gates (images switched off); a trained one never does.
    _weights.rewrite_weights(models["mllama"].path,
                             lambda s: {k: (v + 0.5 if k.endswith("gate") else v) for k, v in s.items()})
    return models


def _plant(model: Path, name_part: str, value: float, dtype: Any = None) -> str:
    chosen: list[str] = []

    def edit(state: dict[str, Any]) -> dict[str, Any]:  # called once per shard
        names = sorted(k for k in state if name_part in k and k.endswith("weight"))
        if chosen or not names:
            return state
        name = names[0]
        t = state[name].clone()
        if value == 0.0:
            t.zero_()
        else:
            t.view(-1)[3] = value
        state[name] = t.to(dtype) if dtype is not None else t
        chosen.append(name)
        return state

    _weights.rewrite_weights(model, edit)
    return chosen[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_clean_models_pass_deep(clean: dict[str, Any], family: str) -> None:
    report = run_ckp(clean[family].path, deep=True)
    for code in VALUE_CODES:
        assert_passes(report, code)


def test_small_weights_are_scanned_by_default(clean: dict[str, Any], tmp_path: Path) -> None:
    twin = run_ckp(clean["llava"].path)  # no --deep: a tiny model is under the budget
    for code in (*VALUE_CODES, "CKP304"):
        assert_passes(twin, code)
    model = clone(clean["llava"].path, tmp_path / "m")
    nan_name = _plant(model, "multi_modal_projector", float("nan"))
    assert_fails(run_ckp(model), "CKP301", nan_name)
    assert_passes(run_ckp(model), "CKP304")


def test_above_the_budget_an_info_says_what_deep_would_cost(clean: dict[str, Any], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from doctor.checks.checkpoint.rules import values

    model = clone(clean["llava"].path, tmp_path / "m")
    nan_name = _plant(model, "multi_modal_projector", float("nan"))
    size = sum(f.stat().st_size for f in model.glob("*.safetensors"))
    monkeypatch.setattr(values, "FULL_SCAN_BYTES", size - 1)
    report = run_ckp(model)
    for r in report.results:
        if r.code in VALUE_CODES:
            assert r.status.value == "skip" and "--deep" in (r.reason or "")
    [note] = assert_fails(report, "CKP304", f"{size:,} bytes", "with --deep")
    assert note.severity.value == "info" and note.path == str(model)
    deep = run_ckp(model, deep=True)  # --deep lifts the budget
    assert_fails(deep, "CKP301", nan_name)
    assert_passes(deep, "CKP304")
    monkeypatch.setattr(values, "FULL_SCAN_BYTES", size)  # at the budget exactly: scanned
    assert_fails(run_ckp(model), "CKP301", nan_name)


def test_one_budget_for_checkpoints_and_adapters() -> None:
    from doctor.checks.adapter.rules import values as adapter_values
    from doctor.checks.checkpoint.rules import values as ckp_values

    from doctor.io import scan_budget

    assert ckp_values.FULL_SCAN_BYTES == adapter_values.FULL_SCAN_BYTES == scan_budget.FULL_SCAN_BYTES
    assert "14.0 GB" in scan_budget.describe_cost(14 * 10**9) and "about 14 s" in scan_budget.describe_cost(14 * 10**9)


@pytest.mark.parametrize("family", FAMILIES)
def test_nan_inf_and_zero_are_found(clean: dict[str, Any], tmp_path: Path, family: str) -> None:
    model = clone(clean[family].path, tmp_path / "m")
    nan_name = _plant(model, "multi_modal_projector", float("nan"))
    inf_name = _plant(model, "lm_head", float("-inf"))
    zero_name = _plant(model, "layers.1.mlp.down_proj", 0.0)
    report = run_ckp(model, deep=True)
    [f] = assert_fails(report, "CKP301", nan_name, "1 NaN")
    assert f.location is not None and f.location.tensor == nan_name
    assert_fails(report, "CKP302", inf_name, "1 Inf")
    [z] = assert_fails(report, "CKP303", zero_name)
    assert z.severity.value == "warning"


def test_mllama_zero_gate_is_reported(tmp_path: Path) -> None:
    info = make_llava_model(tmp_path / "m", family="mllama")  # freshly initialized: gates are zero
    assert_fails(run_ckp(info.path, deep=True), "CKP303", "cross_attn_attn_gate")


@pytest.mark.parametrize("dtype", ("bfloat16", "float16"))
def test_half_precision_models(tmp_path: Path, dtype: str) -> None:
    info = make_llava_model(tmp_path / "m", family="llava_next", dtype=dtype)
    assert_passes(run_ckp(info.path, deep=True), "CKP301")
    name = _plant(info.path, "vision_tower", float("nan"))
    assert_fails(run_ckp(info.path, deep=True), "CKP301", name, "BF16" if dtype == "bfloat16" else "F16")


def test_fp8_lone_file(tmp_path: Path) -> None:
    import torch

    t = torch.randn(64).to(torch.float8_e4m3fn)
    t.view(torch.uint8)[7] = 0x7F  # the e4m3fn NaN
    _write_safetensors(tmp_path / "w.safetensors", {"proj.weight": t, "proj.bias": torch.zeros(4)})
    report = run_ckp(tmp_path / "w.safetensors", deep=True)
    assert_fails(report, "CKP301", "proj.weight", "F8_E4M3")
    assert_passes(report, "CKP303")  # a zero bias is normal


@pytest.mark.parametrize("family", FAMILIES)
def test_bin_weights_scanned_after_the_pickle_scan(tmp_path: Path, family: str) -> None:
    info = make_llava_model(tmp_path / "m", family=family, weights="bin", shard_size="80KB")
    assert info.weight_files[0].startswith("pytorch_model-")
    if family == "mllama":
        _weights.rewrite_weights(info.path, lambda s: {k: (v + 0.5 if k.endswith("gate") else v) for k, v in s.items()})
    assert_passes(run_ckp(info.path, deep=True), "CKP301")
    name = _plant(info.path, "multi_modal_projector", float("nan"))
    assert_fails(run_ckp(info.path, deep=True), "CKP301", name)


def test_many_bad_tensors_are_summarized(tmp_path: Path) -> None:
    import torch

    tensors = {f"layer.{i}.weight": torch.full((4,), float("nan")) for i in range(15)}
    _write_safetensors(tmp_path / "w.safetensors", tensors)
    found = assert_fails(run_ckp(tmp_path / "w.safetensors", deep=True), "CKP301", "and 5 more")
    assert len(found) == 11
