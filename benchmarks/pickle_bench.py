"""Pickle scanner benchmark: vlm-doctor's static allow-list scanner against picklescan and
modelscan (both deny-list scanners) on the same files.

1. Detection: every sample of the security corpus (tests/helpers/pickle_corpus.py: each one is
   proved there to run its payload when loaded) and the benign files a training run writes
   (torch.save zip / legacy state dicts, training_args.bin, rng_state.pth, optimizer.pt,
   scheduler.pt). Cells: flagged / missed / skipped (the tool did not scan it) / error.
2. Speed: scan time of a ~1 GB benign checkpoint of random tensors (zip and legacy formats),
   written to a temporary folder and deleted afterwards; best of N runs, page cache warm.

    pip install picklescan modelscan --no-deps && pip install tomlkit   # modelscan's light deps
    python benchmarks/pickle_bench.py [--size-gb 1.0] [--repeat 3] [--markdown]

A payload that any tool triggers would create its marker file; the script asserts none exists.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_corpus_module():
    spec = importlib.util.spec_from_file_location("pickle_corpus", ROOT / "tests" / "helpers" / "pickle_corpus.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["pickle_corpus"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


# ---- the three scanners, each returning flagged / missed / skipped / error ------------------
def ours(path: Path) -> str:
    from doctor.io.pickle_scan import scan

    result = scan(path)
    return "missed" if result.ok else "flagged"


def picklescan(path: Path) -> str:
    from picklescan.scanner import scan_file_path

    result = scan_file_path(str(path))
    if result.infected_files:
        return "flagged"
    return "error" if result.scan_err else "missed"


def modelscan(path: Path) -> str:
    import logging

    logging.disable(logging.CRITICAL)
    from modelscan.modelscan import ModelScan

    out = ModelScan().scan(str(path))
    if out.get("issues"):
        return "flagged"
    if out.get("errors"):
        return "error"
    return "skipped" if not out["summary"]["scanned"].get("total_scanned") else "missed"


def modelscan_as_pkl(path: Path) -> str:
    """modelscan picks its scanner by extension and skips plain pickles named .bin: give it a
    .pkl copy too, so its pickle scanner gets a fair try."""
    if path.suffix == ".pkl":
        return modelscan(path)
    copy = path.with_name(path.stem + "-copy.pkl")
    shutil.copyfile(path, copy)
    try:
        return modelscan(copy)
    finally:
        copy.unlink()


TOOLS: dict[str, Callable[[Path], str]] = {"vlm-doctor": ours, "picklescan": picklescan, "modelscan": modelscan,
                                           "modelscan (.pkl copy)": modelscan_as_pkl}


def available() -> dict[str, Callable[[Path], str]]:
    tools = {"vlm-doctor": ours}
    for name, module in (("picklescan", "picklescan"), ("modelscan", "modelscan.modelscan")):
        try:
            importlib.import_module(module)
            tools[name] = TOOLS[name]
            if name == "modelscan":
                tools["modelscan (.pkl copy)"] = modelscan_as_pkl
        except ImportError as e:
            print(f"# {name} not installed ({e}); its column is left out", file=sys.stderr)
    return tools


def benign_files(root: Path) -> dict[str, Path]:
    import numpy as np
    import torch
    from transformers import TrainingArguments, get_linear_schedule_with_warmup

    root.mkdir(parents=True, exist_ok=True)
    state = {"w": torch.randn(8, 8).half(), "b": torch.zeros(8, dtype=torch.bfloat16)}
    torch.save(state, root / "pytorch_model.bin")
    torch.save(state, root / "legacy_model.bin", _use_new_zipfile_serialization=False)
    torch.save(TrainingArguments(output_dir=str(root / "out"), report_to=[]), root / "training_args.bin")
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()},
               root / "rng_state.pth")
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    torch.save(opt.state_dict(), root / "optimizer.pt")
    torch.save(get_linear_schedule_with_warmup(opt, 2, 10).state_dict(), root / "scheduler.pt")
    return {f"benign: {p.name}": p for p in sorted(root.iterdir())}


def detection(tools: dict[str, Callable[[Path], str]], work: Path) -> list[str]:
    corpus = load_corpus_module()
    samples = corpus.build_corpus(work / "corpus")
    rows = [f"| sample | {' | '.join(tools)} |", "|---|" + "---|" * len(tools)]
    caught = dict.fromkeys(tools, 0)
    for sample in samples:
        cells = []
        for name, tool in tools.items():
            try:
                verdict = tool(sample.path)
            except Exception as e:  # noqa: BLE001 - a crashing scanner is a result too
                verdict = f"error ({type(e).__name__})"
            caught[name] += verdict == "flagged"
            cells.append("**flagged**" if verdict == "flagged" else verdict)
        rows.append(f"| {sample.name} | {' | '.join(cells)} |")
    assert not [s.name for s in samples if s.marker.exists()], "a scanner ran a payload"
    rows.append(f"| **caught** | {' | '.join(f'**{caught[t]}/{len(samples)}**' for t in tools)} |")
    false_alarms = dict.fromkeys(tools, 0)
    benign = benign_files(work / "benign")
    for label, path in benign.items():
        cells = []
        for name, tool in tools.items():
            if name == "modelscan (.pkl copy)":  # torch files are not plain pickles
                cells.append("n/a")
                continue
            try:
                verdict = tool(path)
            except Exception as e:  # noqa: BLE001
                verdict = f"error ({type(e).__name__})"
            false_alarms[name] += verdict == "flagged"
            cells.append("clean" if verdict == "missed" else f"**{verdict}**")
        rows.append(f"| {label} | {' | '.join(cells)} |")
    rows.append("| **false alarms** | " + " | ".join(
        "n/a" if t == "modelscan (.pkl copy)" else f"{false_alarms[t]}/{len(benign)}" for t in tools) + " |")
    return rows


def speed(tools: dict[str, Callable[[Path], str]], work: Path, size_gb: float, repeat: int) -> list[str]:
    import torch

    tools = {k: v for k, v in tools.items() if k != "modelscan (.pkl copy)"}
    n = max(1, round(size_gb * 64))  # 16 MiB tensors
    state = {f"model.layers.{i}.weight": torch.empty(4096, 1024).uniform_() for i in range(n)}
    files = {"zip": work / "big_zip.bin", "legacy": work / "big_legacy.bin"}
    torch.save(state, files["zip"])
    torch.save(state, files["legacy"], _use_new_zipfile_serialization=False)
    del state
    rows = [f"| file | size | {' | '.join(f'{t} (s)' for t in tools)} | "
            + " | ".join(f"{t} / vlm-doctor" for t in tools if t != "vlm-doctor") + " |",
            "|---|---|" + "---|" * (2 * len(tools) - 1)]
    try:
        for label, path in files.items():
            times = {}
            for name, tool in tools.items():
                best = float("inf")
                for _ in range(repeat):
                    start = time.perf_counter()
                    tool(path)
                    best = min(best, time.perf_counter() - start)
                times[name] = best
            ratios = [f"{times[t] / times['vlm-doctor']:.1f}x" for t in tools if t != "vlm-doctor"]
            rows.append(f"| {label} | {path.stat().st_size / 2**30:.2f} GiB | "
                        + " | ".join(f"{times[t]:.3f}" for t in tools) + " | " + " | ".join(ratios) + " |")
    finally:
        for path in files.values():
            path.unlink(missing_ok=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=1.0, help="size of the benign checkpoint to time")
    parser.add_argument("--repeat", type=int, default=3, help="timing runs per tool (best is kept)")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    tools = available()
    work = Path(tempfile.mkdtemp(prefix="pickle-bench-"))
    try:
        print("## Detection (security corpus; benign files below)\n")
        print("\n".join(detection(tools, work)))
        if not args.skip_speed:
            print(f"\n## Scan time, ~{args.size_gb:g} GB benign checkpoint (best of {args.repeat})\n")
            print("\n".join(speed(tools, work, args.size_gb, args.repeat)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
