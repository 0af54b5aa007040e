"""ADP001-ADP007 and the adapter_config fixer, on real peft adapters of a tiny llava model.

Each failing case is also loaded with the real peft 0.21 (``PeftConfig.from_pretrained`` /
``PeftModel.from_pretrained``) to show that what vlm-doctor reports really breaks or degrades."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import pytest

from doctor.fixers import adapter_config as fixer

import doctor
from doctor import peft_compat
from doctor.testing import make_llava_model
from doctor.testing.adapters import make_lora_adapter

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("adp_config")
    base = make_llava_model(root / "base", family="llava")
    adapter = make_lora_adapter(base, root / "adapter")
    return base, adapter, root


def copy_with(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "adapter_config.json").read_text())
    for k, v in changes.items():
        if v is _DELETE:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (dst / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return dst


_DELETE = object()


def findings(path, code_prefix="ADP", **kw):
    report = doctor.check(str(path), select=[code_prefix], **kw)
    assert not report.internal_errors, report.internal_errors
    return report


def codes(report):
    return sorted({f.code for f in report.findings})


def peft_config(path):
    from peft import PeftConfig

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = PeftConfig.from_pretrained(str(path))
    return cfg, [str(w.message) for w in caught]


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_clean_adapter_has_no_errors_and_loads(world):
    base, adapter, _ = world
    report = findings(adapter)
    assert report.ok, [f.message for f in report.findings]
    assert {f.code for f in report.findings} <= {"ADP007"}  # informational only
    cfg, _ = peft_config(adapter)
    assert cfg.r == 4


def test_invalid_json_reports_line_and_column(world, tmp_path):
    _, adapter, _ = world
    bad = tmp_path / "bad"
    shutil.copytree(adapter, bad)
    (bad / "adapter_config.json").write_text('{\n  "r": 8,\n  "lora_alpha": 16,\n}\n')
    report = findings(bad)
    [f] = [f for f in report.findings if f.code == "ADP001"]
    assert (f.location.line, f.location.column) == (4, 1)
    with pytest.raises(json.JSONDecodeError):
        peft_config(bad)


@pytest.mark.parametrize(("content", "needle"), [(None, "missing"), ("[1, 2]", "list"), ('{"r": 8}', "peft_type")])
def test_config_missing_or_not_an_object(world, tmp_path, content, needle):
    _, adapter, _ = world
    bad = tmp_path / "bad"
    shutil.copytree(adapter, bad)
    if content is None:
        (bad / "adapter_config.json").unlink()
    else:
        (bad / "adapter_config.json").write_text(content)
    report = doctor.check(str(bad), select=["ADP"]) if content is not None else None
    if report is None:  # without adapter_config.json the folder is not an adapter at all
        from doctor.checks.adapter.fixtures import adapter_config_doc
        from doctor.checks.adapter.rules.config import AdapterConfigInvalid

        found = list(AdapterConfigInvalid(str(bad)).run(adapter_config_doc(str(bad)), str(bad)))
    else:
        found = [f for f in report.findings if f.code == "ADP001"]
    assert found and needle in found[0].message
    # the later checks are skipped, not crashed
    if report is not None:
        assert all(r.status.value == "skip" for r in report.results if r.code in ("ADP003", "ADP008"))


def test_unknown_peft_and_task_type(world, tmp_path):
    _, adapter, _ = world
    bad = copy_with(adapter, tmp_path / "qlora", peft_type="QLORA")
    assert "ADP002" in codes(findings(bad))
    with pytest.raises(KeyError):
        peft_config(bad)
    bad = copy_with(adapter, tmp_path / "task", task_type="CHAT")
    assert "ADP002" in codes(findings(bad))
    with pytest.raises(ValueError, match="Invalid task type"):
        peft_config(bad)


def test_hyperparameters_out_of_range(world, tmp_path):
    base, adapter, _ = world
    bad = copy_with(adapter, tmp_path / "r0", r=0, lora_dropout=5)
    report = findings(bad)
    msgs = [f.message for f in report.findings if f.code == "ADP003"]
    assert any(m.startswith("r is 0") for m in msgs) and any("lora_dropout" in m for m in msgs)
    import transformers
    from peft import PeftModel

    model = transformers.AutoModelForImageTextToText.from_pretrained(base.path)
    with pytest.raises(ValueError):
        PeftModel.from_pretrained(model, str(bad))


@pytest.mark.parametrize(("changes", "severity", "loads"), [
    ({"lora_alpha": -8}, "warning", True),   # loads; the sign is right only if trained so
    ({"lora_dropout": 1.0}, "warning", True),  # dropout is off at inference
    ({"lora_alpha": 0}, "error", True),       # loads, and the adapter silently changes nothing
    ({"bias": "sometimes"}, "error", False),  # NotImplementedError in peft
])
def test_hyperparameter_severity_follows_what_peft_does(world, tmp_path, changes, severity, loads):
    import transformers
    from peft import PeftModel

    base, adapter, _ = world
    bad = copy_with(adapter, tmp_path / "a", **changes)
    [f] = [f for f in findings(bad).findings if f.code == "ADP003"]
    assert f.severity.value == severity and f.location.key == next(iter(changes))
    model = transformers.AutoModelForImageTextToText.from_pretrained(base.path)
    if loads:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            PeftModel.from_pretrained(model, str(bad))
    else:
        with pytest.raises(NotImplementedError):
            PeftModel.from_pretrained(model, str(bad))
    assert not [f for f in findings(adapter).findings if f.code == "ADP003"]  # the clean twin


def test_weak_scale_warns_and_normal_scale_does_not(world, tmp_path):
    _, adapter, _ = world
    weak = copy_with(adapter, tmp_path / "weak", r=4, lora_alpha=1)
    [f] = [f for f in findings(weak).findings if f.code == "ADP004"]
    assert "0.25" in f.message and f.severity.value == "warning"
    assert "ADP004" not in codes(findings(adapter))


def test_unknown_key_installed_peft_drops_it(world, tmp_path):
    _, adapter, _ = world
    # a non-default value of a key no peft has: the installed peft drops it with a warning
    odd = copy_with(adapter, tmp_path / "odd", use_foo=True)
    [f] = [f for f in findings(odd).findings if f.code == "ADP006"]
    assert "drops" in f.message and f.fix is None and f.severity.value == "warning"
    cfg, warned = peft_config(odd)
    assert not hasattr(cfg, "use_foo") and any("Unexpected keyword arguments ['use_foo']" in w for w in warned)


def test_old_peft_raises_and_fix_writes_loadable_copy(world, tmp_path):
    base, adapter, _ = world
    src = tmp_path / "adapter"
    shutil.copytree(adapter, src)
    before = digest(src)
    report = findings(src, peft_version="0.8.2", fix=True)
    [f] = [f for f in report.findings if f.code == "ADP006"]
    assert f.severity.value == "error" and "raises TypeError" in f.message and f.fix is not None
    out = tmp_path / "adapter.fixed"
    assert [x.written for x in report.fixes if x.fixer == "adapter_config"] == [[str(out)]]
    assert digest(src) == before  # the input is never modified
    fixed = json.loads((out / "adapter_config.json").read_text())
    assert set(fixed) <= peft_compat.fields_known_by("0.8.2")
    # a copy, never a hard link: writing to the new adapter must not reach the input
    copied, original = out / "adapter_model.safetensors", src / "adapter_model.safetensors"
    assert copied.stat().st_ino != original.stat().st_ino and copied.read_bytes() == original.read_bytes()
    # the copy computes exactly what the original does
    assert _logits(base, out).equal(_logits(base, src))
    assert findings(out, peft_version="0.8.2").ok


def test_fixer_refuses_to_drop_meaningful_values(world, tmp_path):
    _, adapter, _ = world
    dora = copy_with(adapter, tmp_path / "dora", use_dora=True)
    [f] = [f for f in findings(dora, peft_version="0.8.2").findings if f.code == "ADP006"]
    assert f.fix is None and "DoRA" in f.message
    from doctor.artifacts import classify
    from doctor.findings import Applicability, Fix
    from doctor.runner import Options

    forced = type(f)(**{**f.__dict__, "fix": Fix("drop", Applicability.SAFE, "adapter_config", {"drop_keys": ["use_dora"]})})
    outcome = fixer.apply(classify(dora), [forced], Options())
    assert outcome.error and "use_dora=True" in outcome.error and not (tmp_path / "dora.fixed").exists()


def test_needs_newer_peft_info_and_copy(world, tmp_path):
    base, adapter, _ = world
    [f] = [f for f in findings(adapter).findings if f.code == "ADP007"]
    assert f.severity.value == "info" and "needs peft >= 0.21" in f.message
    src = tmp_path / "share"
    shutil.copytree(adapter, src)
    assert f.fix.applicability.value == "unsafe"  # opt-in: the installed peft needs no copy
    assert not findings(src, "ADP007", fix=True).fixes
    report = findings(src, "ADP007", fix=True, unsafe_fixes=True)
    fixed = json.loads((tmp_path / "share.fixed" / "adapter_config.json").read_text())
    need, _ = peft_compat.min_version_for(fixed)
    assert peft_compat.parse_version(need) < (0, 6), need
    assert report.fixes and not report.fixes[0].error
    assert _logits(base, tmp_path / "share.fixed").equal(_logits(base, src))


def test_peft_compat_table_matches_installed_peft():
    import peft

    # the table of releases and the source parse agree with the dataclass of the installed release
    truth = peft_compat.installed_lora_fields_by_import()
    assert peft_compat.installed_lora_fields() == truth
    assert peft_compat.fields_known_by(peft.__version__) == truth
    assert peft_compat.unknown_key_behaviour("0.5.0") == peft_compat.IGNORE_SILENTLY
    assert peft_compat.unknown_key_behaviour("0.13.2") == peft_compat.RAISE
    assert peft_compat.unknown_key_behaviour(peft.__version__) == peft_compat.DROP_WITH_WARNING


def _logits(base, adapter):
    import torch
    import transformers
    from peft import PeftModel

    from doctor.testing.models import tiny_inputs

    model = transformers.AutoModelForImageTextToText.from_pretrained(base.path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        return model(**tiny_inputs(base)).logits


def test_diff_shows_the_change_and_writes_nothing(world, tmp_path):
    _, adapter, _ = world
    src = tmp_path / "adapter"
    shutil.copytree(adapter, src)
    report = findings(src, peft_version="0.13.2", diff=True)
    [outcome] = [x for x in report.fixes if x.fixer == "adapter_config"]
    # peft 0.13.2 knows use_dora (0.9) but not kasa_config (0.21): only the unknown keys go
    assert outcome.diff and '-  "kasa_config": null,' in outcome.diff and not outcome.written
    assert '-  "use_dora": false,' not in outcome.diff
    assert not (tmp_path / "adapter.fixed").exists()
