"""The command line: exit codes, output formats, configuration and rule docs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from doctor.cli import main

from tests.helpers.engine import Crashing, PlantedFinding, PlantedWarning, planted

SARIF_SCHEMA = Path(__file__).parents[1] / "data" / "sarif-schema-2.1.0.json"


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "data.json"
    p.write_text(json.dumps([{"id": "ok"}, {"id": "bad"}, {"id": "meh"}]))
    return str(p)


@pytest.fixture
def clean(tmp_path):
    p = tmp_path / "clean.json"
    p.write_text(json.dumps([{"id": "ok"}]))
    return str(p)


def cli(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_exit_0_when_clean(capsys, clean):
    with planted(PlantedFinding):
        rc, out, _ = cli(capsys, "check", clean, "--select", "DAT990", "--output-format", "concise")
    assert rc == 0 and out == ""


def test_exit_1_on_findings_and_fail_on(capsys, data):
    with planted(PlantedFinding, PlantedWarning):
        rc, out, _ = cli(capsys, "check", data, "--select", "DAT990,DAT991", "--output-format", "concise")
        assert rc == 1
        assert re.search(r"data\.json:2:2: DAT990 \[error\] record is bad", out)
        rc_warn, _, _ = cli(capsys, "check", data, "--select", "DAT991", "--output-format", "concise")
        rc_warn_fail, _, _ = cli(capsys, "check", data, "--select", "DAT991", "--fail-on", "warning")
        rc_zero, _, _ = cli(capsys, "check", data, "--select", "DAT990", "--exit-zero")
    assert (rc_warn, rc_warn_fail, rc_zero) == (0, 1, 0)


def test_exit_2_on_usage_errors(capsys, data, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["check", data, "--output-format", "yaml"])
    assert e.value.code == 2
    rc, _, err = cli(capsys, "check", str(tmp_path / "missing.json"))
    assert rc == 2 and "no such file" in err
    rc, _, err = cli(capsys, "check", data, "--select", "not a code!")
    assert rc == 2 and "invalid rule selector" in err


def test_internal_error_exits_2_even_with_exit_zero(capsys, data):
    with planted(PlantedFinding, Crashing):
        rc, out, _ = cli(capsys, "check", data, "--select", "DAT990,DAT992", "--exit-zero", "--output-format", "json")
    doc = json.loads(out)
    assert rc == 2
    codes = {f["code"] for f in doc["findings"]}
    assert codes == {"DAT990", "DOC001"}  # the other check's finding is still reported


def test_config_file_and_unknown_key(capsys, data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vlm-doctor.toml").write_text('select = ["DAT991"]\noutput-format = "concise"\n')
    with planted(PlantedFinding, PlantedWarning):
        rc, out, _ = cli(capsys, "check", data)
    assert rc == 0 and "DAT991" in out and "DAT990" not in out
    (tmp_path / "vlm-doctor.toml").write_text('selct = ["DAT991"]\n')
    rc, _, err = cli(capsys, "check", data)
    assert rc == 2 and "did you mean 'select'" in err


def test_pyproject_tool_table_is_found_upward(capsys, data, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[tool.vlm-doctor]\nignore = ["DAT990"]\n')
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    with planted(PlantedFinding):
        rc, out, _ = cli(capsys, "check", data, "--select", "DAT99", "--output-format", "concise")
    assert rc == 0 and "DAT990" not in out


def test_sarif_is_valid_against_the_schema(capsys, data):
    with planted(PlantedFinding, PlantedWarning, Crashing):
        rc, out, _ = cli(capsys, "check", data, "--select", "DAT99", "--output-format", "sarif")
    doc = json.loads(out)
    jsonschema.validate(doc, json.loads(SARIF_SCHEMA.read_text()))
    run = doc["runs"][0]
    rule_ids = {r["id"] for r in run["tool"]["driver"]["rules"]}
    assert {"DAT990", "DAT991", "DAT992", "DOC001"} <= rule_ids
    assert all(r["ruleId"] in rule_ids for r in run["results"])
    levels = sorted(r["level"] for r in run["results"])
    assert levels == ["error", "error", "warning"]


def test_junit_parses_with_matching_counts(capsys, data):
    with planted(PlantedFinding, PlantedWarning, Crashing):
        rc, out, _ = cli(capsys, "check", data, "--select", "DAT99", "--output-format", "junit")
    root = ET.fromstring(out)
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    failures = suite.findall("testcase/failure")
    errors = suite.findall("testcase/error")
    assert int(suite.get("tests")) == len(cases) == 3
    assert int(suite.get("failures")) == len(failures) == 2
    assert int(suite.get("errors")) == len(errors) == 1
    assert int(root.get("failures")) == 2


def test_github_annotations(capsys, data):
    with planted(PlantedFinding, PlantedWarning):
        rc, out, _ = cli(capsys, "check", data, "--select", "DAT99", "--output-format", "github")
    lines = out.splitlines()
    assert len(lines) == 2
    pattern = re.compile(r"^::(error|warning|notice) file=[^,:]+(%3A[^,]*)?,(line=\d+,col=\d+,)?title=[^:]+::.+$")
    for line in lines:
        assert pattern.match(line), line
        assert "\n" not in line
    assert lines[0].startswith("::error file=") and ",line=2,col=2," in lines[0]


def test_output_file_is_written(capsys, data, tmp_path):
    target = tmp_path / "out" / "report.json"
    with planted(PlantedFinding):
        rc, out, _ = cli(capsys, "check", data, "--select", "DAT990", "--output-format", "json", "-o", str(target))
    assert rc == 1 and out == ""
    assert json.loads(target.read_text())["summary"]["error"] == 1


def test_rule_all_documents_every_check(capsys):
    rc, out, _ = cli(capsys, "rule", "--all", "--output-format", "json")
    rules = json.loads(out)
    from doctor.registry import REGISTRY

    assert rc == 0 and sorted(r["code"] for r in rules) == sorted(REGISTRY)

    for r in rules:
        assert {"code", "name", "family", "severity", "summary", "explanation"} <= set(r)
        missing = REGISTRY[r["code"]].missing_sections()
        assert not missing, f"{r['code']} lacks docstring sections {missing}"
        assert r["summary"], r["code"]


def test_rule_explains_one_code_and_suggests(capsys):
    rc, out, _ = cli(capsys, "rule", "env004")
    assert rc == 0 and "dependency-conflict" in out and "## How to fix" in out
    rc, _, err = cli(capsys, "rule", "ENV999")
    assert rc == 2 and "unknown code" in err


def test_dataset_check_imports_no_torch(tmp_path):
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"id": "1", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}]))
    code = (
        "import sys; from doctor.cli import main; rc = main(['check', sys.argv[1], '--output-format', 'json', '-o', sys.argv[2]]);"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'tokenizers') if m in sys.modules); print(heavy); sys.exit(0)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(data), str(tmp_path / "r.json")], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["artifacts"][0]["kind"] == "dataset"


def test_env_json(capsys):
    rc, out, _ = cli(capsys, "env", "--output-format", "json")
    doc = json.loads(out)
    assert doc["env"]["packages"]["torch"] is not None
    assert all(f["code"].startswith("ENV") for f in doc["findings"])
    assert rc in (0, 1)


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


def test_readme_commands_section_matches_help(capsys):
    """README's Commands section shows the shared options once and each command's own: every
    option it names exists in that command's --help, and every report command has the shared ones."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Commands"):readme.index("\n## ", readme.index("## Commands") + 5)]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    shared = set(re.findall(r"--[a-z][a-z0-9-]+", blocks[0]))
    assert {"--output-format", "--select", "--ignore", "--extend-select", "--fail-on", "--exit-zero",
            "--statistics", "--show-fixes", "--quiet", "--no-progress", "--config", "--output-file"} <= shared
    own: dict[str, set[str]] = {}
    command = None
    for line in blocks[1].splitlines():
        m = re.match(r"vlm-doctor (\w+)", line)
        command = m.group(1) if m else command
        own.setdefault(command, set()).update(re.findall(r"--[a-z][a-z0-9-]+", line))
    assert set(own) == {"check", "triage", "sanity", "merge", "convert", "env", "rule", "demo"}
    for name, options in own.items():
        text = _help(capsys, name)
        for option in options:
            assert option in text, f"README shows {option} for {name}, --help does not"
        if name not in ("rule", "demo"):
            for option in shared:
                assert option in text, f"{name} lacks the shared option {option}"
