"""Selection never changes a verdict: ``--ignore`` / ``--select`` only hide findings.

For every check with ``requires`` (all families loaded), on a real artifact where the prerequisite
fires: the findings with the prerequisite ignored are exactly those without the selection, minus
the prerequisite's own; selecting only the dependent shows a subset of the findings without the
selection. The twin: on the clean artifact, selection shows the same as no selection.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import doctor
from doctor.findings import Status
from doctor.registry import REGISTRY, load_all
from doctor.runner import plan
from doctor.selection import Selection

load_all()
EDGES = sorted((c.code, req) for c in REGISTRY.values() for req in c.requires)


# ---- artifacts: one where each prerequisite fires ----------------------------------------------

@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, Path]:
    from doctor.testing import (
        make_llava_model,
        make_llava_original_lora,
        make_lora_adapter,
        make_text_model,
        make_xtuner_release,
    )

    root = tmp_path_factory.mktemp("shared")
    text = make_text_model(root / "text")
    other = make_text_model(root / "other", hidden=48)
    return {
        "text": text.path,
        "other": other.path,
        "adapter": make_lora_adapter(text, root / "adapter"),
        "llava": make_llava_model(root / "llava").path,
        "llava_lora": make_llava_original_lora(root / "orig").path,
        "xtuner": make_xtuner_release(root / "xt").path,
    }


def _copy(shared: dict[str, Path], key: str, tmp: Path) -> Path:
    dst = tmp / shared[key].name
    shutil.copytree(shared[key], dst)
    return dst


def _edit_json(file: Path, **changes: Any) -> None:
    data = json.loads(file.read_text())
    data.update(changes)
    file.write_text(json.dumps(data))


def _edit_tensors(folder: Path, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    from doctor.testing.weights import rewrite_weights

    rewrite_weights(folder, edit)


def _first_lora(state: dict[str, Any], part: str = "lora_A") -> str:
    return sorted(k for k in state if f".{part}." in k)[0]


def _adapter(shared, tmp, edit=None, base="text"):
    folder = _copy(shared, "adapter", tmp)
    if edit:
        edit(folder)
    return folder, {"base": str(shared[base])}


def _empty_tensor(state):
    import torch

    name = _first_lora(state)
    state[name] = torch.empty(0, state[name].shape[1])
    return state


def _int_tensor(state):
    name = _first_lora(state)
    state[name] = (state[name] * 100).to(__import__("torch").int8)
    return state


def _nan_tensor(state):
    name = _first_lora(state, "lora_B")
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    return state


def _model(shared, tmp, edit):
    folder = _copy(shared, "llava", tmp)
    edit(folder)
    return folder, {}


def _no_processor(folder: Path) -> None:
    for name in ("processor_config.json", "preprocessor_config.json", "chat_template.json", "chat_template.jinja"):
        (folder / name).unlink(missing_ok=True)


def _llava_lora(shared, tmp, edit):
    folder = _copy(shared, "llava_lora", tmp)
    edit(folder)
    return folder, {}


def _xtuner(shared, tmp, edit):
    release = tmp / "xt"
    shutil.copytree(shared["xtuner"].parent, release)  # the release and its base folders
    folder = release / shared["xtuner"].name
    edit(folder)
    return folder, {}


def _junk(file: Path) -> None:
    file.write_text(file.read_text() + "\n}junk")


FIRES: dict[str, Callable[[dict[str, Path], Path], tuple[Path, dict[str, Any]]]] = {
    "ADP001": lambda s, t: _adapter(s, t, lambda f: _junk(f / "adapter_config.json")),
    "ADP003": lambda s, t: _adapter(s, t, lambda f: _edit_json(f / "adapter_config.json", r=0)),
    "ADP008": lambda s, t: _adapter(s, t, lambda f: _edit_json(f / "adapter_config.json",
                                                               target_modules=["no_such_module"])),
    "ADP013": lambda s, t: _adapter(s, t, base="other"),
    "ADP014": lambda s, t: _adapter(s, t, lambda f: (f / "adapter_model.safetensors").unlink()),
    "ADP015": lambda s, t: _adapter(s, t, lambda f: _edit_tensors(f, _empty_tensor)),
    "ADP018": lambda s, t: _adapter(s, t, lambda f: _edit_tensors(f, _int_tensor)),
    "ADP019": lambda s, t: _adapter(s, t, lambda f: _edit_tensors(f, _nan_tensor)),
    "CKP001": lambda s, t: _model(s, t, lambda f: _junk(f / "config.json")),
    "CKP002": lambda s, t: _model(s, t, lambda f: _edit_json(f / "config.json", model_type="no_such_model")),
    "CKP100": lambda s, t: _model(s, t, lambda f: _edit_json(
        f / "config.json", text_config={**json.loads((f / "config.json").read_text())["text_config"],
                                        "pad_token_id": 10_000})),
    "CKP102": lambda s, t: _model(s, t, lambda f: (
        [p.unlink() for p in f.glob("model*.safetensors*")],
        shutil.copy(s["adapter"] / "adapter_model.safetensors", f / "adapter_model.safetensors"))),
    "CKP406": lambda s, t: _model(s, t, _no_processor),
    "LLV001": lambda s, t: _llava_lora(s, t, lambda f: _junk(f / "config.json")),
    "LLV002": lambda s, t: _llava_lora(s, t, lambda f: (f / "non_lora_trainables.bin").unlink()),
    "XTN001": lambda s, t: _xtuner(s, t, lambda f: shutil.rmtree(f / "projector")),
    "XTN002": lambda s, t: _xtuner(s, t, lambda f: _junk(f / "llm_adapter" / "adapter_config.json")),
    "XTN003": lambda s, t: _xtuner(s, t, lambda f: _edit_json(f / "projector" / "config.json", depth=5)),
}


def _key(f) -> tuple:
    return (f.code, f.path, f.message, f.severity.value, repr(f.location))


def _findings(path: Path, opts: dict[str, Any], **selection: Any) -> set[tuple]:
    report = doctor.check(str(path), **opts, **selection)
    return {_key(f) for f in report.findings}


def test_every_prerequisite_has_an_artifact_where_it_fires():
    assert sorted({req for _, req in EDGES}) == sorted(FIRES)


@pytest.mark.parametrize(("dependent", "prerequisite"), EDGES, ids=[f"{d}-needs-{r}" for d, r in EDGES])
def test_ignoring_a_prerequisite_only_hides_its_findings(shared, tmp_path, dependent, prerequisite):
    path, opts = FIRES[prerequisite](shared, tmp_path)
    everything = _findings(path, opts)
    assert any(k[0] == prerequisite for k in everything), f"{prerequisite} does not fire on this artifact"

    ignored = _findings(path, opts, ignore=[prerequisite])
    assert ignored == {k for k in everything if k[0] != prerequisite}

    only_dependent = _findings(path, opts, select=[dependent])
    assert only_dependent <= everything
    assert only_dependent == {k for k in everything if k[0] == dependent}


def test_deselected_prerequisite_gates_its_dependent_with_a_reason(shared, tmp_path):
    path, opts = FIRES["CKP406"](shared, tmp_path)
    report = doctor.check(str(path), **opts, ignore=["CKP406"])
    assert not any(f.code in ("CKP406", "CKP407") for f in report.findings)
    result = next(r for r in report.results if r.code == "CKP407")
    assert result.status is Status.SKIP and "CKP406" in result.reason and "hidden" in result.reason
    assert not any(r.code == "CKP406" for r in report.results)  # not selected: not reported as run


def test_clean_twin_selection_changes_nothing(shared):
    opts = {"base": str(shared["text"])}
    everything = _findings(shared["adapter"], opts)
    assert not any(k[3] == "error" for k in everything)
    for dependent, prerequisite in EDGES:
        if dependent.startswith("ADP"):
            assert _findings(shared["adapter"], opts, ignore=[prerequisite]) == {
                k for k in everything if k[0] != prerequisite}
    model = _findings(shared["llava"], {})
    assert _findings(shared["llava"], {}, ignore=["CKP406"]) == {k for k in model if k[0] != "CKP406"}
    assert _findings(shared["llava"], {}, select=["CKP407"]) == set()


def test_plan_runs_required_checks_hidden_transitively():
    load_all()
    applicable = [c for c in REGISTRY.values() if "adapter" in c.artifacts]
    checks, hidden = plan(applicable, Selection.from_lists(select=["ADP021"]))
    codes = [c.code for c in checks]
    # ADP021 needs ADP013 / ADP019 / ADP003 / ADP018, which need ADP001 and ADP014 in turn
    assert set(hidden) == {"ADP001", "ADP003", "ADP013", "ADP014", "ADP018", "ADP019"}
    assert codes[-1] == "ADP021" and codes.index("ADP001") < codes.index("ADP003")
    checks, hidden = plan(applicable, Selection.from_lists())
    assert hidden == set() and len(checks) == len(applicable)


def test_command_line_ignore_keeps_the_exit_code_of_what_it_does_not_hide(shared, tmp_path, capsys):
    """The issue's example through the CLI: --ignore CKP406 must not turn CKP407 into a false error."""
    from doctor.cli import main

    path, _ = FIRES["CKP406"](shared, tmp_path)

    def run(*argv: str) -> tuple[int, set[str]]:
        rc = main(["check", str(path), "--select", "CKP4", "--output-format", "json", *argv])
        doc = json.loads(capsys.readouterr().out)
        return rc, {f["code"] for f in doc["findings"]}

    rc_all, codes_all = run()
    rc_ignored, codes_ignored = run("--ignore", "CKP406")
    assert "CKP406" in codes_all and "CKP407" not in codes_all
    assert codes_ignored == codes_all - {"CKP406"}
    assert rc_ignored == rc_all == 0  # only warnings (CKP406, and CKP404 for the chat template) either way


def test_nothing_recognized_is_hidden_only_when_ignored_by_name(tmp_path):
    """--select DAT on an empty folder still fails (no silent pass); --ignore DOC002 hides it."""
    from doctor.runner import check

    empty = tmp_path / "empty"
    empty.mkdir()
    assert [f.code for f in check(str(empty), select=["DAT"]).findings] == ["DOC002"]
    assert [f.code for f in check(str(empty)).findings if f.code.startswith("DOC")] == ["DOC002"]
    assert not [f for f in check(str(empty), ignore=["DOC002"]).findings if f.code.startswith("DOC")]
    assert not [f for f in check(str(empty), ignore=["DOC"]).findings if f.code.startswith("DOC")]
