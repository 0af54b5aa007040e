"""Shared helpers of the CKP tests: run the family on a folder, clean tiny models of every
family, clone-and-edit, and the pass/fail assertions."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from doctor.findings import Finding, Status
from doctor.report import Report
from doctor.runner import check
from doctor.testing import weights as _weights

FAMILIES = ("llava", "llava_next", "mllama")


def run_ckp(path: str | Path, **options: Any) -> Report:
    """Run the CKP family on one path; no internal error is ever acceptable."""
    report = check(str(path), select=["CKP"], **options)
    assert not report.internal_errors, [f.message for f in report.internal_errors]
    return report


def by_code(report: Report) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = defaultdict(list)
    for f in report.findings:
        out[f.code].append(f)
    return dict(out)


def status_of(report: Report, code: str) -> Status | None:
    for r in report.results:
        if r.code == code and r.path != "<environment>":
            return r.status
    return None


def assert_fails(report: Report, code: str, *needles: str) -> list[Finding]:
    found = by_code(report).get(code)
    assert found, f"{code} did not fire; findings: {[(f.code, f.message) for f in report.findings]}"
    text = " | ".join(f.message for f in found)
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"
    return found


def assert_passes(report: Report, code: str) -> None:
    found = by_code(report).get(code, [])
    assert not found, [f.message for f in found]
    assert status_of(report, code) is Status.PASS, f"{code} ended {status_of(report, code)}"


def clone(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_json(path: Path, **changes: Any) -> dict[str, Any]:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        node = data
        *parents, leaf = key.split("__")
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    path.write_text(json.dumps(data, indent=2))
    return data


def build_clean_models(factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One healthy factory model per family (a module builds them once; copy before editing)."""
    from doctor.testing import make_llava_model

    root = factory.mktemp("clean")
    return {fam: make_llava_model(root / fam, family=fam) for fam in FAMILIES}


def to_layout(path: Path, layout: str) -> Path:
    """Rewrite a 5.x save into another on-disk layout: ``v4`` (transformers 4.x: CLIP towers under
    ``vision_tower.vision_model.``, per CATALOGUE's key map) or ``memory`` (the in-memory names of
    transformers 5, ``model.language_model.*``, as ``save_file(model.state_dict())`` writes)."""
    if layout == "v4":
        _weights.rewrite_weights(path, _weights.rename_keys(r"^vision_tower\.(?!vision_model\.)", "vision_tower.vision_model."))
    elif layout == "memory":
        from safetensors.torch import save_file
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(path)
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        for f in _weights.weight_files(path):
            (path / f).unlink()
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path

