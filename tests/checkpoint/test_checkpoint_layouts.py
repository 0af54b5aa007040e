"""The checks that read tensor names or header shapes, in every on-disk layout: for llava,
llava_next and mllama, each saved as transformers 5 saves it, in the transformers 4.x layout, and
with transformers 5's in-memory names. A clean model passes every CKP check in each layout, and
each planted defect is found in each layout."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from doctor.testing import weights as _weights

from tests.helpers.checkpoint import FAMILIES, assert_fails, build_clean_models, clone, edit_json, run_ckp, to_layout

LAYOUTS = ("saved", "v4", "memory")


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    clean = build_clean_models(tmp_path_factory)
    root = tmp_path_factory.mktemp("layouts")
    return {(fam, lay): to_layout(clone(clean[fam].path, root / f"{fam}-{lay}"), lay)
            for fam in FAMILIES for lay in LAYOUTS}


def _edit(model: Path, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    _weights.rewrite_weights(model, fn)


def _first(state: dict[str, Any], pattern: str) -> str:
    return sorted(k for k in state if re.search(pattern, k))[0]


def _drop(pattern: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda s: {k: v for k, v in s.items() if not re.search(pattern, k)}


def _lora(s: dict[str, Any]) -> dict[str, Any]:
    name = _first(s, r"language_model\..*layers\.0\.self_attn\.q_proj\.weight$")
    s[name.replace(".weight", ".base_layer.weight")] = s.pop(name)
    return s


def _projector_shape(s: dict[str, Any]) -> dict[str, Any]:
    import torch

    name = _first(s, r"multi_modal_projector(\.linear_1)?\.weight$")
    s[name] = torch.zeros(s[name].shape[0], s[name].shape[1] * 2)
    return s


def _mixed(s: dict[str, Any]) -> dict[str, Any]:
    import torch

    name = _first(s, r"layers\.1\.mlp\.down_proj\.weight$")
    s[name] = s[name].to(torch.bfloat16)
    return s


def _extra_tokens(model: Path) -> None:
    data = json.loads((model / "tokenizer.json").read_text())
    data["added_tokens"].append({"id": 400, "content": "<box>", "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": True})
    (model / "tokenizer.json").write_text(json.dumps(data))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_clean_model_passes_every_check_in_every_layout(variants: dict[tuple[str, str], Path], family: str,
                                                        layout: str) -> None:
    # a freshly initialized mllama's tanh gates are zero (CKP303, rightly); small weights are value-scanned by default
    report = run_ckp(variants[(family, layout)], deep=True, ignore=["CKP303"] if family == "mllama" else [])
    assert not report.findings, [(f.code, f.message) for f in report.findings]


DEFECTS: dict[str, tuple[str, Callable[[Path], None], tuple[str, ...]]] = {
    "no-projector": ("CKP104", lambda m: _edit(m, _drop(r"multi_modal_projector")), ("the projector",)),
    "no-vision": ("CKP104", lambda m: _edit(m, _drop(r"vision_(tower|model)")), ("the vision tower",)),
    "lora-left": ("CKP103", lambda m: _edit(m, _lora), (".base_layer.",)),
    "projector-shape": ("CKP008", lambda m: _edit(m, _projector_shape), ("projector weight",)),
    "projector-shape-load": ("CKP106", lambda m: _edit(m, _projector_shape), ("multi_modal_projector",)),
    "mixed-dtype": ("CKP107", lambda m: _edit(m, _mixed), ("BF16", "down_proj")),
    "image-token-row": ("CKP005", lambda m: edit_json(m / "config.json", image_token_index=350), ("350",)),
    "tokenizer-rows": ("CKP402", _extra_tokens, ("'<box>'=400",)),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_defect_found_in_every_layout(variants: dict[tuple[str, str], Path], tmp_path: Path, family: str,
                                      layout: str, defect: str) -> None:
    code, plant, needles = DEFECTS[defect]
    model = clone(variants[(family, layout)], tmp_path / "m")
    plant(model)
    assert_fails(run_ckp(model), code, *needles)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_mllama_cross_attention_weights_in_every_layout(variants: dict[tuple[str, str], Path], tmp_path: Path,
                                                        layout: str) -> None:
    model = clone(variants[("mllama", layout)], tmp_path / "m")
    edit_json(model / "config.json", text_config__cross_attention_layers=[0])
    assert_fails(run_ckp(model), "CKP010", "cross-attention tensors for layers [1]")
