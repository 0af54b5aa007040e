"""``--output-format json-lines``: one finding per line, for streaming into log tools."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doctor.report import Report
    from doctor.reporters import RenderContext


def render(report: Report, ctx: RenderContext) -> str:
    return "".join(json.dumps(f.to_dict(), ensure_ascii=False, default=str) + "\n" for f in report.sorted_findings())
