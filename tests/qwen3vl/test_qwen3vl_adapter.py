"""ADP on Qwen3-VL: adapters written by the recipes people use resolve as peft resolves them, and
ADP010 flags vision / projector targets exactly when peft put LoRA there. Qwen3-VL's vision blocks
use ``attn.qkv`` / ``attn.proj`` / ``mlp.linear_fc1`` / ``mlp.linear_fc2`` (its mergers
``linear_fc1`` / ``linear_fc2``), none of TRL's seven LLM projections: TRL's bare list stays in the
language model here (unlike Qwen2.5-VL, whose vision MLP is gate / up / down_proj)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from doctor.testing.qwen import make_qwen_lora_adapter
from doctor.testing.qwen3_vl import QWEN3_LANGUAGE_TARGETS, TRL_BARE_TARGETS, make_qwen3_vl_model

from tests.helpers.qwen import codes, fails, passes, run

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Any:
    return make_qwen3_vl_model(tmp_path_factory.mktemp("qwen3_adp") / "base")


def adp(adapter: Path, base: Any):
    return run(adapter, "ADP", base=str(base.path))


def lora_modules(adapter: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        return {k.split(".lora_")[0].removeprefix("base_model.model.") for k in f.keys()}


def loaded(base: Any, adapter: Path) -> set[str]:
    """Modules into which peft loaded a non-zero lora_B (the real outcome)."""
    import transformers
    from peft import PeftModel

    model = transformers.AutoModelForImageTextToText.from_pretrained(base.path)
    peft_model = PeftModel.from_pretrained(model, str(adapter))
    return {k.split(".lora_B")[0].removeprefix("base_model.model.") for k, v in peft_model.state_dict().items()
            if "lora_B" in k and v.abs().sum() > 0}


def test_vision_mlp_names_are_not_trls(base):
    import transformers

    model = transformers.AutoModelForImageTextToText.from_pretrained(base.path)
    leaves = {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
              if n.startswith("model.visual.") and type(m).__name__ == "Linear"}
    assert leaves == {"qkv", "proj", "linear_fc1", "linear_fc2"}
    assert not leaves & set(TRL_BARE_TARGETS)


@pytest.mark.parametrize("recipe", ["trl-bare-list", "language-regex"])
def test_language_only_recipes_are_clean(base, tmp_path, recipe):
    targets = list(TRL_BARE_TARGETS) if recipe == "trl-bare-list" else QWEN3_LANGUAGE_TARGETS
    adapter = make_qwen_lora_adapter(base, tmp_path / "a", target_modules=targets)
    modules = lora_modules(adapter)
    assert modules and all(m.startswith("model.language_model.layers.") for m in modules)
    assert loaded(base, adapter) == modules  # peft puts every tensor back
    report = adp(adapter, base)
    assert not {"ADP008", "ADP009", "ADP010", "ADP013", "ADP016"} & codes(report), \
        [(f.code, f.message) for f in report.findings]
    passes(report, "ADP010")


@pytest.mark.parametrize(("recipe", "vision", "projector"), [
    ("vision-mlp", True, True),      # bare linear_fc1 / linear_fc2: vision blocks, merger and deepstack mergers
    ("attention", True, False),      # bare qkv: the vision attention only
    ("all-linear", True, True),
])
def test_vision_and_merger_targets_flagged(base, tmp_path, recipe, vision, projector):
    targets = {"vision-mlp": list(TRL_BARE_TARGETS) + ["linear_fc1", "linear_fc2"],
               "attention": list(TRL_BARE_TARGETS) + ["qkv"], "all-linear": "all-linear"}[recipe]
    adapter = make_qwen_lora_adapter(base, tmp_path / "a", target_modules=targets)
    modules = lora_modules(adapter)
    assert any(m.startswith("model.visual.blocks.") for m in modules) == vision
    assert any(m.startswith("model.visual.merger.") for m in modules) == projector
    assert loaded(base, adapter) == modules
    needles = (["vision-tower module"] if vision else []) + (["projector module"] if projector else [])
    (found,) = fails(adp(adapter, base), "ADP010", *needles)
    assert "language_model" in found.hint  # the language-only regex it offers, in the adapter's layout


def test_offered_regex_keeps_the_language_model(base, tmp_path):
    """The regex ADP010 offers, given to peft on the same base, adapts the language model only."""
    import re

    adapter = make_qwen_lora_adapter(base, tmp_path / "a", target_modules=list(TRL_BARE_TARGETS) + ["linear_fc1"])
    (found,) = fails(adp(adapter, base), "ADP010")
    regex = re.search(r"target_modules = '(.+)'\.$", found.hint).group(1).replace("\\\\", "\\")
    retrained = make_qwen_lora_adapter(base, tmp_path / "b", target_modules=regex)
    modules = lora_modules(retrained)
    assert modules and all(m.startswith("model.language_model.") for m in modules)
    passes(adp(retrained, base), "ADP010")
