"""``--output-format concise``: one line a finding, ``path:location: CODE message``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doctor.report import Report
    from doctor.reporters import RenderContext


def render(report: Report, ctx: RenderContext) -> str:
    lines = []
    for f in report.sorted_findings():
        where = f.location.render() if f.location else ""
        prefix = f"{f.path}:{where}:" if where else f"{f.path}:"
        lines.append(f"{prefix} {f.code} [{f.severity.value}] {f.message}")
    return "".join(line + "\n" for line in lines)
