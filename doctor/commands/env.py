"""``vlm-doctor env``: the installed libraries, for a bug report (markdown) or CI (json)."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "show the installed library versions and the environment checks"
EPILOG = """\
examples:
  vlm-doctor env                              a table plus the ENV findings
  vlm-doctor env --output-format markdown     paste into a GitHub issue
  vlm-doctor env --output-format json         for CI

Versions are read from package metadata; nothing is imported, so a broken install is reported,
not crashed on. Exit code 1 when an ENV check finds an error."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-format", choices=("text", "markdown", "json"), default="text")


def run(args: argparse.Namespace) -> int:
    from doctor import __version__
    from doctor.envprobe import markdown, probe
    from doctor.runner import Options
    from doctor.runner import run as run_checks
    from doctor.selection import Selection

    env = probe()
    report = run_checks([], Options(), Selection.from_lists(select=["ENV"]), artifacts=[])
    if args.output_format == "json":
        doc = {"schema_version": 1, "tool": {"name": "vlm-doctor", "version": __version__},
               "environment": env.to_dict(), "findings": [f.to_dict() for f in report.findings]}
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        out = [f"vlm-doctor {__version__}\n", markdown(env)]
        if report.findings:
            out.append("\nFindings:\n")
            out += [f"- {f.severity.value} {f.code} {f.name}: {f.message}\n  fix: {f.hint}\n" for f in report.findings]
        sys.stdout.write("".join(out))
    return 1 if not report.ok else 0
