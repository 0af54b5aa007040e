"""The result of a run: findings, per-check results, artifacts and what fixers wrote."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from doctor.artifacts import Artifact
from doctor.errors import DoctorError
from doctor.findings import CheckResult, Finding, Severity, Status

SCHEMA_VERSION = 1


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
    stats: dict[str, Any] = field(default_factory=dict)

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
            "stats": self.stats,
            "summary": {
                **counts,
                "artifacts": len(self.artifacts),
                "checks": {s.value: sum(r.status is s for r in self.results) for s in Status},
            },
        }


def _owner_index(path: str, order: dict[str, int]) -> int:
    """Findings inside an artifact folder sort with that artifact."""
    best = len(order)
    for apath, i in order.items():
        if path.startswith(apath.rstrip("/") + "/"):
            best = min(best, i)
    return best
