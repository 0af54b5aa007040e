"""ADP on PEFT adapters over a tiny Gemma 3 base: TRL's bare list of the seven LLM projections
also adapts SigLIP's q/k/v_proj (ADP010; its out_proj / fc1 / fc2 are not in the list), peft's
"all-linear" adapts the whole tower, and a language-only regex stays clean. The projector has no
Linear (``mm_input_projection_weight`` is a Parameter): no target reaches it. Shown with peft."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from doctor.testing.gemma3 import GEMMA3_LANGUAGE_TARGETS, TRL_TARGETS, make_gemma3_lora_adapter, make_gemma3_model

from tests.helpers.gemma3 import codes, fails, passes, run

pytestmark = pytest.mark.filterwarnings("ignore")

# unsloth's get_peft_model(finetune_vision_layers=False) regex shape
UNSLOTH_LANGUAGE = (r"(?:.*?(?:language|text).*?(?:self_attn|attention|attn|mlp|feed_forward|ffn|dense).*?"
                    r"(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj).*?)")


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("gemma3_adp")
    return {"saved": make_gemma3_model(root / "saved"), "modern": make_gemma3_model(root / "modern", layout="modern")}


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


@pytest.mark.parametrize("layout", ["saved", "modern"])
@pytest.mark.parametrize("recipe", ["peft-regex", "unsloth-language", "module-list"])
def test_language_only_targets_are_clean(bases, tmp_path, layout, recipe):
    base = bases[layout]
    targets: Any = {"peft-regex": GEMMA3_LANGUAGE_TARGETS, "unsloth-language": UNSLOTH_LANGUAGE,
                    "module-list": [f"model.language_model.layers.{i}.self_attn.{p}" for i in range(2)
                                    for p in ("q_proj", "v_proj")]}[recipe]
    adapter = make_gemma3_lora_adapter(base, tmp_path / "a", target_modules=targets)
    modules = lora_modules(adapter)
    assert modules and all(".language_model." in m for m in modules)
    report = adp(adapter, base)
    assert not {c for c in codes(report) if c in ("ADP008", "ADP009", "ADP010", "ADP013", "ADP016")}, \
        [(f.code, f.message) for f in report.findings]
    for code in ("ADP008", "ADP010", "ADP016"):
        passes(report, code)
    assert all(loaded_lora(base, adapter).values())


def test_trl_bare_list_reaches_siglip_attention(bases, tmp_path):
    base = bases["saved"]
    adapter = make_gemma3_lora_adapter(base, tmp_path / "a", target_modules=list(TRL_TARGETS))
    vision = {m for m in lora_modules(adapter) if ".vision_tower." in m}
    # SigLIP's attention is q/k/v_proj + out_proj, its MLP fc1 / fc2: the list hits q/k/v only
    assert {m.rsplit(".", 1)[1] for m in vision} == {"q_proj", "k_proj", "v_proj"}
    assert not any("multi_modal_projector" in m for m in lora_modules(adapter))
    (found,) = fails(adp(adapter, base), "ADP010", "vision-tower module")
    assert all(loaded_lora(base, adapter).values())  # peft really adapts the tower
    # the regex ADP010 offers keeps the language model only, as peft resolves it
    regex = re.search(r"target_modules = '(.+)'\.$", found.hint).group(1).replace("\\\\", "\\")
    retrained = make_gemma3_lora_adapter(base, tmp_path / "b", target_modules=regex)
    kept = lora_modules(retrained)
    assert kept and not any(".vision_tower." in m for m in kept)
    passes(adp(retrained, base), "ADP010")


def test_all_linear_reaches_the_whole_tower_but_not_the_projector(bases, tmp_path):
    base = bases["modern"]
    adapter = make_gemma3_lora_adapter(base, tmp_path / "a", target_modules="all-linear")
    vision = {m.rsplit(".", 1)[1] for m in lora_modules(adapter) if ".vision_tower." in m}
    assert vision == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
    assert not any("multi_modal_projector" in m for m in lora_modules(adapter))
    fails(adp(adapter, base), "ADP010", "vision-tower module")
