"""ADP005, ADP008-ADP013, ADP016: target_modules and saved keys against the base's module
names (read from tensor headers), checked against what the real peft 0.21 + transformers 5 do:
the prediction of how many saved LoRA modules land is compared with a real
``PeftModel.from_pretrained`` (a saved ``lora_A`` that lands is found bit-for-bit in the model)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

import doctor
from doctor import layouts
from doctor.testing import make_llava_model, make_text_model
from doctor.testing.adapters import make_lora_adapter
from doctor.testing.models import tiny_inputs

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("adp_targets")
    base = make_llava_model(root / "base", family="llava")
    bare = make_lora_adapter(base, root / "bare", target_modules=["q_proj", "v_proj"])
    lang = make_lora_adapter(base, root / "lang")  # regex limited to the language model
    return base, bare, lang, root


def check(path, base=None, **kw):
    report = doctor.check(str(path), select=["ADP"], base=str(base.path) if base else None, **kw)
    assert not report.internal_errors, report.internal_errors
    return report


def only(report, code):
    return [f for f in report.findings if f.code == code]


def rewrite(src: Path, dst: Path, key_fn=None, **config) -> Path:
    """A copy of an adapter with renamed tensor keys and/or config changes."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    if key_fn is not None:
        state = load_file(dst / "adapter_model.safetensors")
        save_file({key_fn(k): v for k, v in state.items()}, dst / "adapter_model.safetensors")
    if config:
        cfg = json.loads((dst / "adapter_config.json").read_text())
        cfg.update(config)
        (dst / "adapter_config.json").write_text(json.dumps(cfg))
    return dst


