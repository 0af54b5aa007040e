"""``--show-fixes``: after the findings, what ``--fix`` would do for each fixable finding
(safe fixes with --fix; unsafe ones need --unsafe-fixes as well; display-only ones are never
applied). Every fix writes a new artifact beside its input."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doctor.report import Report
    from doctor.reporters import RenderContext

FLAGS = {"safe": "--fix", "unsafe": "--fix --unsafe-fixes", "display-only": "shown only, never applied"}


def render(report: Report, ctx: RenderContext) -> str:
    fixable = [f for f in report.sorted_findings() if f.fix is not None]
    if not fixable:
        return "\nNo fixes available.\n"
    lines = [f"\nFixes ({len(fixable)}):\n"]
    for f in fixable:
        where = f.location.render() if f.location else ""
        kind = f.fix.applicability.value if f.fix.fixer else "display-only"  # no fixer: nothing to apply
        lines.append(f"  {f.path}{':' + where if where else ''}: {f.code} {f.fix.description} ({kind}; {FLAGS[kind]})\n")
    return "".join(lines)
