"""Expected tensors from config.json templates (``doctor.checks.checkpoint.templates``): for every
known family and each on-disk layout (transformers 5's save, the 4.x layout, the in-memory names)
the template's prediction equals the one from the model built on the meta device, defects included;
a template learned on a 2-layer model serves every layer count; a warm static check imports
neither torch nor transformers; anything a template cannot express falls back to the build."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from doctor.checks.checkpoint import templates
from doctor.checks.checkpoint.expected import BuildError, predict_load
from doctor.checks.checkpoint.fixtures import ModelWeights, read_model_weights

from doctor.io.safetensors_header import TensorInfo
from doctor.testing import make_llava_model
from doctor.testing import weights as _weights

FAMILIES = ("llava", "llava_next", "mllama")
LAYOUTS = ("saved", "v4", "memory")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("VLM_DOCTOR_CACHE", str(root))
    return root / "templates"


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clean")
    out = {fam: make_llava_model(root / fam, family=fam).path for fam in FAMILIES}
    out["llava-mistral"] = make_llava_model(root / "mistral", family="llava", text_arch="mistral").path
    return out


def to_layout(path: Path, layout: str) -> Path:
    if layout == "v4":  # transformers 4.x: CLIP towers under vision_tower.vision_model.
        _weights.rewrite_weights(path, _weights.rename_keys(r"^vision_tower\.(?!vision_model\.)",
                                                            "vision_tower.vision_model."))
    elif layout == "memory":  # what save_file(model.state_dict()) writes with transformers 5
        from safetensors.torch import save_file
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(path)
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        for f in _weights.weight_files(path):
            (path / f).unlink()
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def _drop_projector(s: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in s.items() if "multi_modal_projector" not in k}


def _lora_and_extra(s: dict[str, Any]) -> dict[str, Any]:
    import torch

    name = sorted(k for k in s if k.endswith("layers.0.self_attn.q_proj.weight") and "language_model" in k)[0]
    s[name.replace(".weight", ".base_layer.weight")] = s.pop(name)
    s[name.replace(".weight", ".lora_A.default.weight")] = torch.zeros(2, s[name.replace(".weight", ".base_layer.weight")].shape[1])
    s["value_head.weight"] = torch.zeros(1, 4)
    return s


def _wrong_shape(s: dict[str, Any]) -> dict[str, Any]:
    import torch

    name = sorted(k for k in s if k.endswith("embed_tokens.weight"))[0]
    s[name] = torch.zeros(s[name].shape[0] + 3, s[name].shape[1])
    return s


DEFECTS = {"clean": None, "no-projector": _drop_projector, "lora-and-extra": _lora_and_extra, "shape": _wrong_shape}


def both(path: Path) -> tuple[Any, Any]:
    """(template prediction, meta-build prediction) on the same weights."""
    weights = read_model_weights(path)
    meta = predict_load(path, weights, use_templates=False)
    cold = predict_load(path, weights)  # learns the template
    config = json.loads((path / "config.json").read_text())
    assert templates.lookup(config) is not None, "no template was stored"
    warm = predict_load(path, weights)
    assert cold == warm
    return warm, meta


@pytest.mark.parametrize("defect", sorted(DEFECTS))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", (*FAMILIES, "llava-mistral"))
def test_template_prediction_equals_the_meta_build(clean: dict[str, Path], tmp_path: Path, family: str,
                                                   layout: str, defect: str) -> None:
    model = to_layout(shutil.copytree(clean[family], tmp_path / "m"), layout)
    if DEFECTS[defect] is not None:
        _weights.rewrite_weights(model, DEFECTS[defect])
    got, want = both(model)
    assert got == want
    assert got.mapped and list(got.expected) == list(want.expected)
    assert bool(got.missing or got.unexpected or got.mismatched) == (defect != "clean")


def test_a_template_serves_every_layer_count(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = make_llava_model(tmp_path / "small", family="llava_next", text_layers=2, vision_layers=2).path
    predict_load(small, read_model_weights(small))
    stored = sorted(cache.iterdir())
    assert len(stored) == 1 and json.loads(stored[0].read_text())["generalises"] is True
    deep = make_llava_model(tmp_path / "deep", family="llava_next", text_layers=5, vision_layers=3).path

    def refuse(*_: Any) -> None:
        raise AssertionError("the template was learned again")

    monkeypatch.setattr(templates, "learn", refuse)
    weights = read_model_weights(deep)
    got = predict_load(deep, weights)
    assert got == predict_load(deep, weights, use_templates=False)
    assert "model.language_model.layers.4.mlp.down_proj.weight" in got.expected
    assert "model.vision_tower.encoder.layers.2.mlp.fc1.weight" in got.expected
    assert not got.missing and not got.unexpected


def test_layer_index_lists_are_not_generalised(tmp_path: Path, cache: Path) -> None:
    """mllama's cross_attention_layers name layer indices: its template is the exact build."""
    model = make_llava_model(tmp_path / "m", family="mllama", text_layers=3, cross_attention_layers=[1]).path
    config = json.loads((model / "config.json").read_text())
    assert ("text_config", "num_hidden_layers") not in templates.layer_fields(config)
    got, want = both(model)
    assert got == want
    edited = json.loads((model / "config.json").read_text())
    edited["text_config"]["cross_attention_layers"] = [2]
    (model / "config.json").write_text(json.dumps(edited))
    got, want = both(model)  # another structure: another template, still exact
    assert got == want and got.missing and all(re.search(r"layers\.(1\.(self_attn|mlp)|2\.cross_attn)", k) for k in got.missing)


