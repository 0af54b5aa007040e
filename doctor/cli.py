"""The ``vlm-doctor`` command line. Each subcommand lives in ``doctor/commands/<name>.py`` and
exposes ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. A command that produces
findings sets ``REPORT_OPTIONS = True`` (or ``"long"`` when it keeps ``-o`` for something else) and
gets the shared report options (``doctor.options.add_report_options``) after its own.

Exit codes (ruff's): 0 nothing at or above ``--fail-on``; 1 findings; 2 usage, configuration or
internal error (also with ``--exit-zero``)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from doctor import __version__
from doctor.errors import DoctorError
from doctor.options import add_report_options

COMMANDS = ("check", "rule", "env", "demo", "merge", "convert", "sanity", "triage")

DESCRIPTION = """\
A linter and doctor for LoRA fine-tuning of vision-language models (transformers'
llava, llava_next, mllama, qwen2_vl, qwen2_5_vl, qwen3_vl and gemma3; original LLaVA
and XTuner layouts).
Run it before you train (datasets, adapter configs), after you train (adapters,
checkpoints, merges) and in CI (SARIF, JUnit, GitHub annotations)."""

EPILOG = """\
examples:
  vlm-doctor demo ./vlm-demo                     build a workspace with planted problems and check it
  vlm-doctor check data/llava_mix.json           lint a training set (no torch imported)
  vlm-doctor check out/llava-lora --base vicuna  triage an adapter against its base
  vlm-doctor check out/ --output-format sarif -o vlm-doctor.sarif
  vlm-doctor rule ADP010                         explain a finding code
  vlm-doctor env --markdown                      paste into a bug report

check, triage, sanity, merge, convert and env share the report options: --output-format
full|concise|json|json-lines|github|sarif|junit, -o/--output-file, --select, --ignore,
--extend-select, --fail-on, --exit-zero, --statistics, --show-fixes, --quiet, --no-progress, --config.
exit codes: 0 clean, 1 findings at or above --fail-on, 2 usage/config/internal error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 on usage errors, like ruff
        self.print_usage(sys.stderr)
        self.exit(2, f"vlm-doctor: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vlm-doctor", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vlm-doctor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"doctor.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"doctor.commands.{name}":
                continue  # a command not built yet
            raise
        p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                           epilog=getattr(module, "EPILOG", None), formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        shared = getattr(module, "REPORT_OPTIONS", False)
        if shared:
            add_report_options(p, short_output=shared != "long")
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except DoctorError as e:
        print(f"vlm-doctor: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("vlm-doctor: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - never greet a user with a traceback
        if os.environ.get("VLM_DOCTOR_DEBUG"):
            raise
        print(f"vlm-doctor: internal error: {type(e).__name__}: {e}\n"
              "  (set VLM_DOCTOR_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