def load_peft(base, adapter):
    model = transformers.AutoModelForImageTextToText.from_pretrained(base.path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.PeftModel.from_pretrained(model, str(adapter))


def landed(base, adapter) -> tuple[int, int]:
    """(saved lora_A tensors found in the loaded model, saved lora_A tensors)."""
    from safetensors.torch import load_file

    saved = [v for k, v in load_file(Path(adapter) / "adapter_model.safetensors").items() if ".lora_A" in k]
    params = [p.data for n, p in load_peft(base, adapter).named_parameters() if ".lora_A" in n]
    return sum(any(p.shape == v.shape and torch.equal(p, v) for p in params) for v in saved), len(saved)


def logits(base, adapter=None):
    if adapter is None:
        model = transformers.AutoModelForImageTextToText.from_pretrained(base.path)
    else:
        model = load_peft(base, adapter)
    with torch.no_grad():
        return model(**tiny_inputs(base)).logits


def test_clean_adapter_lands_fully_and_changes_outputs(world):
    base, _, lang, _ = world
    report = check(lang, base)
    assert report.ok and not only(report, "ADP016") and not only(report, "ADP010")
    assert landed(base, lang) == (4, 4)
    assert not torch.allclose(logits(base, lang), logits(base))


def test_bare_names_adapt_the_vision_tower(world):
    base, bare, _, _ = world
    [f] = only(check(bare, base), "ADP010")
    assert "vision-tower" in f.message and "language_model" in f.hint
    wrapped = [n for n, _ in load_peft(base, bare).named_modules() if n.endswith("lora_A")]
    assert any("vision_tower" in n for n in wrapped)  # peft really adapts CLIP's q_proj / v_proj


def test_all_stale_qualified_targets_error_with_rename_fix(world, tmp_path):
    base, _, lang, _ = world
    legacy = ["language_model.model.layers.0.self_attn.q_proj", "language_model.model.layers.1.self_attn.q_proj"]
    stale = rewrite(lang, tmp_path / "stale", target_modules=legacy)
    report = check(stale, base, fix=True)
    [f] = only(report, "ADP008")
    assert "matches no module" in f.message and f.fix is not None
    with pytest.raises(ValueError, match="not found in the base model"):
        load_peft(base, stale)
    fixed = tmp_path / "stale.fixed"
    assert json.loads((fixed / "adapter_config.json").read_text())["target_modules"] == [
        "model.language_model.layers.0.self_attn.q_proj", "model.language_model.layers.1.self_attn.q_proj"]
    assert landed(base, fixed) == (2, 4)   # the two q_proj the config now names
    assert not only(check(fixed, base), "ADP008")


def test_partly_stale_targets_warn_and_silently_lose_modules(world, tmp_path):
    base, _, lang, _ = world
    stale = rewrite(lang, tmp_path / "part", target_modules=["language_model.model.layers.0.self_attn.q_proj", "v_proj"])
    report = check(stale, base)
    [f] = only(report, "ADP009")
    assert "1 of 2" in f.message and f.fix is not None
    [dropped] = only(report, "ADP016")
    assert dropped.message.startswith("2 of 4")
    assert landed(base, stale) == (2, 4)   # peft really loads only v_proj


def test_original_llava_keys_on_hf_llava_are_dropped_and_renamed_by_fix(world, tmp_path):
    base, _, lang, _ = world
    orig = rewrite(lang, tmp_path / "orig", key_fn=lambda k: layouts.map_name(k, layouts.ORIGINAL))
    report = check(orig, base, fix=True)
    [f] = only(report, "ADP016")
    assert f.severity.value == "error" and f.message.startswith("4 of 4")
    assert landed(base, orig) == (0, 4)
    assert torch.allclose(logits(base, orig), logits(base))  # silently no effect
    fixed = tmp_path / "orig.fixed"
    assert landed(base, fixed) == (4, 4)
    assert torch.equal(logits(base, fixed), logits(base, lang))


def test_legacy_keys_are_converted_by_peft_itself(world, tmp_path):
    base, bare, _, _ = world
    legacy = rewrite(bare, tmp_path / "legacy", key_fn=lambda k: layouts.map_name(k, layouts.HF_LEGACY))
    assert not only(check(legacy, base), "ADP016")
    assert landed(base, legacy) == (8, 8)   # vision keys included
    # an older peft on transformers 5 does not rename them (peft < 0.19): predicted dropped
    [f] = only(check(legacy, base, peft_version="0.17.1"), "ADP016")
    assert f.message.startswith("8 of 8")


def test_modern_keys_on_transformers_4x_are_dropped(world, tmp_path):
    base, _, lang, _ = world
    # judged for transformers 4.45 (legacy module tree): nothing renames 5.x keys back
    report = check(lang, base, transformers_version="4.45.2")
    [f] = only(report, "ADP016")
    assert f.message.startswith("4 of 4") and f.fix is not None


def test_modules_to_save_missing(world, tmp_path):
    base, _, lang, _ = world
    bad = rewrite(lang, tmp_path / "mts", modules_to_save=["lm_head"])
    [f] = only(check(bad, base), "ADP011")
    assert "'lm_head'" in f.message
    with pytest.raises(KeyError, match="lm_head"):
        load_peft(base, bad)


def test_pattern_unmatched(world, tmp_path):
    base, _, lang, _ = world
    bad = rewrite(lang, tmp_path / "pat", rank_pattern={"language_model.model.layers.0.self_attn.q_proj": 4})
    [f] = only(check(bad, base), "ADP005")
    assert "matches none" in f.message


def test_adapter_for_a_wider_base(world, tmp_path):
    base, _, _, root = world
    wide = make_llava_model(tmp_path / "wide", family="llava", hidden=48)
    adapter = make_lora_adapter(wide, tmp_path / "wide_adapter")
    [f] = only(check(adapter, base), "ADP013")
    assert "hidden size 32" in f.message and "48" in f.message
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_peft(base, adapter)


def test_base_resolution_folder_cache_and_missing(world, tmp_path, monkeypatch):
    base, _, lang, _ = world
    away = rewrite(lang, tmp_path / "away", base_model_name_or_path="acme/vicuna-tiny")
    [f] = only(check(away), "ADP012")
    assert "acme/vicuna-tiny" in f.message
    assert all(r.status.value == "skip" for r in check(away).results if r.code in ("ADP008", "ADP013"))
    # the local Hugging Face cache layout: models--org--name/snapshots/<rev>/ with refs/main
    cache = tmp_path / "hub"
    snap = cache / "models--acme--vicuna-tiny" / "snapshots" / "abc123"
    shutil.copytree(base.path, snap)
    (cache / "models--acme--vicuna-tiny" / "refs").mkdir()
    (cache / "models--acme--vicuna-tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    report = check(away)
    assert not only(report, "ADP012")
    assert any(r.code == "ADP008" and r.status.value == "pass" for r in report.results)


@pytest.fixture(scope="module")
def text_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("adp_text")
    base = make_text_model(root / "vicuna-tiny")
    return base, make_lora_adapter(base, root / "adapter")


@pytest.mark.parametrize("recorded", ["/nonexistent/ckpt/vicuna-tiny", "../gone/vicuna-tiny", "~/no-such-dir/vicuna-tiny"])
def test_recorded_local_base_missing_is_reported_even_with_base(text_world, tmp_path, recorded):
    base, lang = text_world
    adapter = rewrite(lang, tmp_path / "adapter", base_model_name_or_path=recorded)
    # the real failure: AutoPeftModel on the adapter alone loads the recorded base
    with pytest.raises((OSError, ValueError)):
        peft.AutoPeftModelForCausalLM.from_pretrained(str(adapter))
    [f] = only(check(adapter, base), "ADP012")
    assert f.severity.value == "warning" and recorded in f.message and "AutoPeftModel" in f.message
    assert f.location.key == "base_model_name_or_path"
    assert f.fix is not None and f.fix.applicability.value == "safe"
    report = check(adapter, base, fix=True)
    fixed = tmp_path / "adapter.fixed"
    assert [o.written for o in report.fixes] == [[str(fixed)]]
    cfg = json.loads((fixed / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(Path(base.path).resolve())
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == recorded  # input untouched
    assert not only(check(fixed, base), "ADP012")  # the twin: the recorded base now exists
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert peft.AutoPeftModelForCausalLM.from_pretrained(str(fixed)) is not None


def test_existing_or_hub_base_with_base_is_clean(text_world, tmp_path):
    base, lang = text_world
    assert not only(check(lang, base), "ADP012")  # recorded: the base folder itself
    hub = rewrite(lang, tmp_path / "hub", base_model_name_or_path="acme/vicuna-tiny")
    assert not only(check(hub, base), "ADP012")  # a hub id is not a local path: --base stands in for it


def test_text_base_with_original_llava_adapter(tmp_path):
    # finetune_lora.sh: LoRA trained on vicuna (a plain causal LM): model.layers... both sides
    vicuna = make_text_model(tmp_path / "vicuna")
    adapter = make_lora_adapter(vicuna, tmp_path / "llava-lora")
    report = check(adapter, vicuna)
    assert report.ok and not only(report, "ADP016")


def test_checking_reads_headers_only(world, tmp_path):
    """No model is built and torch, transformers and peft are never imported for a check of
    adapter + base (ADP006 reads peft's LoraConfig fields from its installed source)."""
    import subprocess
    import sys

    base, _, lang, _ = world
    code = (
        "import sys, doctor\n"
        "from doctor import registry\n"
        "registry.FAMILIES = {k: v for k, v in registry.FAMILIES.items() if k in ('DOC', 'ADP')}\n"
        f"r = doctor.check({str(lang)!r}, base={str(base.path)!r}, select=['ADP'])\n"
        "assert not r.internal_errors, r.internal_errors\n"
        "assert any(x.code == 'ADP021' and x.status.value == 'pass' for x in r.results)\n"
        "assert any(x.code == 'ADP006' and x.status.value == 'pass' for x in r.results)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("changes", [
    {"target_modules": 5}, {"target_modules": "("}, {"target_modules": ["q_proj", 3]},
    {"rank_pattern": {"(": 4}}, {"rank_pattern": [1]}, {"alpha_pattern": {"q_proj": "x"}},
    {"layers_to_transform": "x"}, {"layers_to_transform": [0], "layers_pattern": "("},
    {"r": "8"}, {"lora_alpha": None}, {"modules_to_save": "lm_head"}, {"exclude_modules": "("},
    {"target_modules": None}, {"use_rslora": True, "r": 0}, {"base_model_name_or_path": 7},
    {"target_modules": "all-linear"}, {"exclude_modules": ["q_proj"]},
])
def test_bad_config_values_never_crash(world, tmp_path, changes):
    base, _, lang, _ = world
    bad = rewrite(lang, tmp_path / "bad", **changes)
    report = check(bad, base)   # asserts no DOC001 internal error
    assert report.results


@pytest.mark.parametrize("config", [
    {"target_modules": "all-linear"},   # every Linear but lm_head: vision tower and projector too
    {"target_modules": ["q_proj", "fc1", "linear_2"]},
    {"target_modules": r".*language_model.*\.(q_proj|down_proj)"},
    {"target_modules": ["q_proj", "v_proj"], "layers_to_transform": [1], "layers_pattern": "layers"},
    {"target_modules": ["q_proj", "v_proj", "fc2"], "exclude_modules": ["v_proj"]},
    {"target_modules": "all-linear", "modules_to_save": ["multi_modal_projector"]},
])
def test_target_resolution_matches_peft(world, config):
    """Modules resolved from tensor headers == modules the real get_peft_model wraps."""
    from doctor.checks.adapter.reading import load_base
    from doctor.checks.adapter.targets import resolve

    base, _, _, _ = world
    ours = set(resolve(config, load_base(base.path, transformers.__version__)).matched)
    model = transformers.AutoModelForImageTextToText.from_pretrained(base.path)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, **config))
    theirs = {n.removeprefix("base_model.model.") for n, m in wrapped.named_modules()
              if hasattr(m, "lora_A") and "modules_to_save" not in n and "original_module" not in n}
    assert ours == theirs and ours
    if config["target_modules"] == "all-linear":
        assert any("vision_tower" in n for n in ours) and "lm_head" not in ours


@pytest.mark.parametrize("family", ["llava_next", "mllama"])
def test_other_families_resolve_and_land_like_peft(tmp_path, family):
    from doctor.checks.adapter.reading import load_base
    from doctor.checks.adapter.targets import resolve

    base = make_llava_model(tmp_path / "base", family=family)
    config = {"target_modules": "all-linear"}
    ours = set(resolve(config, load_base(base.path, transformers.__version__)).matched)
    model = transformers.AutoModelForImageTextToText.from_pretrained(base.path)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, **config))
    theirs = {n.removeprefix("base_model.model.") for n, m in wrapped.named_modules() if hasattr(m, "lora_A")}
    assert ours == theirs
    # an adapter saved with transformers 4.x names on this family: peft renames, we predict it
    adapter = make_lora_adapter(base, tmp_path / "bare", target_modules=["q_proj", "v_proj"])
    legacy = rewrite(adapter, tmp_path / "legacy", key_fn=lambda k: layouts.map_name(k, layouts.HF_LEGACY))
    report = check(legacy, base, fix=True)
    found, total = landed(base, legacy)
    dropped = only(report, "ADP016")
    if family == "llava_next":
        assert not dropped and found == total > 0
    else:  # peft 0.21 leaves mllama's legacy vision_model.* keys unrenamed: they are dropped
        assert dropped and dropped[0].message.startswith(f"{(total - found)} of {total}")
        assert landed(base, tmp_path / "legacy.fixed") == (total, total)
