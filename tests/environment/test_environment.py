"""ENV checks against simulated environments (the probe is replaced; the rules are real)."""

from __future__ import annotations

import json

import pytest

import doctor
from doctor.envprobe import Environment, probe


def fake_env(**versions):
    base = {"torch": "2.5.1+cu121", "transformers": "4.46.0", "peft": "0.13.2", "tokenizers": "0.20.3",
            "accelerate": "1.0.1", "bitsandbytes": None, "safetensors": "0.4.5"}
    base.update(versions)
    return Environment(python="3.11", platform="Linux", versions=base, gpus=[], torch_cuda="cu121")


@pytest.fixture
def use_env(monkeypatch):
    def use(env):
        monkeypatch.setattr("doctor.checks.environment.probe", lambda: env)
    return use


def llava_output(tmp_path, with_bin=True):
    out = tmp_path / "llava-v1.5-7b-lora"
    out.mkdir(exist_ok=True)
    (out / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}))
    (out / "config.json").write_text(json.dumps({"model_type": "llava_llama", "mm_projector_type": "mlp2x_gelu", "transformers_version": "4.37.2"}))
    if with_bin:
        (out / "non_lora_trainables.bin").write_bytes(b"PK\x03\x04")
    return str(out)


def codes(report, prefix="ENV"):
    return sorted(f.code for f in report.findings if f.code.startswith(prefix))


def test_real_probe_reads_metadata():
    env = probe()
    assert env.versions["torch"] and env.versions["transformers"]
    assert isinstance(env.to_dict()["packages"], dict)


def test_probe_imports_nothing_heavy():
    import subprocess
    import sys

    code = "import sys; from doctor.envprobe import probe; probe(); print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_llava_pins_and_v5(tmp_path, use_env):
    use_env(fake_env(transformers="5.2.0", tokenizers="0.22.1", torch="2.6.0"))
    report = doctor.check(llava_output(tmp_path), select=["ENV001", "ENV002"])
    found = codes(report)
    assert "ENV002" in found and found.count("ENV001") >= 2
    msg = next(f for f in report.findings if f.code == "ENV001" and f.location.key == "transformers")
    assert "4.37.2" in msg.message and msg.severity.value == "warning"


def test_pins_match_gives_nothing(tmp_path, use_env):
    use_env(fake_env(transformers="4.37.2", tokenizers="0.15.1", torch="2.1.2", accelerate="0.21.0"))
    report = doctor.check(llava_output(tmp_path, with_bin=False), select=["ENV001", "ENV002", "ENV003"])
    assert codes(report) == []


def test_torch_load_gate(tmp_path, use_env):
    use_env(fake_env(torch="2.5.1", transformers="4.53.0"))
    report = doctor.check(llava_output(tmp_path), select=["ENV003"])
    (f,) = [f for f in report.findings if f.code == "ENV003"]
    assert f.severity.value == "error" and "non_lora_trainables.bin" in f.message
    use_env(fake_env(torch="2.6.0", transformers="4.53.0"))
    other = tmp_path / "second"
    other.mkdir()
    assert codes(doctor.check(llava_output(other), select=["ENV003"])) == []


def test_artifact_newer_than_library(tmp_path, use_env):
    use_env(fake_env(transformers="4.36.0"))
    report = doctor.check(llava_output(tmp_path), select=["ENV005"])
    (f,) = [f for f in report.findings if f.code == "ENV005"]
    assert f.location.key == "transformers_version" and f.path.endswith("config.json")


def test_no_cuda_for_gpu_pass(tmp_path, use_env):
    use_env(fake_env())
    report = doctor.check(llava_output(tmp_path), select=["ENV007"], sanity=True, device="cuda")
    assert codes(report) == ["ENV007"]
    report = doctor.check(llava_output(tmp_path), select=["ENV007"], sanity=False)
    assert codes(report) == []


def test_quantization_without_bitsandbytes(tmp_path, use_env):
    use_env(fake_env())
    model = tmp_path / "qmodel"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llava", "quantization_config": {"load_in_4bit": True}}))
    (model / "model.safetensors").write_bytes(b"")
    report = doctor.check(str(model), select=["ENV006"])
    (f,) = [f for f in report.findings if f.code == "ENV006"]
    assert "bitsandbytes is not installed" in f.message


def test_dependency_conflict_reads_transformers_min_peft(use_env, monkeypatch):
    use_env(fake_env(peft="0.10.0"))
    monkeypatch.setattr("doctor.checks.environment.transformers_min_peft", lambda: "0.22.0")
    monkeypatch.setattr("doctor.checks.environment.declared_requirements", lambda dist: [])
    report = doctor.check([], select=["ENV004"])
    (f,) = [f for f in report.findings if f.code == "ENV004"]
    assert "peft >= 0.22.0" in f.message and f.hint.startswith('pip install "peft>=0.22.0"')


def test_probe_errors_are_reported_not_raised(use_env):
    env = fake_env()
    env.probe_errors["transformers"] = "ValueError: broken METADATA"
    use_env(env)
    report = doctor.check([], select=["ENV008"])
    assert codes(report) == ["ENV008"]
