"""Shared inputs of the RUN checks: the run's analysis, its record and its training arguments."""

from __future__ import annotations

from typing import Any

from doctor.errors import Skip
from doctor.registry import fixture


@fixture
def run_analysis(path: str, options: Any) -> Any:
    """The triage of this run (shared with ``vlm-doctor triage``, which may hand it in precomputed
    through ``options.extra["run_analyses"][path]``)."""
    pre = (options.extra or {}).get("run_analyses", {}).get(path)
    if pre is not None:
        return pre
    from doctor.runs.triage import analyze_run

    try:
        return analyze_run(path, deep=bool(options.deep))
    except OSError as e:
        raise Skip(f"cannot list the run folder: {e.strerror or e}") from None


@fixture
def run_record(run_analysis: Any) -> Any:
    """The run's own record: the most advanced trainer_state.json in the run."""
    if run_analysis.record is None:
        if run_analysis.record_error:
            raise Skip(f"{run_analysis.record_error[0]} is unreadable (RUN001)")
        raise Skip("no trainer_state.json in the run folder or its checkpoints: nothing records the curves")
    return run_analysis.record


@fixture
def run_training_args(run_analysis: Any) -> dict[str, Any]:
    """A few fields of training_args.bin, read through the safe pickle reader only."""
    from doctor.runs.args import read_training_args

    return read_training_args(run_analysis.layout)
