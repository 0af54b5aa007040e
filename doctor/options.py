"""Options: what checks read (``Options``) and the report options every command shares.

``Options`` lives here, below the runner and the fix engine, so that neither imports the other
for it. ``add_report_options()`` is the one definition of the report options (format, output file,
selection, exit policy, progress, config) that ``check``, ``triage``, ``sanity``, ``merge``,
``convert`` and ``env`` all take; ``ReportSettings.from_args`` resolves them against
``[tool.vlm-doctor]`` (command line first), and ``doctor.reporters.emit`` writes the report and
returns the exit code. Nothing here imports anything heavy.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("full", "concise", "json", "json-lines", "github", "sarif", "junit")
SEVERITIES = ("error", "warning", "info")


@dataclass
class Options:
    """Everything a check may read from the command line or configuration."""

    base: str | None = None
    image_folder: str | None = None
    tokenizer: str | None = None
    model: str | None = None
    images: str = "header"  # none | exists | header | decode
    decode_sample: float = 100.0
    deep: bool = False
    jobs: int = 0  # 0 = one per core
    sanity: bool = False
    device: str = "auto"
    dtype: str = "auto"
    fix: bool = False
    unsafe_fixes: bool = False
    diff: bool = False
    progress: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    max_length: int | None = None  # token budget of the DAT3xx checks (default: from the model/tokenizer)
    engine: str = "local"  # local | ray: where the dataset pass runs (checks/dataset/distributed.py)
    ray_address: str | None = None  # an existing Ray cluster (default: start one on this machine)
    # The trainer's video sampling (LLaMA-Factory's model arguments of the same names and defaults):
    video_fps: float = 2.0
    video_maxlen: int = 128
    video_max_pixels: int = 256 * 256
    video_min_pixels: int = 16 * 16


VIDEO_OPTIONS = (  # (option, type, default, help): LLaMA-Factory's hparams/model_args.py
    ("--video-fps", float, 2.0, "frames sampled per second of video, as LLaMA-Factory's video_fps (default: 2.0)"),
    ("--video-maxlen", int, 128, "most frames sampled per video, as LLaMA-Factory's video_maxlen (default: 128)"),
    ("--video-max-pixels", int, 256 * 256, "frames larger than this many pixels are shrunk, as LLaMA-Factory's "
                                           "video_max_pixels (default: 65536)"),
    ("--video-min-pixels", int, 16 * 16, "frames smaller than this many pixels are grown, as LLaMA-Factory's "
                                         "video_min_pixels (default: 256)"),
)


def add_video_options(group: Any) -> None:
    """The trainer's video sampling, for the token budget of datasets with videos."""
    for flag, kind, _default, text in VIDEO_OPTIONS:
        group.add_argument(flag, type=kind, metavar="N", help=text)


def video_options(pick: Any) -> dict[str, Any]:
    """``Options`` keyword arguments of the video sampling: command line, then configuration
    (``pick(name, default)``), then LLaMA-Factory's defaults; a value that is not positive is a
    usage error."""
    out: dict[str, Any] = {}
    for flag, kind, default, _text in VIDEO_OPTIONS:
        name = flag[2:]
        try:
            value = kind(pick(name, default))
        except (TypeError, ValueError):
            value = None
        if value is None or value <= 0:
            from doctor.errors import UsageError

            raise UsageError(f"{flag} must be a positive number, got {pick(name, default)!r}")
        out[name.replace("-", "_")] = value
    if out["video_max_pixels"] < out["video_min_pixels"]:
        from doctor.errors import UsageError

        raise UsageError("--video-max-pixels cannot be smaller than --video-min-pixels (LLaMA-Factory refuses it too)")
    return out


def codes(value: str) -> list[str]:
    """``"ADP,CKP301 SEC"`` -> ``["ADP", "CKP301", "SEC"]``."""
    return [v for v in value.replace(" ", ",").split(",") if v]


