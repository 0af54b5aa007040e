"""The result of a run: findings, per-check results, artifacts, what fixers wrote, and each
command's own section (``triage``, ``sanity``, ``merge``, ``convert``, ``env``).

This module is the one place that writes the JSON contract: ``Report.to_dict`` (with
``schema_version``) and ``contract_schema()``, the JSON Schema of it shipped as
``doctor/data/schemas/report.schema.json``. See docs/report.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from doctor.artifacts import Artifact
from doctor.errors import DoctorError
from doctor.findings import CheckResult, Finding, Severity, Status

SCHEMA_VERSION = 1
SCHEMA_FILE = "report.schema.json"  # in doctor/data/schemas/
# The commands' own sections, beside the common top level; each is an object its command owns
# (new fields may be added to it without changing schema_version).
SECTIONS = ("triage", "sanity", "merge", "convert", "env")
TOP_LEVEL = ("schema_version", "tool", "findings", "checks", "artifacts", "fixes", "summary")


class ChecksFailed(DoctorError):
    """Raised by ``Report.raise_for_errors`` when a check found errors."""

    exit_code = 1

    def __init__(self, report: Report) -> None:
        errors = [f for f in report.findings if f.severity is Severity.ERROR]
        lines = [f"{f.path}: {f.code} {f.message}" for f in errors[:20]]
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"vlm-doctor found {len(errors)} error(s):\n" + "\n".join(lines) + more)
        self.report = report


@dataclass
class FixOutcome:
    """What one fixer did (or would do, with --diff) for one artifact."""

    fixer: str
    path: str
    written: list[str] = field(default_factory=list)
    summary: str = ""
    diff: str | None = None
    codes: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Report:
    artifacts: list[Artifact] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    results: list[CheckResult] = field(default_factory=list)
    fixes: list[FixOutcome] = field(default_factory=list)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def set_section(self, name: str, data: Mapping[str, Any]) -> None:
        """A command's own section of the report (``"triage"``, ``"merge"``, ...)."""
        if name not in SECTIONS:
            raise ValueError(f"unknown report section {name!r}; known: {', '.join(SECTIONS)}")
        self.sections[name] = dict(data)

    def collect(self, fixtures: Mapping[str, Any]) -> None:
        """Take what the report shows from the fixture values one artifact's checks computed
        (called by the runner, so that no check writes into the report): a sanity pass becomes
        an entry of the ``sanity`` section, and a training run's save checks (RUN2xx) get one
        result per save, in ``check`` as in ``triage``."""
        result = fixtures.get("sanity_result")
        if result is not None and hasattr(result, "to_dict"):
            self.add_sanity(result)
        analysis = fixtures.get("run_analysis")
        if analysis is not None and hasattr(analysis, "states"):
            self.spread_results("RUN2", [str(st.save.path) for st in analysis.states], str(analysis.layout.root))

    def add_sanity(self, result: Any) -> None:
        """One model's sanity pass (a ``doctor.sanity.SanityResult``): its stage table. The
        findings of the stages are the report's findings (SAN001-SAN006), not repeated here."""
        entry = result.to_dict()
        entry["stages"] = [{k: v for k, v in st.items() if k != "findings"} for st in entry.get("stages", [])]
        self.sections.setdefault("sanity", {"models": []})["models"].append(entry)

    def select(self, selection: Any) -> Report:
        """Hide the findings and results of the codes ``selection`` does not select (for reports
        built outside the runner, such as the post-write check of merge and convert)."""
        return replace(self, findings=[f for f in self.findings if selection.matches(f.code)],
                       results=[r for r in self.results if selection.matches(r.code)])

    def spread_results(self, prefix: str, subjects: Iterable[str], root: str) -> None:
        """Turn the results of the checks whose code starts with ``prefix`` on ``root`` into one
        result per subject (a save of a training run): failed where one of the check's findings
        lies in that subject, passed otherwise (skipped stays skipped). A finding in none of the
        subjects keeps a failed result on ``root``. JUnit then has a testcase per save."""
        subjects = sorted(set(subjects), key=len, reverse=True)
        out: list[CheckResult] = []
        for r in self.results:
            if not (r.code.startswith(prefix) and r.path == root) or not subjects:
                out.append(r)
                continue
            hit: set[str] = set()
            stray = False
            for f in self.findings:
                if f.code != r.code:
                    continue
                owner = next((s for s in subjects if f.path == s or f.path.startswith(s.rstrip("/") + "/")), None)
                if owner is None:
                    stray = True
                else:
                    hit.add(owner)
            for subject in sorted(subjects):
                status = r.status if r.status is Status.SKIP else (Status.FAIL if subject in hit else Status.PASS)
                out.append(replace(r, path=subject, status=status, reason=r.reason if status is Status.SKIP else None))
            if stray:
                out.append(replace(r, status=Status.FAIL))
        self.results = out

    def statistics(self) -> list[dict[str, Any]]:
        """Findings per code, most frequent first (ruff's --statistics)."""
        rows: dict[str, dict[str, Any]] = {}
        for f in self.findings:
            row = rows.setdefault(f.code, {"code": f.code, "name": f.name, "severity": f.severity.value,
                                           "count": 0, "fixable": 0})
            row["count"] += 1
            row["fixable"] += bool(f.fix and f.fix.fixer)
        return sorted(rows.values(), key=lambda r: (-r["count"], r["code"]))

    @property
    def ok(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    @property
    def internal_errors(self) -> list[Finding]:
        return [f for f in self.findings if f.code == "DOC001"]

    def raise_for_errors(self) -> Report:
        if not self.ok:
            raise ChecksFailed(self)
        return self

    def counts(self) -> dict[str, int]:
        c = {s.value: 0 for s in Severity}
        for f in self.findings:
            c[f.severity.value] += 1
        return c

    def at_or_above(self, level: Severity) -> list[Finding]:
        return [f for f in self.findings if f.severity.rank >= level.rank]

    def sorted_findings(self) -> list[Finding]:
        order = {a.path: i for i, a in enumerate(self.artifacts)}
        return sorted(
            self.findings,
            key=lambda f: (order.get(f.path, _owner_index(f.path, order)), -f.severity.rank, f.code, f.path),
        )

    def to_dict(self, version: str) -> dict[str, Any]:
        """The stable, versioned JSON contract (schema_version 1)."""
        counts = self.counts()
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "vlm-doctor", "version": version},
            "findings": [f.to_dict() for f in self.sorted_findings()],
            "checks": [r.to_dict() for r in self.results],
            "artifacts": [a.to_dict() for a in self.artifacts],
            "fixes": [x.to_dict() for x in self.fixes],
            "summary": {
                **counts,
                "artifacts": len(self.artifacts),
                "checks": {s.value: sum(r.status is s for r in self.results) for s in Status},
            },
            **{name: self.sections[name] for name in SECTIONS if name in self.sections},
        }


