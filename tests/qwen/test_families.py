"""The family tables (doctor.families) are consistent, and the key layouts built from Qwen's map
every tensor of a real Qwen2-VL / Qwen2.5-VL checkpoint between its 4.x and 5.x names."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

import pytest

from doctor import layouts
from doctor.families import FAMILIES, TokenRule, default_image_tokens, family_of
from doctor.testing.qwen import QWEN_FAMILIES, make_qwen_model, to_v5_keys

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_table_is_consistent(name):
    fam = FAMILIES[name]
    assert fam.token_rule in get_args(TokenRule)
    assert all(family_of(t) is fam for t in fam.model_types)
    assert set(fam.processor_keys.values()) <= set(fam.vision_keys)
    if fam.image_token:
        assert fam.tokens.get("image_token_id") == fam.image_token
    for row in fam.layouts:
        assert layouts.LAYOUTS[row.name].projector == row.projector
    if fam.token_rule == "dynamic":
        assert {"min_pixels", "max_pixels", "patch_size", "merge_size", "temporal_patch_size"} <= set(fam.processor_defaults)
    if fam.rope == "mrope":
        assert len(fam.rope_default_sections) == 3


def test_model_types_are_unique_and_default_tokens_follow():
    types = [t for f in FAMILIES.values() for t in f.model_types]
    assert len(types) == len(set(types))
    assert default_image_tokens()["qwen2_5_vl"] == "<|image_pad|>"
    assert default_image_tokens()["mllama"] == "<|image|>"


def test_tables_import_nothing_heavy():
    code = ("import sys, doctor.families, doctor.layouts, doctor.families.resize; "
            "assert not {'torch', 'transformers', 'numpy'} & set(sys.modules), 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_layouts_map_every_qwen_tensor_between_4x_and_5x(tmp_path, family):
    from safetensors import safe_open

    info = make_qwen_model(tmp_path, family=family, layout="v4")
    with safe_open(str(info.path / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert layouts.classify(names).layout is layouts.QWEN_LEGACY
    v5 = list(to_v5_keys(dict.fromkeys(names)))
    assert layouts.classify(v5).layout is layouts.QWEN_MODERN and not layouts.classify(v5).mixed
    for old, new in zip(names, v5, strict=True):
        assert layouts.map_name(old, layouts.QWEN_MODERN) == new
        assert layouts.map_name(new, layouts.QWEN_LEGACY) == old
        part = layouts.part_of(old)
        assert part == layouts.part_of(new)
        assert part == ("projector" if ".merger." in old else "vision" if old.startswith("visual.")
                        else "lm_head" if old.startswith("lm_head") else "language")
    memory = layouts.disk_to_memory(names, family, "5.25.0")
    assert set(memory) == set(v5)
    assert layouts.disk_to_memory(names, family, "4.49.0") == {n: n for n in names}
