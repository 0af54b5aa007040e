"""The fix engine: hand each artifact's fixable findings to the fixer that repairs them.

A fixer is a module ``doctor.fixers.<name>`` with::

    def apply(artifact: Artifact, findings: list[Finding], options: Options) -> FixOutcome

It writes a NEW artifact atomically (``doctor.atomic``), never touches its input, and with
``options.diff`` only describes what it would change (``FixOutcome.diff``) without writing.
"""

from __future__ import annotations

import importlib
from collections import defaultdict

from doctor.findings import Applicability, Finding
from doctor.options import Options
from doctor.report import FixOutcome, Report


def applicable(finding: Finding, unsafe: bool) -> bool:
    fix = finding.fix
    if fix is None or fix.fixer is None or fix.applicability is Applicability.DISPLAY_ONLY:
        return False
    return fix.applicability is Applicability.SAFE or unsafe


def apply_fixes(report: Report, options: Options) -> None:
    groups: dict[tuple[str, str], list[Finding]] = defaultdict(list)
    owners = {a.path: a for a in report.artifacts}
    for f in report.findings:
        if applicable(f, options.unsafe_fixes):
            owner = _owner(f.path, owners)
            if owner is not None:
                groups[(owner, f.fix.fixer)].append(f)  # type: ignore[union-attr]
    for (path, fixer), findings in groups.items():
        module = importlib.import_module(f"doctor.fixers.{fixer}")
        try:
            outcome: FixOutcome = module.apply(owners[path], findings, options)
        except Exception as e:  # noqa: BLE001 - a failed fix is reported, the run goes on
            from doctor.errors import DoctorError

            msg = str(e) if isinstance(e, DoctorError) else f"{type(e).__name__}: {e}"
            outcome = FixOutcome(fixer=fixer, path=path, error=msg)
        outcome.codes = sorted({f.code for f in findings})
        report.fixes.append(outcome)


def _owner(path: str, owners: dict) -> str | None:
    if path in owners:
        return path
    candidates = [p for p in owners if path.startswith(p.rstrip("/") + "/")]
    return max(candidates, key=len) if candidates else None
