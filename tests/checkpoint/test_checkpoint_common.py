"""Shared helpers of the CKP tests, and tests of the family's light readers (installed
transformers read statically, JSON errors, dtype names, rule docs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def test_installed_transformers_read_statically_equals_the_library() -> None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    from doctor.checks.checkpoint.installed import installed_transformers

    info = installed_transformers()
    assert info is not None and info.static
    assert info.model_types == dict(CONFIG_MAPPING_NAMES)
    assert info.knows_architecture("LlavaNextForConditionalGeneration", "llava_next")
    assert info.knows_architecture("MllamaForConditionalGeneration", "mllama")
    assert not info.knows_architecture("LlavaLlamaForCausalLM", "llava")


def test_config_checks_import_neither_torch_nor_transformers(tmp_path: Path) -> None:
    """A header-only run (everything but CKP100/104-106) stays light."""
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llava_mistral", "architectures": ["X"]}))
    code = (
        "import sys, doctor\n"
        f"r = doctor.check({str(model)!r}, select=['CKP0', 'CKP2', 'CKP4', 'CKP101', 'CKP107'])\n"
        "assert any(f.code == 'CKP002' for f in r.findings), r.findings\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


def test_read_json_reports_line_and_column(tmp_path: Path) -> None:
    from doctor.checks.checkpoint.fixtures import read_json

    p = tmp_path / "c.json"
    p.write_text('{\n  "a": 1,\n}\n')
    f = read_json(p)
    assert (f.line, f.column) == (3, 1) and f.error
    p.write_text("[" * 100_000)
    assert read_json(p).error  # deep nesting is an error, not a crash
    p.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    assert "Git-LFS" in (read_json(p).error or "")


@pytest.mark.parametrize("raw,want", [("torch.float16", "F16"), ("HalfStorage", "F16"), ("BF16", "BF16"),
                                      ("torch.bfloat16", "BF16"), ("float32", "F32"), ("F8_E4M3", "F8_E4M3")])
def test_normalize_dtype(raw: str, want: str) -> None:
    from doctor.checks.checkpoint.fixtures import normalize_dtype

    assert normalize_dtype(raw) == want


def test_every_ckp_rule_is_documented() -> None:
    import doctor.checks.checkpoint  # noqa: F401

    from doctor.registry import REGISTRY

    ckp = [c for code, c in REGISTRY.items() if code.startswith("CKP")]
    assert len(ckp) >= 35
    for cls in ckp:
        assert not cls.missing_sections(), (cls.code, cls.missing_sections())
        assert cls.doc_section("How to fix")

