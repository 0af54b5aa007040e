"""XTN: XTuner LLaVA releases. Failing cases are confirmed with the real loaders: peft 0.21 on
the transformers 5 CLIPVisionModel for the vision LoRA, and the projector's nn.Sequential (as
xtuner's ProjectorModel builds it from config.json) for its weights. The release's remote code is
never executed."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

import doctor
from doctor.testing.xtuner import make_xtuner_release

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    root = tmp_path_factory.mktemp("xtn")
    native = make_xtuner_release(root / "a", vision_key_layout="native")
    v4 = make_xtuner_release(root / "b", vision_key_layout="v4")
    return native, v4


def check(path, **kw):
    report = doctor.check(str(path), select=["XTN"], **kw)
    assert not report.internal_errors, report.internal_errors
    return report


def codes(report, severity=None):
    return sorted({f.code for f in report.findings if severity is None or f.severity.value == severity})


def vision_lora(info) -> tuple[int, int, bool]:
    """(saved lora_A found in the model, saved lora_A, outputs changed) for the real peft load."""
    from safetensors.torch import load_file

    tower = transformers.CLIPVisionModel.from_pretrained(info.visual_encoder_dir)
    pixels = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = tower(pixel_values=pixels).last_hidden_state
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = peft.PeftModel.from_pretrained(tower, str(info.visual_encoder_adapter))
        out = model(pixel_values=pixels).last_hidden_state
    saved = [v for k, v in load_file(info.visual_encoder_adapter / "adapter_model.safetensors").items() if "lora_A" in k]
    params = [p.data for n, p in model.named_parameters() if "lora_A" in n]
    found = sum(any(p.shape == v.shape and torch.equal(p, v) for p in params) for v in saved)
    return found, len(saved), not torch.allclose(out, ref)


def projector_load(info, folder: Path) -> None:
    """xtuner's ProjectorModel: Linear(visual, llm), then (act, Linear(llm, llm)) x (depth-1)."""
    cfg = json.loads((folder / "config.json").read_text())
    layers = [torch.nn.Linear(cfg["visual_hidden_size"], cfg["llm_hidden_size"], bias=cfg.get("bias", True))]
    for _ in range(1, cfg["depth"]):
        layers += [torch.nn.GELU(), torch.nn.Linear(cfg["llm_hidden_size"], cfg["llm_hidden_size"])]
    holder = torch.nn.Module()
    holder.model = torch.nn.Sequential(*layers)
    from safetensors.torch import load_file

    holder.load_state_dict(load_file(folder / "model.safetensors"), strict=True)


def test_clean_release_only_offers_consolidation(releases):
    native, _ = releases
    report = check(native.path)
    assert codes(report) == ["XTN005"] and report.ok
    [f] = report.findings
    assert f.fix.fixer == "merge"
    found, total, changed = vision_lora(native)
    assert found == total and changed
    projector_load(native, native.projector)


def test_v4_vision_lora_keys_do_nothing_on_transformers_5(releases):
    _, v4 = releases
    [f] = [f for f in check(v4.path).findings if f.code == "XTN004"]
    assert "visual_encoder_adapter" in f.message and f.severity.value == "error"
    found, total, changed = vision_lora(v4)
    assert found == 0 and total > 0 and not changed
    # judged for transformers 4.x (CLIPVisionModel has vision_model there): they land
    assert "XTN004" not in codes(check(v4.path, transformers_version="4.36.2"))


def test_missing_projector(releases, tmp_path):
    native, _ = releases
    bad = tmp_path / "rel"
    shutil.copytree(native.path, bad)
    shutil.rmtree(bad / "projector")
    assert "XTN001" in codes(check(bad), "error")


def test_projector_config_disagrees_with_weights(releases, tmp_path):
    native, _ = releases
    bad = tmp_path / "rel"
    shutil.copytree(native.path, bad)
    cfg = json.loads((bad / "projector" / "config.json").read_text())
    cfg["llm_hidden_size"] = 48
    (bad / "projector" / "config.json").write_text(json.dumps(cfg))
    found = [f for f in check(bad).findings if f.code == "XTN003"]
    assert any("model.0.weight" in f.message for f in found)
    assert any("llm_adapter" in f.message for f in found)
    with pytest.raises(RuntimeError, match="size mismatch"):
        projector_load(native, bad / "projector")


def test_projector_depth(releases, tmp_path):
    native, _ = releases
    bad = tmp_path / "rel"
    shutil.copytree(native.path, bad)
    cfg = json.loads((bad / "projector" / "config.json").read_text())
    cfg["depth"] = 3
    (bad / "projector" / "config.json").write_text(json.dumps(cfg))
    assert any("depth is 3" in f.message for f in check(bad).findings)
    with pytest.raises(RuntimeError, match="Missing key"):
        projector_load(native, bad / "projector")


def test_projector_from_another_vision_encoder(tmp_path):
    other = make_xtuner_release(tmp_path / "o", visual_hidden=48, vision_key_layout="native")
    mixed = tmp_path / "mixed"
    shutil.copytree(other.path, mixed)
    donor = make_xtuner_release(tmp_path / "d", vision_key_layout="native")
    shutil.rmtree(mixed / "visual_encoder_adapter")
    shutil.copytree(donor.visual_encoder_adapter, mixed / "visual_encoder_adapter")
    assert any("visual_hidden_size" in f.message for f in check(mixed).findings if f.code == "XTN003")


def test_missing_remote_code_and_weights(tmp_path):
    info = make_xtuner_release(tmp_path, with_code=False, vision_key_layout="native")
    found = [f for f in check(info.path).findings if f.code == "XTN002"]
    assert any("modeling_projector.py is missing" in f.message for f in found)
    with pytest.raises((OSError, ValueError)):
        transformers.AutoConfig.from_pretrained(info.projector, trust_remote_code=True)
    (info.llm_adapter / "adapter_model.safetensors").unlink()
    assert any("llm_adapter/ has no weights" in f.message for f in check(info.path).findings)
