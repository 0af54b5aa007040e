"""check --fix routes findings to the fixer that cures them and never touches the input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import doctor
from doctor.testing import make_clip_vision_tower, make_llava_original_model


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_unregistered_original_type_is_converted_by_check_fix(tmp_path):
    info = make_llava_original_model(tmp_path, model_type="llava_mistral")
    before = digest(info.path)
    report = doctor.check(str(info.path), fix=True, vision_tower=str(info.vision_tower_dir), select=["CKP002"])
    (finding,) = [f for f in report.findings if f.code == "CKP002"]
    assert finding.fix.fixer == "convert" and "KeyError" in finding.message
    (outcome,) = report.fixes
    assert outcome.error is None and outcome.written == [str(info.path) + "-hf"]
    assert digest(info.path) == before  # the input is untouched
    after = doctor.check(outcome.written[0], select=["CKP0", "CKP1"])
    assert after.ok, [f.message for f in after.findings]


def test_vision_tower_needs_no_tokenizer(tmp_path):
    tower = make_clip_vision_tower(tmp_path / "clip")
    report = doctor.check(str(tower if isinstance(tower, Path) else tower.path), select=["CKP401"])
    assert not [f for f in report.findings if f.code == "CKP401"]
