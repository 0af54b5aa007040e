"""LLV: original-LLaVA outputs. The LLaVA package is not installed, so its loading logic is
replayed with real torch / transformers / peft where it matters: the builder's
``model.load_state_dict(non_lora_trainables, strict=False)`` into a projector built as
``build_vision_projector`` builds it, ``LlavaConfig.from_pretrained(model_path)`` (a
``PretrainedConfig``), and ``PeftModel.from_pretrained`` on the base's LM tree (identical in
``LlavaLlamaForCausalLM`` and ``LlamaForCausalLM``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from pathlib import Path

import pytest

from doctor.checks.llava.builder import builder_branch, model_name_from_path, normalise_non_lora

import doctor
from doctor.testing.original import make_llava_original_lora, make_llava_original_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("llv")
    return make_llava_original_lora(root), root


def check(path, **kw):
    report = doctor.check(str(path), select=["LLV"], **kw)
    assert not report.internal_errors, report.internal_errors
    return report


def codes(report):
    return sorted({f.code for f in report.findings})


def copy(info, dst: Path, **config) -> Path:
    shutil.copytree(info.path, dst)
    if config:
        cfg = json.loads((dst / "config.json").read_text())
        cfg.update(config)
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def replay_projector_load(folder: Path, config: dict) -> tuple[list[str], bool]:
    """builder.py's LoRA branch for the projector: build it from config (LLaVA's
    build_vision_projector), then load non_lora_trainables with strict=False. Returns the
    missing projector keys and whether the projector now holds the saved values."""
    hidden, mm_hidden, ptype = config["hidden_size"], config["mm_hidden_size"], config.get("mm_projector_type", "linear")
    if ptype == "linear":
        proj = torch.nn.Linear(mm_hidden, hidden)
    else:
        depth = int(re.fullmatch(r"mlp(\d+)x_gelu", ptype).group(1))
        layers = [torch.nn.Linear(mm_hidden, hidden)]
        for _ in range(1, depth):
            layers += [torch.nn.GELU(), torch.nn.Linear(hidden, hidden)]
        proj = torch.nn.Sequential(*layers)
    holder = torch.nn.Module()
    holder.model = torch.nn.Module()
    holder.model.mm_projector = proj
    saved = normalise_non_lora(torch.load(folder / "non_lora_trainables.bin", weights_only=True))
    result = holder.load_state_dict(saved, strict=False)
    missing = [k for k in result.missing_keys if "mm_projector" in k]
    loaded = all(torch.equal(holder.state_dict()[k].to(v.dtype), v) for k, v in saved.items() if k in holder.state_dict())
    return missing, loaded and not missing


def test_clean_lora_output(run):
    info, _ = run
    report = check(info.path, base=str(info.base_dir))
    # only the information that transformers itself cannot load it (the merge fixes that)
    assert [f.code for f in report.findings] == ["LLV009"], [f.message for f in report.findings]
    assert report.findings[0].fix.fixer == "merge" and report.findings[0].severity.value == "info"
    assert builder_branch(str(info.path), has_model_base=True).name == "lora-merge"
    missing, loaded = replay_projector_load(info.path, info.config)
    assert not missing and loaded
    # the LoRA itself loads on the vicuna base and changes it (LlavaLlama's LM tree == Llama's)
    from peft import PeftModel

    base = transformers.AutoModelForCausalLM.from_pretrained(info.base_dir)
    ids = torch.tensor([[1, 5, 9, 14]])
    with torch.no_grad():
        ref = base(ids).logits
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = PeftModel.from_pretrained(base, str(info.path))(ids).logits
    assert not torch.allclose(out, ref)


def test_missing_non_lora_trainables(tmp_path):
    info = make_llava_original_lora(tmp_path, with_non_lora=False)
    [f] = [f for f in check(info.path).findings if f.code == "LLV002"]
    assert "random" in f.message


def test_missing_config_json(run, tmp_path):
    info, _ = run
    bad = copy(info, tmp_path / "llava-lora-ckpt")
    (bad / "config.json").unlink()
    assert "LLV001" in codes(check(bad))
    # LlavaConfig (a LlamaConfig) from the LoRA folder: transformers 4.37.2 (LLaVA's pin) raises
    # OSError "does not appear to have a file named config.json"; transformers 5 silently returns
    # defaults, without any mm_* field: the vision side is gone either way.
    try:
        cfg = transformers.LlamaConfig.from_pretrained(bad)
    except OSError as e:
        assert "config.json" in str(e)
    else:
        assert not hasattr(cfg, "mm_vision_tower") and cfg.hidden_size != info.hidden_size


def test_linear_file_under_mlp2x_config_leaves_projector_random(tmp_path):
    info = make_llava_original_lora(tmp_path, projector_type="linear")
    bad = copy(info, tmp_path / "llava-mlp-lora", mm_projector_type="mlp2x_gelu")
    [f] = [f for f in check(bad).findings if f.code == "LLV003"]
    assert "stays random" in f.message and "'linear'" in f.hint
    cfg = json.loads((bad / "config.json").read_text())
    missing, loaded = replay_projector_load(bad, cfg)
    assert missing and not loaded   # LLaVA's strict=False load silently skips them


def test_projector_shape_mismatch_raises(run, tmp_path):
    info, _ = run
    bad = copy(info, tmp_path / "llava-wide-lora", mm_hidden_size=48)
    found = [f for f in check(bad).findings if f.code == "LLV003"]
    assert found and "size mismatch" in found[0].message
    with pytest.raises(RuntimeError, match="size mismatch"):
        replay_projector_load(bad, json.loads((bad / "config.json").read_text()))


@pytest.mark.parametrize(("name", "branch"), [("run3", "peft-causal-lm"), ("llava-v1.5-tiny", "projector-only")])
def test_folder_name_routes_to_the_wrong_branch(run, tmp_path, name, branch):
    info, _ = run
    bad = copy(info, tmp_path / name)
    [f] = [f for f in check(bad).findings if f.code == "LLV006"]
    assert branch in f.message and f.fix.fixer == "merge"
    assert builder_branch(str(bad), has_model_base=True).name == branch


def test_checkpoint_folder_names():
    assert model_name_from_path("/x/llava-v1.5-lora/checkpoint-6000/") == "llava-v1.5-lora_checkpoint-6000"
    assert builder_branch("/x/llava-v1.5-lora/checkpoint-6000", True).name == "lora-merge"
    assert builder_branch("/x/run/checkpoint-6000", True).name == "peft-causal-lm"


def test_mistral_lora_is_forced_into_llama(tmp_path):
    info = make_llava_original_lora(tmp_path, model_type="llava_mistral", folder_name="llava-mistral-tiny-lora")
    [f] = [f for f in check(info.path).findings if f.code == "LLV007"]
    assert "LlavaLlamaForCausalLM" in f.message and f.fix.fixer == "merge"


def test_model_base_mismatch(run, tmp_path):
    info, _ = run
    from doctor.testing import make_text_model

    other = make_text_model(tmp_path / "vicuna-wide", hidden=48)
    [f] = [f for f in check(info.path, base=str(other.path)).findings if f.code == "LLV008"]
    assert "hidden_size 48 vs 32" in f.message and str(info.base_dir) in f.hint


def test_extras_from_another_run(run, tmp_path):
    info, _ = run
    bad = copy(info, tmp_path / "llava-old-lora")
    old = time.time() - 3 * 86400
    os.utime(bad / "non_lora_trainables.bin", (old, old))
    [f] = [f for f in check(bad).findings if f.code == "LLV004"]
    assert "non_lora_trainables.bin" in f.message and "72.0 h" in f.message
    bad2 = copy(info, tmp_path / "llava-other-lora", hidden_size=64)
    assert any(f.code == "LLV004" and f.severity.value == "error" for f in check(bad2).findings)


def test_image_start_end_tokens_without_embeddings(run, tmp_path):
    info, _ = run
    bad = copy(info, tmp_path / "llava-se-lora", mm_use_im_start_end=True)
    assert "LLV005" in codes(check(bad))


def test_full_original_checkpoint(tmp_path):
    good = make_llava_original_model(tmp_path)
    assert not check(good.path).findings
    mistral = make_llava_original_model(tmp_path, model_type="llava_mistral", folder_name="llava-v1.6-tiny")
    [f] = [f for f in check(mistral.path).findings if f.code == "LLV006"]
    assert "LlavaMistralForCausalLM" in f.message
    linear = make_llava_original_model(tmp_path, projector_type="linear", folder_name="llava-lin")
    cfg = json.loads((linear.path / "config.json").read_text())
    cfg["mm_projector_type"] = "mlp2x_gelu"
    (linear.path / "config.json").write_text(json.dumps(cfg))
    assert "LLV003" in codes(check(linear.path))
