"""Output formats, one small module each behind one interface (pip-audit's layout).

Each module exposes ``render(report: Report, ctx: RenderContext) -> str``."""

from __future__ import annotations

import enum
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