def _fake_weights(folder: Path, shapes: dict[str, tuple[int, ...]]) -> ModelWeights:
    tensors = {k: TensorInfo(k, "F32", v, 0, 0, "model.safetensors") for k, v in shapes.items()}
    return ModelWeights(folder, "safetensors", files=["model.safetensors"], tensors=tensors)


QWEN = {
    "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", {}),
    "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", {"fullatt_block_indexes": [1]}),
}


@pytest.mark.parametrize("family", sorted(QWEN))
def test_qwen2_vl_families_from_config_alone(tmp_path: Path, family: str) -> None:
    """Families another module teaches vlm-doctor still get exact templates: both key layouts."""
    import transformers

    config_cls, arch, extra = QWEN[family]
    config = getattr(transformers, config_cls)(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "vocab_size": 400,
                     "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]}},
        vision_config={"depth": 2, "hidden_size": 32, "embed_dim": 32, "num_heads": 2, "intermediate_size": 64,
                       "out_hidden_size": 32, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                       **extra},
        architectures=[arch], bos_token_id=1, eos_token_id=2)
    folder = tmp_path / "m"
    config.save_pretrained(folder)
    full = predict_load(folder, None, use_templates=False).expected
    v5 = {k: v for k, v in full.items() if not k.endswith("lm_head.weight")}
    v4 = {k.replace("model.language_model.", "model.").replace("model.visual.", "visual."): v for k, v in full.items()}
    wrong = dict(v4)
    wrong.pop(next(k for k in v4 if k.startswith("visual.merger.")))
    wrong["model.embed_tokens.weight"] = (401, 32)
    wrong["visual.blocks.0.attn.qkv.lora_B.default.weight"] = (96, 4)
    for shapes in (v5, v4, wrong):
        weights = _fake_weights(folder, shapes)
        want = predict_load(folder, weights, use_templates=False)
        assert predict_load(folder, weights) == want == predict_load(folder, weights)
    assert templates.lookup(json.loads((folder / "config.json").read_text())) is not None
    assert want.missing and want.mismatched and want.unexpected


def test_siglip_tower(tmp_path: Path) -> None:
    model = make_llava_model(tmp_path / "m", family="llava", processor=False).path
    config = json.loads((model / "config.json").read_text())
    config["vision_config"] = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                               "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 28, "patch_size": 14}
    (model / "config.json").write_text(json.dumps(config))
    full = predict_load(model, None, use_templates=False).expected
    assert any("vision_tower.vision_model.head" in k or "post_layernorm" in k for k in full)
    for shapes in (full, {k: v for k, v in full.items() if "encoder.layers.1." not in k}):
        weights = _fake_weights(model, shapes)
        assert predict_load(model, weights) == predict_load(model, weights, use_templates=False)


