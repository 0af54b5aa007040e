"""``--output-format github``: GitHub Actions workflow commands (annotations on the PR)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doctor.report import Report
    from doctor.reporters import RenderContext

LEVELS = {"error": "error", "warning": "warning", "info": "notice"}


def escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(s: str) -> str:
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


def render(report: Report, ctx: RenderContext) -> str:
    out = []
    for f in report.sorted_findings():
        props = []
        if not f.path.startswith("<"):
            props.append(f"file={escape_property(f.path)}")
        if f.location and f.location.line is not None:
            props.append(f"line={f.location.line}")
            if f.location.column is not None:
                props.append(f"col={f.location.column}")
        props.append(f"title={escape_property(f'{f.code} {f.name}')}")
        where = f.location.render() if f.location and f.location.line is None else ""
        message = f"{f.message}" + (f" [{where}]" if where else "") + (f"\nFix: {f.hint}" if f.hint else "")
        out.append(f"::{LEVELS[f.severity.value]} {','.join(props)}::{escape_data(message)}\n")
    return "".join(out)
