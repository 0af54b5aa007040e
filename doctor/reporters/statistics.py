"""``--statistics``: the number of findings per code, most frequent first (ruff's layout:
count, code, ``[*]`` when --fix can repair some of them, name)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doctor.report import Report
    from doctor.reporters import RenderContext


def render(report: Report, ctx: RenderContext, as_json: bool = False) -> str:
    rows = report.statistics()
    if as_json:
        return json.dumps(rows, indent=2) + "\n"
    if not rows:
        return ""
    width = max(len(str(r["count"])) for r in rows)
    return "".join(f"{r['count']:>{width}}  {r['code']}  {'[*]' if r['fixable'] else '   '}  {r['name']}"
                   f"  ({r['severity']})\n" for r in rows)
