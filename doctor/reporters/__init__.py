"""Output formats, one small module each behind one interface (pip-audit's layout).

Each module exposes ``render(report: Report, ctx: RenderContext) -> str``. ``emit`` is what every
command calls: it renders (or prints ``--statistics``), appends ``--show-fixes``, writes stdout or
``--output-file`` and returns the exit code. A command may pass its own ``full`` renderer for the
human format (triage's table of saves); every other format is the same for every command."""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doctor.options import ReportSettings
    from doctor.report import Report


class OutputFormat(str, enum.Enum):
    FULL = "full"
    CONCISE = "concise"
    JSON = "json"
    JSON_LINES = "json-lines"
    GITHUB = "github"
    SARIF = "sarif"
    JUNIT = "junit"

    @property
    def module(self) -> str:
        return "doctor.reporters." + self.value.replace("-", "_")


@dataclass
class RenderContext:
    version: str
    color: bool = False
    width: int | None = None
    verbose: bool = False
    cwd: str | None = None


def render(report: Report, fmt: OutputFormat, ctx: RenderContext) -> str:
    module = importlib.import_module(fmt.module)
    return module.render(report, ctx)


def emit(report: Report, settings: ReportSettings, full: Callable[[Report, RenderContext], str] | None = None) -> int:
    """Write ``report`` as ``settings`` say and return the command's exit code."""
    import sys
    from pathlib import Path

    from doctor import __version__

    fmt = OutputFormat(settings.format)
    to_terminal = settings.output_file is None and sys.stdout.isatty()
    ctx = RenderContext(version=__version__, color=to_terminal, verbose=settings.verbose)
    if settings.statistics:
        from doctor.reporters.statistics import render as render_statistics

        text = render_statistics(report, ctx, as_json=fmt in (OutputFormat.JSON, OutputFormat.JSON_LINES))
    elif fmt is OutputFormat.FULL and full is not None:
        text = full(report, ctx)
    else:
        text = render(report, fmt, ctx)
    if settings.show_fixes and not settings.statistics and fmt in (OutputFormat.FULL, OutputFormat.CONCISE):
        from doctor.reporters.show_fixes import render as render_fixes

        text += render_fixes(report, ctx)
    if settings.output_file:
        from doctor.atomic import atomic_file

        with atomic_file(Path(settings.output_file)) as fh:
            fh.write(text)
    elif not (settings.quiet and not report.findings and not report.fixes):
        sys.stdout.write(text)
    return settings.exit_code(report)
