"""One CLI, one report contract: every command that produces findings (check, triage, sanity,
merge, convert, env) in every output format, on tiny real artifacts built once for the module.

JSON validates against the shipped schema (doctor/data/schemas/report.schema.json), SARIF against
the SARIF 2.1.0 schema, JUnit parses with counts that match the JSON's checks, GitHub lines follow
the workflow-command syntax, and exit codes follow --fail-on / --exit-zero."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from doctor.cli import main  # noqa: E402
from doctor.options import FORMATS  # noqa: E402
from doctor.report import SCHEMA_VERSION, contract_schema, schema_path  # noqa: E402

SARIF_SCHEMA = json.loads((Path(__file__).parents[1] / "data" / "sarif-schema-2.1.0.json").read_text())
REPORT_SCHEMA = json.loads(schema_path().read_text())
VALIDATOR = jsonschema.Draft202012Validator(REPORT_SCHEMA)
FINDING = jsonschema.Draft202012Validator({"$defs": REPORT_SCHEMA["$defs"], "$ref": "#/$defs/finding"})
# ::error file=F,line=1,col=2,title=T::message   (properties escaped: %25 %0D %0A %3A %2C)
GITHUB = re.compile(r"^::(error|warning|notice)( (file=[^,]+,)?(line=\d+,(col=\d+,)?)?title=[^,:]+)?::[^\r\n]*$")
RANK = {"error": 3, "warning": 2, "info": 1}
COMMANDS = ("check", "triage", "sanity", "merge", "convert", "env")
SECTION = {"triage": "triage", "sanity": "sanity", "merge": "merge", "convert": "convert", "env": "env"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The artifacts, built once: a dataset with planted problems, a training run whose loss is
    exactly 0.0 with a frozen adapter, a llava model without its projector (the sanity pass
    fails stage 1), a LoRA on a healthy llava model, and an original-LLaVA checkpoint."""
    from doctor.testing import make_llava_dataset, make_llava_model, make_llava_original_model, make_lora_adapter

    from tests.helpers.run import make_run

    root = tmp_path_factory.mktemp("contract")
    data = make_llava_dataset(root / "data", n=4, problems=("missing-image", "bad-role", "double-image-token"))
    run = make_run(root / "run", [2.0, 1.5, 0.0, 0.0, 0.0, 0.0], save_every=2, frozen_after=4)
    broken = make_llava_model(root / "broken", drop_tensors=("multi_modal_projector",)).path
    base = make_llava_model(root / "base")
    adapter = make_lora_adapter(base, root / "lora", train_steps=1)
    original = make_llava_original_model(root / "original", dtype="float32")
    return {"data": str(data), "run": str(run), "broken": str(broken), "base": str(base.path),
            "adapter": str(getattr(adapter, "path", adapter)), "original": str(original.path), "root": root}


def argv(command: str, tiny: dict, out: Path) -> list[str]:
    return {
        "check": ["check", tiny["data"]],
        "triage": ["triage", tiny["run"]],
        "sanity": ["sanity", tiny["broken"], "--device", "cpu", "--max-new-tokens", "2"],
        "merge": ["merge", tiny["adapter"], "--base", tiny["base"], "-o", str(out), "--force"],
        "convert": ["convert", tiny["original"], "-o", str(out), "--force"],
        "env": ["env"],
    }[command] + ["--no-progress"]


