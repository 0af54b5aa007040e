"""The per-save check ``DoctorCallback`` runs: the run folder (RUN) and the new checkpoint (its
adapter / model checks), header-only. ``python -m doctor.integrations.save_worker RUN CKPT``
prints the findings as JSON; the callback runs it at low priority so training never waits."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# RUN301: the recommendation changes with every save, not worth repeating. ADP006 (config keys
# against the installed peft) imports peft and torch, seconds per save, and the live config it
# judges was already checked on train begin.
SKIPPED = ("RUN301", "ADP006")


def check_save(run_dir: str, checkpoint: str, base: str | None = None,
               select: Sequence[str] | None = None, ignore: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Findings (JSON-contract dicts) for the run folder and the checkpoint just saved."""
    from doctor.artifacts import Artifact, classify
    from doctor.runner import Options, run
    from doctor.selection import Selection

    artifacts = [Artifact(run_dir, frozenset({"run"}), {})]
    found = classify(Path(checkpoint)) if Path(checkpoint).is_dir() else None
    if found is not None:
        artifacts.append(found)
    selection = Selection.from_lists(select=list(select) if select else None, ignore=[*(ignore or []), *SKIPPED])
    report = run([run_dir], Options(base=base), selection, artifacts=artifacts)
    return [f.to_dict() for f in report.sorted_findings() if not f.path.startswith("<")]


def check_save_isolated(run_dir: str, checkpoint: str, base: str | None = None,
                        select: Sequence[str] | None = None, ignore: Sequence[str] | None = None,
                        timeout: float = 600.0) -> list[dict[str, Any]]:
    """``check_save`` in a child process at the lowest CPU priority (no GIL shared with training)."""
    cmd = [sys.executable, "-m", "doctor.integrations.save_worker", run_dir, checkpoint, "--nice"]
    if base:
        cmd += ["--base", base]
    if select:
        cmd += ["--select", ",".join(select)]
    if ignore:
        cmd += ["--ignore", ",".join(ignore)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    return json.loads(done.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m doctor.integrations.save_worker")
    p.add_argument("run_dir")
    p.add_argument("checkpoint")
    p.add_argument("--base")
    p.add_argument("--select")
    p.add_argument("--ignore")
    p.add_argument("--nice", action="store_true", help="lower this process's CPU priority first")
    a = p.parse_args(argv)
    if a.nice and hasattr(os, "nice"):
        os.nice(19)  # done here, not with preexec_fn: the parent is multi-threaded
    split = lambda v: [x for x in v.split(",") if x] if v else None  # noqa: E731
    found = check_save(a.run_dir, a.checkpoint, a.base, split(a.select), split(a.ignore))
    sys.stdout.write(json.dumps(found, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
