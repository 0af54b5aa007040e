"""ADP on PEFT adapters over tiny Qwen2-VL / Qwen2.5-VL bases: target_modules as LLaMA-Factory,
unsloth and TRL write them (regex and lists) resolved on the base's module tree, vision-tower and
merger targets flagged, stale targets and legacy keys found, each shown real with peft."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from doctor.testing import weights as _weights
from doctor.testing.qwen import QWEN_LANGUAGE_TARGETS, make_qwen_lora_adapter, make_qwen_model

from tests.helpers.qwen import codes, fails, passes, run

pytestmark = pytest.mark.filterwarnings("ignore")

LEAVES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# LLaMA-Factory's patch_target_modules before its composite-model table (one regex per recipe)
LF_FROZEN_VISION = "^(?!.*visual).*(?:{}).*".format("|".join(LEAVES))
LF_ALL_LINEAR_QWEN2VL = "^(?!.*patch_embed).*(?:{}).*".format("|".join(LEAVES + ("qkv", "proj", "fc1", "fc2")))
# unsloth's get_peft_model(finetune_vision_layers=..., finetune_language_layers=...) regex shape
UNSLOTH_LANGUAGE = (r"(?:.*?(?:language|text).*?(?:self_attn|attention|attn|mlp|feed_forward|ffn|dense).*?"
                    r"(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj).*?)|(?:\bmodel\.layers\.[\d]{1,}\."
                    r"(?:self_attn|attention|attn|mlp|feed_forward|ffn|dense)\.(?:(?:q_proj|k_proj|v_proj|o_proj|"
                    r"gate_proj|up_proj|down_proj)))")
UNSLOTH_BOTH = (r"(?:.*?(?:vision|image|visual|patch|language|text).*?(?:self_attn|attention|attn|mlp|feed_forward|"
                r"ffn|dense).*?(?:qkv|proj|fc1|fc2|q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj).*?)")


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("qwen_adp")
    return {"qwen2_vl": make_qwen_model(root / "q2", family="qwen2_vl", layout="v4"),
            "qwen2_5_vl": make_qwen_model(root / "q25", family="qwen2_5_vl", layout="v5")}


def adp(adapter: Path, base: Any):
    return run(adapter, "ADP", base=str(base.path))


def lora_modules(adapter: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        return {k.split(".lora_")[0] for k in f.keys()}


def loaded_lora(base: Any, adapter: Path) -> dict[str, bool]:
    """Module -> whether peft loaded a non-zero lora_B into it (the real outcome)."""
    import transformers
    from peft import PeftModel

    model = transformers.AutoModelForImageTextToText.from_pretrained(base.path)
    peft_model = PeftModel.from_pretrained(model, str(adapter))
    return {k.split(".lora_B")[0]: bool(v.abs().sum() > 0) for k, v in peft_model.state_dict().items() if "lora_B" in k}


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("recipe", ["peft-regex", "llamafactory-list", "llamafactory-frozen-vision", "unsloth-language"])
def test_language_only_recipes_are_clean(bases, tmp_path, family, recipe):
    base = bases[family]
    if recipe == "llamafactory-list":  # LLaMA-Factory >= 4.52: every in-memory module name it selected
        targets: Any = [f"model.language_model.layers.{i}.{part}" for i in range(2)
                        for part in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")]
    else:
        targets = {"peft-regex": QWEN_LANGUAGE_TARGETS, "llamafactory-frozen-vision": LF_FROZEN_VISION,
                   "unsloth-language": UNSLOTH_LANGUAGE}[recipe]
    adapter = make_qwen_lora_adapter(base, tmp_path / "a", target_modules=targets)
    assert all(".language_model." in m for m in lora_modules(adapter))
    report = adp(adapter, base)
    assert not {c for c in codes(report) if c in ("ADP008", "ADP009", "ADP010", "ADP016", "ADP013")}, \
        [(f.code, f.message) for f in report.findings]
    for code in ("ADP008", "ADP010", "ADP016"):
        passes(report, code)
    assert all(loaded_lora(base, adapter).values())


@pytest.mark.parametrize(("family", "recipe", "vision", "merger"), [
    ("qwen2_vl", "llamafactory-all-linear", True, False),
    ("qwen2_5_vl", "unsloth-vision", True, False),
    ("qwen2_5_vl", "trl-bare-list", True, False),   # Qwen2.5-VL's vision MLP is gate/up/down_proj too
    ("qwen2_vl", "all-linear", True, True),
])
def test_vision_tower_and_merger_targets_flagged(bases, tmp_path, family, recipe, vision, merger):
    base = bases[family]
    targets = {"llamafactory-all-linear": LF_ALL_LINEAR_QWEN2VL, "unsloth-vision": UNSLOTH_BOTH,
               "trl-bare-list": list(LEAVES), "all-linear": "all-linear"}[recipe]
    adapter = make_qwen_lora_adapter(base, tmp_path / "a", target_modules=targets)
    modules = lora_modules(adapter)
    assert any(".visual.blocks." in m for m in modules) == vision
    assert any(".visual.merger." in m for m in modules) == merger
    needles = (["vision-tower module"] if vision else []) + (["projector module"] if merger else [])
    fails(adp(adapter, base), "ADP010", *needles)


@pytest.mark.parametrize("legacy", [False, True])
def test_adp010_regex_keeps_the_language_model_in_the_adapters_own_layout(bases, tmp_path, legacy):
    """The regex ADP010 offers, given to peft on the same base, adapts the language model and
    nothing of the vision tower; for an adapter written by transformers < 4.52 it is written in
    that layout (``model.layers.*``: there is no ``language_model`` in the names to match)."""
    import re

    base = bases["qwen2_5_vl"]
    adapter = make_qwen_lora_adapter(base, tmp_path / "a", target_modules=list(LEAVES))
    if legacy:
        _as_legacy_adapter(adapter, list(LEAVES))
    (found,) = fails(adp(adapter, base), "ADP010", "vision-tower module")
    regex = re.search(r"target_modules = '(.+)'\.$", found.hint).group(1).replace("\\\\", "\\")
    names = {m.removeprefix("base_model.model.") for m in lora_modules(adapter)}
    kept = {n for n in names if re.fullmatch(regex, n)}
    assert kept and not any("visual" in n for n in kept)
    assert kept == {n for n in names if ".layers." in n and "visual" not in n}
    if legacy:
        assert regex.startswith(r"model\.layers") and all(n.startswith("model.layers.") for n in kept)
        return
    retrained = make_qwen_lora_adapter(base, tmp_path / "b", target_modules=regex)  # what peft does with it
    assert lora_modules(retrained) and not any("visual" in m for m in lora_modules(retrained))
    passes(adp(retrained, base), "ADP010")


def test_trl_bare_list_on_qwen2_vl_stays_in_the_language_model(bases, tmp_path):
    # the twin of the Qwen2.5-VL case: Qwen2-VL's vision blocks use qkv / proj / fc1 / fc2
    adapter = make_qwen_lora_adapter(bases["qwen2_vl"], tmp_path / "a", target_modules=list(LEAVES))
    assert not any(".visual." in m for m in lora_modules(adapter))
    passes(adp(adapter, bases["qwen2_vl"]), "ADP010")


def _as_legacy_adapter(adapter: Path, targets: Any) -> None:
    """What the same training wrote under transformers < 4.52: keys and module names without
    ``language_model`` (``model.layers.*``) and with ``visual.*`` at the top."""
    def legacy(state: dict) -> dict:
        return {k.replace("base_model.model.model.language_model.", "base_model.model.model.")
                 .replace("base_model.model.model.visual.", "base_model.model.visual."): v for k, v in state.items()}

    _weights.rewrite_weights(adapter, legacy)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["target_modules"] = targets
    (adapter / "adapter_config.json").write_text(json.dumps(config))


def test_stale_targets_from_transformers_4_are_found(bases, tmp_path):
    import transformers
    from peft import PeftModel

    base = bases["qwen2_5_vl"]
    new = [f"model.language_model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    adapter = make_qwen_lora_adapter(base, tmp_path / "a", target_modules=new)
    old = [n.replace("model.language_model.", "model.") for n in new]
    _as_legacy_adapter(adapter, old)
    found = fails(adp(adapter, base), "ADP008", "matches no module")
    assert found[0].fix is not None  # the rename to model.language_model.* is known
    model = transformers.AutoModelForImageTextToText.from_pretrained(base.path)
    with pytest.raises(ValueError, match="not found in the base model"):
        PeftModel.from_pretrained(model, str(adapter))


def test_partly_stale_targets_lose_the_language_lora_silently(bases, tmp_path):
    base = bases["qwen2_vl"]
    new = ["model.visual.blocks.0.attn.qkv"] + [f"model.language_model.layers.{i}.self_attn.q_proj" for i in range(2)]
    adapter = make_qwen_lora_adapter(base, tmp_path / "a", target_modules=new)
    _as_legacy_adapter(adapter, ["visual.blocks.0.attn.qkv"] + [f"model.layers.{i}.self_attn.q_proj" for i in range(2)])
    report = adp(adapter, base)
    fails(report, "ADP009", "2 of 3 target_modules entries match no module")
    fails(report, "ADP016")
    loaded = loaded_lora(base, adapter)
    # peft wraps only the vision qkv (the one entry that still matches) and, its legacy key not
    # being renamed either, leaves it at zero: the adapter loads without an error and does nothing
    assert loaded == {"base_model.model.model.visual.blocks.0.attn.qkv": False}


def test_legacy_keys_are_dropped_by_peft_on_transformers_5(bases, tmp_path):
    # measured: peft 0.21 with transformers 5 renames llava's legacy adapter keys, not Qwen's
    base = bases["qwen2_5_vl"]
    adapter = make_qwen_lora_adapter(base, tmp_path / "a", target_modules=QWEN_LANGUAGE_TARGETS)
    _as_legacy_adapter(adapter, QWEN_LANGUAGE_TARGETS)
    fails(adp(adapter, base), "ADP016", "14 of 14 adapted modules land on no module")
    assert not any(loaded_lora(base, adapter).values())


def test_weights_against_another_base(bases, tmp_path):
    base = bases["qwen2_5_vl"]
    other = make_qwen_model(tmp_path / "wide", hidden=96, mrope_section=[3, 4, 5])
    adapter = make_qwen_lora_adapter(other, tmp_path / "a")
    report = adp(adapter, base)
    assert {"ADP013", "ADP016"} & codes(report), [(f.code, f.message) for f in report.findings]
    import transformers
    from peft import PeftModel

    with pytest.raises(RuntimeError, match="size mismatch"):
        PeftModel.from_pretrained(transformers.AutoModelForImageTextToText.from_pretrained(base.path), str(adapter))
