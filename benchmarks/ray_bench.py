"""Scale-out benchmark: decode-level (and header-level) image checks of the same images by one
process and by local Ray with N workers (``vlm-doctor check --engine ray``).

    python benchmarks/ray_bench.py                  # 20,000 images, Ray with 2 workers
    python benchmarks/ray_bench.py --images 5000 --workers 2

Generates (once, cached under --work) a LLaVA JSONL dataset whose records each reference one
distinct small real image file (JPEG and PNG, 3 shapes, ~10-60 KB). Each contender runs in its own
process; the table gives wall time, images/s and the ratio to the single process. Ray's own
start-up (a few seconds) is inside its wall time: it is what a user waits for. On 2 cores the
ratio is what matters; docs/scale.md extrapolates per core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def generate(root: Path, n: int) -> Path:
    data = root / f"data-{n}.jsonl"
    if data.exists():
        return data
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from doctor.testing.tables import image_bytes

    shapes = [(160, 120), (120, 160), (144, 144)]
    # 96 distinct pictures written to n distinct paths: each path is checked (and decoded) on its own.
    pool = {ext: [image_bytes(shapes[k % 3], fmt, k) for k in range(48)] for ext, fmt in (("jpg", "JPEG"), ("png", "PNG"))}
    partial = data.with_suffix(".partial")
    with partial.open("w") as f:
        for i in range(n):
            ext = "jpg" if i % 2 else "png"
            name = f"img/{i // 1000:03d}/{i:06d}.{ext}"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(pool[ext][i % 48])
            f.write(json.dumps({"id": str(i), "image": name, "conversations": [
                {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A picture."}]}) + "\n")
    partial.rename(data)  # an interrupted run leaves no file that looks finished
    return data


def run(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "vlm-doctor-ray-bench"))
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    root = Path(args.work)
    root.mkdir(parents=True, exist_ok=True)
    if args.generate_only:
        generate(root, args.images)
        return 0
    data = root / f"data-{args.images}.jsonl"
    if not data.exists():  # a child of its own, so the contenders start from a small parent
        subprocess.run([sys.executable, __file__, "--generate-only", *sys.argv[1:]], check=True)
    print(f"dataset: {data} ({args.images:,} distinct images); cpus: {os.cpu_count()}; "
          f"python {sys.version.split()[0]}")
    base = [sys.executable, "-m", "doctor", "check", str(data), "--no-progress", "--select", "DAT2",
            "--output-format", "concise"]
    rows = []
    start_only = run([sys.executable, "-c", "import ray; ray.init(num_cpus=%d, include_dashboard=False, "
                      "_node_ip_address='127.0.0.1'); ray.shutdown()" % args.workers])
    for level in ("header", "decode"):
        single = run(base + ["--images", level, "--jobs", "1"])
        threads = run(base + ["--images", level, "--jobs", str(args.workers)])
        ray = run(base + ["--images", level, "--engine", "ray", "--jobs", str(args.workers)])
        rows += [(level, "one process, 1 thread", single, single), (level, f"one process, {args.workers} threads",
                 threads, single), (level, f"Ray, {args.workers} workers (local)", ray, single)]
    print(f"Ray start-up and shutdown alone: {start_only:.2f} s (inside the Ray rows' wall time)")
    print(f"{'level':7} {'contender':30} {'wall s':>8} {'images/s':>9} {'vs 1 thread':>12} {'images/s past start-up':>23}")
    for level, name, wall, single in rows:
        steady = f"{args.images / max(wall - start_only, 1e-3):23,.0f}" if name.startswith("Ray") else ""
        print(f"{level:7} {name:30} {wall:8.2f} {args.images / wall:9,.0f} {single / wall:11.2f}x {steady}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