def run(capsys, args: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(args)
    return rc, capsys.readouterr().out


def expected_rc(doc: dict, fail_on: str = "error", exit_zero: bool = False) -> int:
    if any(f["code"] == "DOC001" for f in doc["findings"]):
        return 2
    if exit_zero:
        return 0
    return int(any(RANK[f["severity"]] >= RANK[fail_on] for f in doc["findings"]))


@pytest.fixture(scope="module")
def documents(tiny):
    """Each command's JSON report, produced once."""
    docs = {}
    for command in COMMANDS:
        target = tiny["root"] / f"{command}.json"
        rc = main(argv(command, tiny, tiny["root"] / f"{command}-out") + ["--output-format", "json",
                                                                           "--output-file", str(target)])
        doc = json.loads(target.read_text())
        docs[command] = (rc, doc)
    return docs


@pytest.mark.parametrize("command", COMMANDS)
def test_json_follows_the_contract(command, documents):
    rc, doc = documents[command]
    errors = sorted(VALIDATOR.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    assert doc["schema_version"] == SCHEMA_VERSION
    assert SECTION[command] in doc if command != "check" else not set(doc) & set(SECTION.values())
    assert rc == expected_rc(doc)
    assert doc["summary"]["checks"] == {s: sum(c["status"] == s for c in doc["checks"]) for s in ("pass", "fail", "skip")}
    assert {s: doc["summary"][s] for s in RANK} == {s: sum(f["severity"] == s for f in doc["findings"]) for s in RANK}


def test_the_artifacts_exercise_what_they_should(documents):
    """The tiny artifacts are not clean, so the other tests compare real findings."""
    codes = {c: {f["code"] for f in doc["findings"]} for c, (_, doc) in documents.items()}
    assert {"RUN102", "RUN202"} <= codes["triage"]
    assert "SAN001" in codes["sanity"] and documents["sanity"][0] == 1
    assert any(code.startswith("DAT") for code in codes["check"]) and documents["check"][0] == 1
    assert documents["merge"][1]["merge"]["written"] and documents["convert"][1]["convert"]["checked"]
    # a testcase per stage and per save
    sanity = [c for c in documents["sanity"][1]["checks"] if c["code"].startswith("SAN")]
    assert sorted(c["code"] for c in sanity) == [f"SAN00{n}" for n in range(1, 7)]
    saves = {s["path"] for s in documents["triage"][1]["triage"]["saves"]}
    per_save = {c["path"] for c in documents["triage"][1]["checks"] if c["code"] == "RUN202"}
    assert per_save == saves and len(saves) == 3
    frozen = {c["path"] for c in documents["triage"][1]["checks"] if c["code"] == "RUN202" and c["status"] == "fail"}
    assert frozen == {p for p in saves if p.endswith("checkpoint-6")}


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "json"])
@pytest.mark.parametrize("command", COMMANDS)
def test_every_format(command, fmt, tiny, documents, tmp_path, capsys):
    _, doc = documents[command]
    rc, out = run(capsys, argv(command, tiny, tmp_path / "out") + ["--output-format", fmt])
    assert rc == expected_rc(doc)
    findings = doc["findings"]
    if fmt == "full":
        assert "Found " in out
        if command == "sanity":
            assert "Sanity pass" in out and "1 load" in out and "FAILED" in out
    elif fmt == "concise":
        lines = [line for line in out.splitlines() if line]
        assert len(lines) == len(findings)
        assert [re.search(r" ([A-Z]{3}\d{3}) \[", line).group(1) for line in lines] == [f["code"] for f in findings]
    elif fmt == "json-lines":
        rows = [json.loads(line) for line in out.splitlines()]
        assert [r["code"] for r in rows] == [f["code"] for f in findings]
        for r in rows:
            FINDING.validate(r)
    elif fmt == "github":
        lines = out.splitlines()
        assert len(lines) == len(findings)
        for line in lines:
            assert GITHUB.match(line), line
    elif fmt == "sarif":
        sarif = json.loads(out)
        jsonschema.validate(sarif, SARIF_SCHEMA)
        results = sarif["runs"][0]["results"]
        assert [r["ruleId"] for r in results] == [f["code"] for f in findings]
        rule_ids = {r["id"] for r in sarif["runs"][0]["tool"]["driver"]["rules"]}
        assert {c["code"] for c in doc["checks"]} <= rule_ids
    elif fmt == "junit":
        root = ET.fromstring(out)
        suite = root.find("testsuite")
        cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cases) == len(doc["checks"])
        assert int(suite.get("failures")) == len(suite.findall("testcase/failure"))
        assert int(suite.get("errors")) == len(suite.findall("testcase/error"))
        assert int(suite.get("skipped")) == len(suite.findall("testcase/skipped")) == doc["summary"]["checks"]["skip"]
        assert int(suite.get("failures")) + int(suite.get("errors")) == len(findings)
        assert int(root.get("tests")) == len(cases)


