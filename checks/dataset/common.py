"""What every DAT check shares: the capped problem collector and the check base class.

A scan of a 665k-record file must not produce a million findings: each code keeps the first
``CAP`` problems as findings and counts the rest, which become one summary finding
("... and 12,345 more records"). The fixer does not depend on the list being complete: it
re-checks every record while it rewrites the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from doctor.findings import Applicability, Finding, Fix, Location, Severity
from doctor.registry import Check

CAP = 50
FIXER = "dataset"


@dataclass(frozen=True)
class Problem:
    """One problem in one record (or in the file, with ``index`` None)."""

    message: str
    index: int | None = None
    pointer: str | None = None
    line: int | None = None
    column: int | None = None
    severity: Severity | None = None
    fix: Fix | None = None
    hint: str | None = None
    path: str | None = None


class Problems:
    """Problems by code: the first ``cap`` of each kept, all of them counted."""

    def __init__(self, cap: int = CAP) -> None:
        self.cap = cap
        self.samples: dict[str, list[Problem]] = {}
        self.counts: dict[str, int] = {}
        # Fix kinds seen per code, beyond the cap too: the summary finding offers them.
        self.fixes: dict[str, dict[Applicability, Fix]] = {}

    def add(self, code: str, problem: Problem) -> None:
        n = self.counts.get(code, 0) + 1
        self.counts[code] = n
        if problem.fix is not None:
            self.fixes.setdefault(code, {}).setdefault(problem.fix.applicability, problem.fix)
        if n <= self.cap:
            self.samples.setdefault(code, []).append(problem)

    def record(self, code: str, index: int, line: int | None, column: int | None, parts: tuple[Any, ...],
               message: str, severity: Severity | None = None, fix: Fix | None = None) -> None:
        """A problem at JSON pointer ``/index/parts...`` of a record."""
        n = self.counts.get(code, 0) + 1
        if n > self.cap:  # the hot path on a broken 665k-record file: count, build nothing
            self.counts[code] = n
            if fix is not None:
                self.fixes.setdefault(code, {}).setdefault(fix.applicability, fix)
            return
        pointer = Location.json_pointer(index, *parts)
        self.add(code, Problem(message, index, pointer, line, column, severity, fix))

    def count(self, code: str) -> int:
        return self.counts.get(code, 0)


# Fixes offered by the findings; the dataset fixer (fixers/dataset.py) knows what each code means.
DROP = Fix("drop the record (it goes to <name>.rejected.jsonl with the reason)", Applicability.UNSAFE, FIXER)


def repair(description: str) -> Fix:
    return Fix(description, Applicability.SAFE, FIXER)


def describe(index: int, record: Any) -> str:
    """``record 12``, or ``record 12 (id "abc")`` when the record has an id."""
    rid = record.get("id") if isinstance(record, dict) else None
    if isinstance(rid, (str, int)) and not isinstance(rid, bool):
        shown = rid if isinstance(rid, int) else f'"{rid[:40]}"'
        return f"record {index} (id {shown})"
    return f"record {index}"


def kind(value: Any) -> str:
    """How a JSON value reads in a message: "null", "a number", "a list", ..."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


class DatasetCheck(Check):
    """A check whose problems were collected by the one streaming pass (``dataset_scan``)."""

    artifacts: ClassVar[frozenset[str]] = frozenset({"dataset"})
    #: what the records are called in the "... and N more" finding
    unit: ClassVar[str] = "records"

    def run(self, dataset_scan):  # type: ignore[override]
        yield from self.emit(dataset_scan.problems)

    def emit(self, problems: Problems) -> Iterator[Finding]:
        for p in problems.samples.get(self.code, ()):
            yield self.finding(
                p.message,
                path=p.path,
                location=Location(pointer=p.pointer, line=p.line, column=p.column, record=p.index)
                if (p.pointer or p.line or p.index is not None) else None,
                hint=p.hint,
                fix=p.fix,
                severity=p.severity,
            )
        more = problems.count(self.code) - len(problems.samples.get(self.code, ()))
        if more > 0:
            fixes = problems.fixes.get(self.code, {})
            fix = fixes.get(Applicability.SAFE) or fixes.get(Applicability.UNSAFE)
            shown = len(problems.samples.get(self.code, ()))
            yield self.finding(
                f"... and {more:,} more {self.unit} with this problem (the first {shown} are listed)",
                fix=fix,
                severity=self._summary_severity(problems),
            )

    def _summary_severity(self, problems: Problems) -> Severity:
        ranks = [p.severity or self.severity for p in problems.samples.get(self.code, ())]
        return max(ranks, key=lambda s: s.rank) if ranks else self.severity
