"""``vlm-doctor env``: the installed libraries and the environment checks, for a bug report
(``--markdown``) or CI (any report format; the versions are the ``env`` section of the JSON)."""

from __future__ import annotations

import argparse
import sys

HELP = "show the installed library versions and the environment checks"
EPILOG = """\
examples:
  vlm-doctor env                              the versions, then the ENV findings
  vlm-doctor env --markdown                   the versions as a table to paste into a GitHub issue
  vlm-doctor env --output-format json         for CI: the report, with the versions in "env"

Versions are read from package metadata; nothing is imported, so a broken install is reported,
not crashed on. Exit code 1 when an ENV check finds something at or above --fail-on."""

REPORT_OPTIONS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--markdown", action="store_true",
                   help="print only the versions, as a markdown table for a bug report (no findings, exit 0)")


def run(args: argparse.Namespace) -> int:
    from doctor import __version__
    from doctor.envprobe import markdown, probe
    from doctor.options import Options, ReportSettings
    from doctor.reporters import emit
    from doctor.runner import run as run_checks

    settings = ReportSettings.from_args(args)
    env = probe()
    if args.markdown:
        sys.stdout.write(f"vlm-doctor {__version__}\n\n{markdown(env)}")
        return 0
    report = run_checks([], Options(progress=settings.progress), settings.selection(), artifacts=[],
                        progress=settings.progress_factory())
    report.set_section("env", env.to_dict())

    def full(rep, ctx) -> str:  # noqa: ANN001
        from doctor.reporters import OutputFormat, render

        return f"vlm-doctor {__version__}\n{markdown(env)}\n" + render(rep, OutputFormat.FULL, ctx)

    return emit(report, settings, full=full)