def test_warm_static_check_imports_neither_torch_nor_transformers(clean: dict[str, Path], tmp_path: Path,
                                                                    cache: Path) -> None:
    models = {}
    for family in FAMILIES:
        model = shutil.copytree(clean[family], tmp_path / family)
        _weights.rewrite_weights(model, _drop_projector)
        predict_load(model, read_model_weights(model))  # warms the cache
        models[family] = str(model)
    code = (
        "import json, sys, doctor\n"
        f"out = {{}}\nfor fam, path in {models!r}.items():\n"
        "    r = doctor.check(path, select=['CKP'])\n"
        "    assert not r.internal_errors, r.internal_errors\n"
        "    out[fam] = sorted({f.code for f in r.findings})\n"
        "print(json.dumps([out, 'torch' in sys.modules, 'transformers' in sys.modules]))\n"
    )
    env = {**__import__("os").environ, "VLM_DOCTOR_CACHE": str(cache.parent)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    found, torch_loaded, transformers_loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert (torch_loaded, transformers_loaded) == (False, False), run.stderr
    for family in FAMILIES:
        assert "CKP104" in found[family], found  # the missing projector is still found


def test_cache_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VLM_DOCTOR_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert templates.cache_root() == tmp_path / "a" / "templates"
    monkeypatch.delenv("VLM_DOCTOR_CACHE")
    assert templates.cache_root() == tmp_path / "x" / "vlm-doctor" / "templates"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert templates.cache_root() == Path.home() / ".cache" / "vlm-doctor" / "templates"


def test_corrupt_or_unwritable_cache_only_costs_speed(clean: dict[str, Path], tmp_path: Path, cache: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    model = clean["llava"]
    weights = read_model_weights(model)
    want = predict_load(model, weights, use_templates=False)
    assert predict_load(model, weights) == want
    for entry in cache.iterdir():
        entry.write_text("{not json")
    assert predict_load(model, weights) == want
    assert templates.lookup(json.loads((model / "config.json").read_text())) is not None  # rewritten
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("VLM_DOCTOR_CACHE", str(blocked))  # a file where the folder should be
    assert predict_load(model, weights) == want


def test_unverifiable_template_falls_back_to_the_build(clean: dict[str, Path], cache: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def differs(*_: Any) -> None:
        raise templates.NotLearnable("differs")

    monkeypatch.setattr(templates, "_verify", differs)
    model = clean["llava_next"]
    weights = read_model_weights(model)
    assert predict_load(model, weights) == predict_load(model, weights, use_templates=False)
    assert templates.lookup(json.loads((model / "config.json").read_text())) is None


def test_build_error_is_the_real_one_and_not_cached(clean: dict[str, Path], tmp_path: Path, cache: Path) -> None:
    model = shutil.copytree(clean["llava"], tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    config["text_config"]["pad_token_id"] = 5000
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(BuildError) as meta:
        predict_load(model, None, use_templates=False)
    with pytest.raises(BuildError) as templ:
        predict_load(model, None)
    assert str(templ.value) == str(meta.value) and "Padding_idx" in str(meta.value)
    assert templates.lookup(config) is None


def test_a_count_left_to_its_default_gets_its_own_template(clean: dict[str, Path], tmp_path: Path) -> None:
    """Without ``text_config.num_hidden_layers`` the class default applies: not the template of a
    config that sets it, though both look alike once the count is taken out."""
    model = clean["llava"]
    weights = read_model_weights(model)
    assert predict_load(model, weights) == predict_load(model, weights, use_templates=False)
    default = shutil.copytree(model, tmp_path / "default")
    config = json.loads((default / "config.json").read_text())
    del config["text_config"]["num_hidden_layers"]
    (default / "config.json").write_text(json.dumps(config))
    version = templates.transformers_version() or ""
    assert templates.cache_key(config, version, True) != templates.cache_key(
        json.loads((model / "config.json").read_text()), version, True)
    got = predict_load(default, weights)
    assert got == predict_load(default, weights, use_templates=False)
    assert templates.lookup(config) is not None
    assert "model.language_model.layers.31.mlp.up_proj.weight" in got.expected  # LlamaConfig's default: 32


def test_a_damaged_template_is_rebuilt(clean: dict[str, Path], cache: Path) -> None:
    model = clean["llava_next"]
    weights = read_model_weights(model)
    want = predict_load(model, weights, use_templates=False)
    assert predict_load(model, weights) == want
    for entry in cache.iterdir():
        data = json.loads(entry.read_text())
        data["template"]["stacks"] = [["x", ["no_such_field"], {}]]
        entry.write_text(json.dumps(data))
    assert predict_load(model, weights) == want
