"""``--output-format json``: the stable, versioned contract (``schema_version`` 1)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doctor.report import Report
    from doctor.reporters import RenderContext


def render(report: Report, ctx: RenderContext) -> str:
    return json.dumps(report.to_dict(ctx.version), indent=2, ensure_ascii=False, default=str) + "\n"
