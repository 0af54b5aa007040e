"""``vlm-doctor demo DIR``: a workspace with planted problems, checked, fixed and run."""

from __future__ import annotations

import argparse
import sys

HELP = "build a demo workspace with planted problems and run check, fix and the sanity pass on it"
DESCRIPTION = """\
Builds, in DIR, a tiny LLaVA workspace with real images and random-weight models (nothing is
downloaded): a training set, a transformers llava model, a trained LoRA, an untrained LoRA, a
checkpoint without its projector, a Qwen2.5-VL model and its twin with a mismatched processor, and
an original-LLaVA LoRA output. Then runs
`vlm-doctor check --fix` on it (repaired copies are written beside the inputs), the inference
sanity pass on the merged model, and shows which finding caught each planted problem."""
EPILOG = """\
example:
  vlm-doctor demo ./vlm-demo && ls ./vlm-demo

exit codes: 0 every planted problem was caught, 1 one was missed, 2 usage error.
Needs the ml extra: pip install "vlm-doctor[ml]"."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="folder to build the workspace in (new or empty)")
    p.add_argument("--force", action="store_true", help="build into a non-empty folder")
    p.add_argument("--no-progress", action="store_true", help="never show progress bars")


def run(args: argparse.Namespace) -> int:
    import importlib.util

    from doctor.errors import UsageError

    missing = [m for m in ("torch", "transformers", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"the demo builds tiny models and needs {', '.join(missing)}: pip install 'vlm-doctor[ml]'")
    from doctor.demo import run_demo

    tty = sys.stdout.isatty()
    return run_demo(args.dir, force=args.force, color=tty, progress=tty and not args.no_progress)
