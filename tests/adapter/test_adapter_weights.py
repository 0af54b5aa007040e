"""ADP014-ADP021 on adapter weights, each failing case confirmed with the real peft 0.21:
an empty or all-zero adapter loads and leaves the outputs equal to the base's, ZeRO-3 empties
and wrong ranks raise size mismatches, a NaN poisons the outputs."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

import doctor
from doctor.testing import make_llava_model
from doctor.testing.adapters import make_lora_adapter
from doctor.testing.models import tiny_inputs

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
from safetensors.torch import load_file, save_file  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("adp_weights")
    base = make_llava_model(root / "base", family="llava")
    good = make_lora_adapter(base, root / "good")
    with torch.no_grad():
        model = transformers.AutoModelForImageTextToText.from_pretrained(base.path)
        base_logits = model(**tiny_inputs(base)).logits
    return base, good, base_logits


def check(path, base, **kw):
    report = doctor.check(str(path), select=["ADP"], base=str(base.path), **kw)
    assert not report.internal_errors, report.internal_errors
    return report


def only(report, code):
    return [f for f in report.findings if f.code == code]


def outputs(base, adapter):
    model = transformers.AutoModelForImageTextToText.from_pretrained(base.path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        return model(**tiny_inputs(base)).logits


def edit(src: Path, dst: Path, fn) -> Path:
    shutil.copytree(src, dst)
    state = load_file(dst / "adapter_model.safetensors")
    save_file(fn(state), dst / "adapter_model.safetensors")
    return dst


def test_good_adapter_is_clean_and_changes_outputs(world):
    base, good, base_logits = world
    report = check(good, base)
    assert report.ok
    assert not [f for f in report.findings if f.code in ("ADP019", "ADP020", "ADP021", "ADP014", "ADP015")]
    assert not torch.allclose(outputs(base, good), base_logits)


def test_missing_weights(world, tmp_path):
    base, good, _ = world
    bad = tmp_path / "noweights"
    shutil.copytree(good, bad)
    (bad / "adapter_model.safetensors").unlink()
    [f] = only(check(bad, base), "ADP014")
    assert "no adapter_model" in f.message
    with pytest.raises((ValueError, OSError)):
        outputs(base, bad)


def test_empty_state_dict_bin_is_a_silent_no_op(world, tmp_path):
    base, good, base_logits = world
    bad = tmp_path / "empty"
    shutil.copytree(good, bad)
    (bad / "adapter_model.safetensors").unlink()
    torch.save({}, bad / "adapter_model.bin")
    assert (bad / "adapter_model.bin").stat().st_size < 2048   # the "443-byte adapter_model.bin"
    [f] = only(check(bad, base), "ADP014")
    assert "holds no tensors" in f.message
    assert torch.allclose(outputs(base, bad), base_logits)


def test_truncated_safetensors_is_unreadable(world, tmp_path):
    base, good, _ = world
    bad = tmp_path / "trunc"
    shutil.copytree(good, bad)
    data = (bad / "adapter_model.safetensors").read_bytes()
    (bad / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    [f] = only(check(bad, base), "ADP014")
    assert "cannot be read" in f.message


def test_zero3_empty_tensors(world, tmp_path):
    base, good, _ = world
    bad = edit(good, tmp_path / "zero3", lambda s: {k: torch.empty(0, dtype=v.dtype) for k, v in s.items()})
    [f] = only(check(bad, base), "ADP015")
    assert "4 of 4" in f.message or "8 of 8" in f.message
    with pytest.raises(RuntimeError, match="size mismatch"):
        outputs(base, bad)


def test_rank_in_config_disagrees_with_tensors(world, tmp_path):
    base, good, _ = world
    bad = tmp_path / "rank"
    shutil.copytree(good, bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg["r"] = 8
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    report = check(bad, base, fix=True)
    [f] = only(report, "ADP017")
    assert "rank [4]" in f.message and f.fix.params == {"set": {"r": 4}}
    with pytest.raises(RuntimeError, match="size mismatch"):
        outputs(base, bad)
    assert torch.equal(outputs(base, tmp_path / "rank.fixed"), outputs(base, good))


def test_integer_tensors(world, tmp_path):
    base, good, _ = world
    bad = edit(good, tmp_path / "int", lambda s: {k: (v * 100).to(torch.int8) if "lora_A" in k else v for k, v in s.items()})
    assert only(check(bad, base), "ADP018")


def test_nan_in_lora_b(world, tmp_path):
    base, _, _ = world
    bad = make_lora_adapter(base, tmp_path / "nan", nan=True)
    [f] = only(check(bad, base), "ADP019")
    assert "1 NaN/Inf" in f.message and "lora_B" in f.location.tensor
    assert torch.isnan(outputs(base, bad)).any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_nan_scan_reads_half_precision_bits(world, tmp_path, dtype):
    base, good, _ = world

    def poison(state):
        out = {k: v.to(dtype) for k, v in state.items()}
        key = next(k for k in out if "lora_A" in k)
        out[key][0, 1] = float("inf")
        return out

    bad = edit(good, tmp_path / "half", poison)
    [f] = only(check(bad, base), "ADP019")
    assert "1 NaN/Inf" in f.message


def test_untrained_adapter_does_nothing(world, tmp_path):
    base, _, base_logits = world
    bad = make_lora_adapter(base, tmp_path / "zero", zero_lora_b=True)
    [f] = only(check(bad, base), "ADP020")
    assert f.severity.value == "error" and "all 4 lora_B" in f.message
    assert torch.allclose(outputs(base, bad), base_logits)


def test_tiny_deltas_warn(world, tmp_path):
    base, good, base_logits = world
    tiny = edit(good, tmp_path / "tiny", lambda s: {k: v * 1e-6 if "lora_B" in k else v for k, v in s.items()})
    [f] = only(check(tiny, base), "ADP021")
    assert f.severity.value == "warning"
    assert (outputs(base, tiny) - base_logits).abs().max() < 1e-4   # invisible in the outputs
    assert not only(check(good, base), "ADP021")


def test_bin_adapter_read_through_the_safe_reader(world, tmp_path):
    base, _, base_logits = world
    adapter = make_lora_adapter(base, tmp_path / "bin", save_format="bin")
    assert (adapter / "adapter_model.bin").is_file()
    report = check(adapter, base)
    assert report.ok and not only(report, "ADP014")
    assert any(r.code == "ADP019" and r.status.value == "pass" for r in report.results)
    assert not torch.allclose(outputs(base, adapter), base_logits)


def test_above_the_budget_values_are_sampled_and_said_so(world, tmp_path, monkeypatch):
    from doctor.checks.adapter.rules import values

    base, good, _ = world
    assert not only(check(good, base), "ADP022")  # the twin: under the budget, every value is read

    def poison_a(state):  # an Inf in a lora_A the sample skips (index 1 of the float tensors)
        out = dict(state)
        key = sorted(k for k in out if "lora_A" in k)[-1]
        out[key] = out[key].clone()
        out[key][0, 0] = float("inf")
        return out

    bad = edit(good, tmp_path / "inf", poison_a)
    assert only(check(bad, base), "ADP019")
    monkeypatch.setattr(values, "FULL_SCAN_BYTES", 1)
    report = check(bad, base)
    [note] = only(report, "ADP022")
    assert note.severity.value == "info" and "--deep reads" in note.message and "bytes" in note.message
    deep = check(bad, base, deep=True)
    assert only(deep, "ADP019") and not only(deep, "ADP022")
