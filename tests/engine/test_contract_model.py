"""The report model behind the contract, without torch: per-save results, sections, hidden codes,
statistics, and the shared options read from configuration by a command other than check."""

from __future__ import annotations

import json

import pytest

from doctor.cli import main
from doctor.findings import CheckResult, Finding, Severity, Status
from doctor.report import Report
from doctor.selection import Selection


def _finding(code: str, path: str, severity: Severity = Severity.WARNING) -> Finding:
    return Finding(code=code, name=code.lower(), severity=severity, message="m", path=path)


def test_spread_results_gives_one_result_per_save_and_keeps_stray_findings():
    report = Report(
        findings=[_finding("RUN202", "run/checkpoint-4/adapter_model.safetensors"), _finding("RUN201", "run"),
                  _finding("RUN102", "run/checkpoint-4/trainer_state.json", Severity.ERROR)],
        results=[CheckResult("RUN202", "a", "run", Status.FAIL), CheckResult("RUN201", "b", "run", Status.FAIL),
                 CheckResult("RUN203", "c", "run", Status.SKIP, "no saves with tensors"),
                 CheckResult("RUN102", "d", "run", Status.FAIL)])
    report.spread_results("RUN2", ["run/checkpoint-2", "run/checkpoint-4"], "run")
    got = {(r.code, r.path): (r.status, r.reason) for r in report.results}
    assert got == {
        ("RUN202", "run/checkpoint-2"): (Status.PASS, None), ("RUN202", "run/checkpoint-4"): (Status.FAIL, None),
        ("RUN201", "run/checkpoint-2"): (Status.PASS, None), ("RUN201", "run/checkpoint-4"): (Status.PASS, None),
        ("RUN201", "run"): (Status.FAIL, None),  # its finding is about the run folder itself
        ("RUN203", "run/checkpoint-2"): (Status.SKIP, "no saves with tensors"),
        ("RUN203", "run/checkpoint-4"): (Status.SKIP, "no saves with tensors"),
        ("RUN102", "run"): (Status.FAIL, None),  # not a save check: stays on the run
    }


def test_sections_sit_beside_the_top_level_and_unknown_ones_are_refused():
    report = Report()
    report.set_section("merge", {"out": "o", "written": True})
    doc = report.to_dict("1")
    assert doc["merge"] == {"out": "o", "written": True} and "stats" not in doc
    with pytest.raises(ValueError, match="unknown report section"):
        report.set_section("findings", {})


def test_collect_takes_the_sanity_pass_from_the_fixtures_without_its_findings():
    class Pass:
        def to_dict(self):
            return {"model": "m", "ok": False, "stages": [{"stage": 1, "code": "SAN001", "name": "load", "status": "fail",
                                                          "seconds": 0.1, "findings": [{"code": "SAN001"}]}]}

    report = Report()
    report.collect({"artifact": object()})
    assert report.sections == {}
    report.collect({"sanity_result": Pass()})
    assert report.sections["sanity"]["models"][0]["stages"][0] == {
        "stage": 1, "code": "SAN001", "name": "load", "status": "fail", "seconds": 0.1}


def test_select_hides_findings_and_results_and_statistics_sort_by_count():
    report = Report(findings=[_finding("CKP101", "a"), _finding("CKP101", "b"), _finding("CKP301", "a"),
                              _finding("ADP001", "a")],
                    results=[CheckResult("CKP101", "x", "a", Status.FAIL), CheckResult("CKP301", "y", "a", Status.FAIL)])
    hidden = report.select(Selection.from_lists(ignore=["CKP3"]))
    assert {f.code for f in hidden.findings} == {"CKP101", "ADP001"} and [r.code for r in hidden.results] == ["CKP101"]
    assert [(r["code"], r["count"]) for r in report.statistics()] == [("CKP101", 2), ("ADP001", 1), ("CKP301", 1)]


def test_env_reads_the_shared_keys_from_configuration(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vlm-doctor.toml").write_text('output-format = "json"\nignore = ["ENV"]\n')
    assert main(["env"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["findings"] == [] and doc["checks"] == [] and "packages" in doc["env"]
    (tmp_path / "vlm-doctor.toml").write_text('output-format = "yaml"\n')
    assert main(["env"]) == 2
    assert "output-format must be one of" in capsys.readouterr().err
