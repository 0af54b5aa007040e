"""Start-up time: vlm-doctor beside `python -c pass` and `ruff --version`, measured in one run.

    python benchmarks/startup.py [--runs 15]

Prints the median wall time of each command and its ratio to `python -c pass`. A linter must
feel instant: `vlm-doctor check` on a small dataset imports neither torch nor transformers."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], runs: int) -> float:
    subprocess.run(cmd, capture_output=True)  # warm the page cache
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    data = tmp / "data.json"
    data.write_text(json.dumps([
        {"id": str(i), "conversations": [{"from": "human", "value": "Describe it."}, {"from": "gpt", "value": "A cat."}]}
        for i in range(100)
    ]))
    py = sys.executable
    cmds = {
        "python -c pass": [py, "-c", "pass"],
        "python -c 'import torch'": [py, "-c", "import torch"],
        "ruff --version": [shutil.which("ruff") or "ruff", "--version"],
        "vlm-doctor --version": [py, "-m", "doctor", "--version"],
        "vlm-doctor env": [py, "-m", "doctor", "env"],
        "vlm-doctor check data.json (100 records)": [py, "-m", "doctor", "check", str(data), "--images", "none",
                                                     "--output-format", "concise"],
    }
    results = {}
    for name, cmd in cmds.items():
        if not shutil.which(cmd[0]) and not Path(cmd[0]).exists():
            print(f"{name:<45} not installed")
            continue
        results[name] = timed(cmd, args.runs)
    baseline = results["python -c pass"]
    print(f"{'command':<45} {'median':>9} {'x python -c pass':>18}")
    for name, t in results.items():
        print(f"{name:<45} {t * 1000:>7.0f}ms {t / baseline:>17.1f}x")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