def _owner_index(path: str, order: dict[str, int]) -> int:
    """Findings inside an artifact folder sort with that artifact."""
    best = len(order)
    for apath, i in order.items():
        if path.startswith(apath.rstrip("/") + "/"):
            best = min(best, i)
    return best


def _obj(properties: dict[str, Any], required: Iterable[str] | None = None, extra: bool = False) -> dict[str, Any]:
    return {"type": "object", "properties": properties,
            "required": list(properties if required is None else required), "additionalProperties": extra}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def contract_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``Report.to_dict``: the common top level, strict, and
    each command's section, open to new fields. Shipped as doctor/data/schemas/report.schema.json
    (a test keeps the file equal to this)."""
    string, integer, number = {"type": "string"}, {"type": "integer", "minimum": 0}, {"type": "number"}
    severity = {"enum": ["error", "warning", "info"]}
    code = {"type": "string", "pattern": "^[A-Z]{3}[0-9]{3}$"}
    location = _obj({"pointer": string, "line": {"type": "integer", "minimum": 1}, "column": {"type": "integer", "minimum": 1},
                     "tensor": string, "key": string, "record": integer}, required=())
    fix = _obj({"description": string, "applicability": {"enum": ["safe", "unsafe", "display-only"]},
                "fixer": _nullable(string)})
    finding = _obj({"code": code, "name": string, "severity": severity, "message": string, "path": string,
                    "location": _nullable({"$ref": "#/$defs/location"}), "why": _nullable(string),
                    "hint": _nullable(string), "fix": _nullable({"$ref": "#/$defs/fix"})})
    check = _obj({"code": code, "name": string, "path": string, "status": {"enum": ["pass", "fail", "skip"]},
                  "reason": _nullable(string)})
    artifact = _obj({"path": string, "kind": string, "kinds": {"type": "array", "items": string}})
    fix_outcome = _obj({"fixer": string, "path": string, "written": {"type": "array", "items": string},
                        "summary": string, "diff": _nullable(string), "codes": {"type": "array", "items": code},
                        "error": _nullable(string)})
    summary = _obj({"error": integer, "warning": integer, "info": integer, "artifacts": integer,
                    "checks": _obj({"pass": integer, "fail": integer, "skip": integer})})
    stage = _obj({"stage": {"type": "integer", "minimum": 1}, "code": code, "name": string,
                  "status": {"enum": ["pass", "warn", "fail", "skip"]}, "seconds": number,
                  "peak_memory_bytes": _nullable(integer), "detail": string},
                 required=("stage", "code", "name", "status", "seconds"), extra=True)
    sections = {
        "triage": _obj({"run": string, "saves": {"type": "array", "items": _obj(
                            {"name": string, "path": string, "step": _nullable(integer), "complete": {"type": "boolean"}},
                            extra=True)},
                        "recommendation": {"type": "object"}}, extra=True),
        "sanity": _obj({"models": {"type": "array", "items": _obj(
                            {"model": string, "ok": {"type": "boolean"},
                             "stages": {"type": "array", "items": {"$ref": "#/$defs/stage"}}}, extra=True)}},
                       extra=True),
        "merge": _obj({"out": _nullable(string), "kind": string, "written": {"type": "boolean"}},
                      required=("out", "written"), extra=True),
        "convert": _obj({"out": _nullable(string), "kind": string, "written": {"type": "boolean"}},
                        required=("out", "written"), extra=True),
        "env": _obj({"python": string, "packages": {"type": "object"}}, extra=True),
    }
    top: dict[str, Any] = {
        "schema_version": {"const": SCHEMA_VERSION},
        "tool": _obj({"name": {"const": "vlm-doctor"}, "version": string}),
        "findings": {"type": "array", "items": {"$ref": "#/$defs/finding"}},
        "checks": {"type": "array", "items": {"$ref": "#/$defs/check"}},
        "artifacts": {"type": "array", "items": {"$ref": "#/$defs/artifact"}},
        "fixes": {"type": "array", "items": {"$ref": "#/$defs/fix_outcome"}},
        "summary": {"$ref": "#/$defs/summary"},
    }
    top.update({name: {"$ref": f"#/$defs/section_{name}"} for name in SECTIONS})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://github.com/vlm-doctor/vlm-doctor/schemas/{SCHEMA_FILE}",
        "title": "vlm-doctor report",
        "description": "The JSON report of every vlm-doctor command (--output-format json): the common top "
                       "level, plus the command's own section (triage, sanity, merge, convert or env).",
        "type": "object",
        "properties": top,
        "required": [k for k in TOP_LEVEL],
        "additionalProperties": False,
        "$defs": {"location": location, "fix": fix, "finding": finding, "check": check, "artifact": artifact,
                  "fix_outcome": fix_outcome, "summary": summary, "stage": stage,
                  **{f"section_{name}": schema for name, schema in sections.items()}},
    }


def schema_path() -> Path:
    return Path(__file__).parent / "data" / "schemas" / SCHEMA_FILE


def write_schema() -> Path:
    """Regenerate the shipped schema file from ``contract_schema()``."""
    path = schema_path()
    path.write_text(json.dumps(contract_schema(), indent=2) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":  # python -m doctor.report: rewrite doctor/data/schemas/report.schema.json
    print(write_schema())
