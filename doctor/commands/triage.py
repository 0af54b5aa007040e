"""``vlm-doctor triage RUN``: what is in a training output folder, what is broken, which
checkpoint to keep."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = "triage a training output folder: checkpoints, loss curve, which save to keep"
DESCRIPTION = """\
Triage a training output folder (the Trainer's output_dir): list its saves (checkpoint-N/ folders
and the final output) with their step, completeness, size, train/eval loss and how far the
adapter moved since the previous save; judge the run's own record (trainer_state.json: NaN or 0.0
loss, a loss that never fell, spikes, a learning rate stuck at 0 or warming up forever, NaN or
zero grad norms); find ZeRO-3 saves with empty tensors, DeepSpeed/FSDP exports with LoRA still
unfolded and LLaVA checkpoints missing config.json or the projector; and recommend the save to
keep and the ones safe to delete, with their sizes.

Headers only by default: the adapter delta compares a spread sample of LoRA modules; --deep
compares every LoRA tensor."""
EPILOG = """\
examples:
  vlm-doctor triage out/llava-v1.5-7b-lora
  vlm-doctor triage out/llava-v1.5-7b-lora --plot loss.png     loss and learning-rate curves, findings marked
  vlm-doctor triage out/run --deep                             compare every LoRA tensor between saves
  vlm-doctor triage out/run --output-format json | jq .triage.recommendation
  vlm-doctor triage out/run --no-progress --output-format sarif -o triage.sarif
  vlm-doctor triage out/run/checkpoint-500                     a single checkpoint works too
  vlm-doctor rule RUN102                                       what "loss exactly 0.0" means

--plot needs matplotlib: pip install 'vlm-doctor[plot]'.
exit codes: 0 nothing at or above --fail-on, 1 findings, 2 usage or internal error."""


REPORT_OPTIONS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="the training output folder (or one checkpoint-N folder)")
    p.add_argument("--plot", metavar="FILE", help="draw the loss and learning-rate curves with the findings marked "
                                                  "(png, svg or pdf; needs matplotlib)")
    p.add_argument("--deep", action="store_true", help="compare every LoRA tensor between saves (reads them all)")


def run(args: argparse.Namespace) -> int:
    from doctor.artifacts import Artifact, classify
    from doctor.errors import UsageError
    from doctor.options import Options, ReportSettings
    from doctor.reporters import emit
    from doctor.runner import run as run_checks
    from doctor.runs.triage import analyze_run

    settings = ReportSettings.from_args(args)
    path = Path(args.run)
    if not path.is_dir():
        raise UsageError(f"{args.run}: not a folder; pass the training output folder (the Trainer's output_dir)")
    if args.plot:
        _require_matplotlib()
    try:
        analysis = analyze_run(path, deep=args.deep)
    except OSError as e:
        raise UsageError(f"{path}: cannot list the folder: {e.strerror or e}") from None
    found = classify(path)
    artifact = Artifact(str(path), frozenset((found.kinds if found else frozenset()) | {"run"}),
                        dict(found.meta) if found else {})
    options = Options(deep=args.deep, progress=settings.progress)
    options.extra["run_analyses"] = {str(path): analysis}
    report = run_checks([str(path)], options, settings.selection(), artifacts=[artifact],
                        progress=settings.progress_factory())
    report.set_section("triage", analysis.to_dict())

    code = emit(report, settings, full=lambda rep, ctx: render_full(analysis, rep, ctx.version, color=ctx.color,
                                                                    verbose=ctx.verbose))
    if args.plot:
        from doctor.runs.plot import plot_run

        written = plot_run(analysis, report.findings, args.plot)
        print(f"wrote {written}", file=sys.stderr)
    return code


def _require_matplotlib() -> None:
    import importlib.util

    from doctor.errors import UsageError

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib, which is not installed: pip install 'vlm-doctor[plot]' "
                         "(or pip install 'matplotlib>=3.6'); run without --plot for the table alone")


def render_full(analysis: Any, report: Any, version: str, color: bool = False, width: int = 110,
                verbose: bool = False) -> str:
    """The saves table, the findings (the ``full`` reporter) and the recommendation."""
    import io

    from rich.console import Console
    from rich.table import Table

    from doctor.reporters import OutputFormat, RenderContext, render

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=color, color_system="auto" if color else None, width=width,
                      highlight=False)
    layout, rec = analysis.layout, analysis.record
    kind = ", ".join(k for k, on in (("LoRA", layout.lora), ("original LLaVA", layout.llava)) if on) or "full weights"
    console.print(f"[bold]{layout.root}[/bold]  ({kind} run, {len(layout.checkpoints)} checkpoint"
                  f"{'s' if len(layout.checkpoints) != 1 else ''})")
    if rec is not None:
        console.print(f"record: {rec.path}  (step {rec.global_step} of {rec.max_steps or '?'}, "
                      f"{len(rec.loss)} train logs, {len(rec.eval_loss)} evals)", style="dim")
    from rich.markup import escape

    from doctor.runs.table import COLUMNS, recommendation_lines, triage_rows

    styles = {"good": "green", "bad": "red", "warn": "yellow"}
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    for col, justify in COLUMNS:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in triage_rows(analysis):
        table.add_row(*(f"[{styles[c.style]}]{escape(c.text)}[/]" if c.style else escape(c.text) for c in row))
    console.print(table)
    if any((d is not None and d.sampled) for d in analysis.deltas.values()):
        console.print("* relative change of a sample of LoRA modules since the previous save; --deep compares all",
                      style="dim")
    console.print()
    buf.write(render(report, OutputFormat.FULL, RenderContext(version=version, color=color, width=width,
                                                              verbose=verbose)))
    console.print()
    for text, style in recommendation_lines(analysis):
        console.print(f"[bold {styles[style]}]{escape(text)}[/]" if style else escape(text))
    return buf.getvalue()

