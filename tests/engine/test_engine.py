"""The engine: selection, requirements, internal errors, the Python API and the JSON contract."""

from __future__ import annotations

import json

import pytest

import doctor
from doctor.errors import UsageError
from doctor.findings import Status
from doctor.report import ChecksFailed
from doctor.selection import Selection

from tests.helpers.engine import Crashing, NeedsCrashing, PlantedFinding, PlantedWarning, planted


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "data.json"
    p.write_text(json.dumps([{"id": "ok"}, {"id": "bad"}, {"id": "meh"}]))
    return str(p)


def test_python_api_reports_and_raises(data):
    with planted(PlantedFinding, PlantedWarning):
        report = doctor.check(data, select=["DAT99"])
    codes = sorted(f.code for f in report.findings)
    assert codes == ["DAT990", "DAT991"]
    assert not report.ok
    bad = next(f for f in report.findings if f.code == "DAT990")
    assert bad.location.pointer == "/1/id" and bad.hint == "Remove the record." and bad.why == "It is planted."
    with pytest.raises(ChecksFailed, match="DAT990 record is bad"):
        report.raise_for_errors()


def test_warning_only_report_is_ok(data):
    with planted(PlantedWarning):
        report = doctor.check(data, select=["DAT991"])
    assert report.ok and report.raise_for_errors() is report


def test_crash_becomes_internal_error_and_others_still_run(data):
    with planted(PlantedFinding, Crashing, NeedsCrashing):
        report = doctor.check(data, select=["DAT99"])
    by_code = {r.code: r for r in report.results if r.code.startswith("DAT99")}
    assert by_code["DAT990"].status is Status.FAIL
    assert by_code["DAT992"].status is Status.FAIL and by_code["DAT992"].reason == "internal error"
    assert by_code["DAT993"].status is Status.SKIP and "DAT992" in by_code["DAT993"].reason
    internal = report.internal_errors
    assert len(internal) == 1 and "planted crash" in internal[0].message and "DAT992" in internal[0].message
    assert any(f.code == "DAT990" for f in report.findings)


@pytest.mark.parametrize(
    ("select", "ignore", "code", "expected"),
    [
        (["ALL"], [], "ADP010", True),
        (["ADP"], [], "CKP001", False),
        (["ADP"], ["ADP010"], "ADP010", False),
        (["ADP010"], ["ADP"], "ADP010", True),  # the more specific selector wins
        (["ALL"], ["ALL"], "ADP010", False),
        (["CKP"], [], "DOC001", True),  # the engine's own findings are never filtered
    ],
)
def test_selection(select, ignore, code, expected):
    assert Selection.from_lists(select=select, ignore=ignore).matches(code) is expected


def test_bad_selector_is_usage_error():
    with pytest.raises(UsageError, match="invalid rule selector"):
        Selection.from_lists(select=["adp-010"])


def test_json_contract(data):
    from doctor.reporters import OutputFormat, RenderContext, render

    with planted(PlantedFinding):
        report = doctor.check(data, select=["DAT990"])
    doc = json.loads(render(report, OutputFormat.JSON, RenderContext(version="9.9")))
    assert doc["schema_version"] == 1 and doc["tool"] == {"name": "vlm-doctor", "version": "9.9"}
    finding = doc["findings"][0]
    assert {"code", "name", "severity", "message", "path", "location", "hint", "fix"} <= set(finding)
    assert finding["location"] == {"pointer": "/1/id", "line": 2, "column": 2}
    assert finding["fix"]["applicability"] == "unsafe"
    assert {"code", "path", "status", "reason"} <= set(doc["checks"][0])
    assert doc["summary"]["error"] == 1 and doc["summary"]["artifacts"] == 1