def add_report_options(parser: argparse.ArgumentParser, short_output: bool = True) -> None:
    """The report options, defined once and added by the CLI to every command that produces
    findings, after the command's own. ``merge`` and ``convert`` keep ``-o`` for the folder they
    write, so their report file is ``--output-file`` alone (``short_output=False``)."""
    s = parser.add_argument_group("rule selection (shared by every command)")
    s.add_argument("--select", type=codes, metavar="CODES", help="comma-separated codes or prefixes to enable (default: ALL)")
    s.add_argument("--extend-select", type=codes, metavar="CODES", help="codes or prefixes to add to the selection")
    s.add_argument("--ignore", type=codes, metavar="CODES", help="codes or prefixes to disable (their findings are hidden)")
    o = parser.add_argument_group("report (shared by every command)")
    o.add_argument("--output-format", choices=FORMATS, help="report format (default: full)")
    names = ("-o", "--output-file") if short_output else ("--output-file",)
    o.add_argument(*names, dest="output_file", metavar="FILE", help="write the report to FILE (atomically) instead of stdout")
    o.add_argument("--fail-on", choices=SEVERITIES, help="lowest severity that makes the exit code 1 (default: error)")
    o.add_argument("--exit-zero", action="store_true", help="exit 0 even with findings (internal errors still exit 2)")
    o.add_argument("--statistics", action="store_true", help="print the number of findings per code, most frequent first, instead of the findings")
    o.add_argument("--show-fixes", action="store_true", help="after the findings, list what --fix would do for each fixable finding")
    o.add_argument("-q", "--quiet", action="store_true", help="print nothing when there are no findings")
    o.add_argument("-v", "--verbose", action="store_true", help="also list skipped checks with their reasons")
    o.add_argument("--no-progress", action="store_true", help="never show progress bars")
    o.add_argument("--config", metavar="FILE", help="use this vlm-doctor.toml / pyproject.toml instead of searching upward")


@dataclass
class ReportSettings:
    """The report options of one command run, resolved: command line over configuration."""

    format: str = "full"
    output_file: str | None = None
    select: list[str] | None = None
    ignore: list[str] = field(default_factory=list)
    extend_select: list[str] = field(default_factory=list)
    fail_on: str = "error"
    exit_zero: bool = False
    statistics: bool = False
    show_fixes: bool = False
    quiet: bool = False
    verbose: bool = False
    progress: bool = False
    config: Any = None  # doctor.config.Config

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ReportSettings:
        from doctor.config import load_config

        config = load_config(getattr(args, "config", None))

        def pick(name: str, default: Any = None) -> Any:
            value = getattr(args, name.replace("-", "_"), None)
            return value if value is not None else config.get(name, default)

        fmt = pick("output-format", "full")
        if fmt not in FORMATS:
            from doctor.errors import ConfigError

            raise ConfigError(f"{config.path}: output-format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        settings = cls(
            format=fmt, output_file=getattr(args, "output_file", None),
            select=pick("select"), ignore=pick("ignore", []), extend_select=pick("extend-select", []),
            fail_on=pick("fail-on", "error"), exit_zero=bool(getattr(args, "exit_zero", False)),
            statistics=bool(getattr(args, "statistics", False)),
            show_fixes=bool(getattr(args, "show_fixes", False) or config.get("show-fixes", False)),
            quiet=bool(getattr(args, "quiet", False)), verbose=bool(getattr(args, "verbose", False)),
            progress=not getattr(args, "no_progress", False) and sys.stderr.isatty(), config=config,
        )
        settings.selection()  # a bad selector or severity is a usage error before any work is done
        settings.severity()
        return settings

    def value(self, args: argparse.Namespace, name: str, default: Any = None) -> Any:
        """A command's own option: the command line, else the configuration, else ``default``."""
        value = getattr(args, name.replace("-", "_"), None)
        if value is not None:
            return value
        return self.config.get(name, default) if self.config is not None else default

    def selection(self) -> Any:
        from doctor.selection import Selection

        return Selection.from_lists(select=self.select, ignore=self.ignore, extend_select=self.extend_select)

    def severity(self) -> Any:
        from doctor.findings import Severity

        return Severity.parse(self.fail_on)

    def progress_factory(self) -> Any:
        from doctor.progress import progress_factory

        return progress_factory(self.progress)

    def exit_code(self, report: Any) -> int:
        """0 nothing at or above --fail-on (or --exit-zero); 1 findings; 2 a check crashed."""
        if report.internal_errors:
            return 2
        if self.exit_zero:
            return 0
        return 1 if report.at_or_above(self.severity()) else 0