@pytest.mark.parametrize("command", COMMANDS)
def test_exit_codes_follow_fail_on_and_exit_zero(command, tiny, documents, tmp_path, capsys):
    _, doc = documents[command]
    base = argv(command, tiny, tmp_path / "out") + ["--output-format", "concise"]
    for extra, want in ((["--fail-on", "info"], expected_rc(doc, "info")),
                        (["--fail-on", "warning"], expected_rc(doc, "warning")),
                        (["--exit-zero"], expected_rc(doc, exit_zero=True))):
        if command in ("sanity", "merge", "convert") and extra[0] == "--fail-on" and extra[1] == "warning":
            continue  # the costly commands: two of the three policies are enough
        rc, _ = run(capsys, base + extra)
        assert rc == want, (command, extra)


def test_ignore_hides_a_code_on_every_command(tiny, tmp_path, capsys):
    """--ignore is the same option on every command: the stage's finding and testcase are hidden."""
    rc, out = run(capsys, ["sanity", tiny["broken"], "--device", "cpu", "--max-new-tokens", "2", "--no-progress",
                           "--ignore", "SAN003", "--output-format", "junit"])
    root = ET.fromstring(out)
    cases = {c.get("name").split()[0]: c for c in root.iter("testcase")}
    assert "SAN003" not in cases and {"SAN001", "SAN002", "SAN004", "SAN005", "SAN006"} <= set(cases)
    assert cases["SAN001"].find("failure") is not None and rc == 1
    rc, out = run(capsys, ["sanity", tiny["broken"], "--device", "cpu", "--max-new-tokens", "2", "--no-progress",
                           "--ignore", "SAN001", "--output-format", "json"])
    doc = json.loads(out)
    assert "SAN001" not in {f["code"] for f in doc["findings"]} and rc == expected_rc(doc)
    assert doc["sanity"]["models"][0]["stages"][0]["status"] == "fail"  # the stage ran; its finding is hidden
    rc, out = run(capsys, ["triage", tiny["run"], "--no-progress", "--ignore", "RUN102,RUN202", "--output-format", "json"])
    assert not {"RUN102", "RUN202"} & {f["code"] for f in json.loads(out)["findings"]}


def test_statistics_and_show_fixes(tiny, capsys):
    rc, out = run(capsys, ["check", tiny["data"], "--no-progress", "--statistics"])
    counts = [(int(m.group(1)), m.group(2)) for m in re.finditer(r"^\s*(\d+)\s+([A-Z]{3}\d{3})", out, re.M)]
    assert counts and counts == sorted(counts, key=lambda c: (-c[0], c[1]))
    rc, out = run(capsys, ["check", tiny["data"], "--no-progress", "--statistics", "--output-format", "json"])
    stats = json.loads(out)
    rc2, full = run(capsys, ["check", tiny["data"], "--no-progress", "--output-format", "json"])
    findings = json.loads(full)["findings"]
    assert {r["code"]: r["count"] for r in stats} == {c: sum(f["code"] == c for f in findings) for c in {f["code"] for f in findings}}
    rc, out = run(capsys, ["check", tiny["data"], "--no-progress", "--output-format", "concise", "--show-fixes"])
    fixable = [f for f in findings if f["fix"] and f["fix"]["fixer"]]
    assert {"DAT101", "DAT111"} <= {f["code"] for f in fixable}
    assert f"Fixes ({len([f for f in findings if f['fix']])}):" in out
    for f in fixable:
        kind = f["fix"]["applicability"]
        assert f"{f['code']} {f['fix']['description']} ({kind}; --fix" in out
    assert {r["code"]: r["fixable"] for r in stats if r["fixable"]} == \
        {c: sum(f["code"] == c for f in fixable) for c in {f["code"] for f in fixable}}
    rc, out = run(capsys, ["check", tiny["data"], "--no-progress", "--statistics"])
    assert re.search(r"^\s*\d+\s+DAT101\s+\[\*\]", out, re.M)


def test_shipped_schema_is_the_one_the_report_model_writes():
    assert REPORT_SCHEMA == json.loads(json.dumps(contract_schema())), \
        "doctor/data/schemas/report.schema.json is stale: run python -m doctor.report"
    jsonschema.Draft202012Validator.check_schema(REPORT_SCHEMA)
