"""Scale-out benchmark: decode-level (and header-level) image checks of the same images by one
process and by local Ray with N workers (``vlm-doctor check --engine ray``).

    python benchmarks/ray_bench.py                  # 20,000 images, Ray with 2 workers
    python benchmarks/ray_bench.py --images 5000 --workers 2
    python benchmarks/ray_bench.py --array-only --array-records 400000   # the JSON array record pass only

Generates (once, cached under --work) a LLaVA JSONL dataset whose records each reference one
distinct small real image file (JPEG and PNG, 3 shapes, ~10-60 KB). Each contender runs in its own
process; the table gives wall time, images/s and the ratio to the single process. Ray's own
start-up (a few seconds) is inside its wall time: it is what a user waits for. On 2 cores the
ratio is what matters; docs/scale.md extrapolates per core.

The JSON array case: a LLaVA-format array of ``--array-records`` records written on ONE line
(as llava_v1_5_mix665k.json is), checked with ``--images none`` (the record pass alone) by one
process and by local Ray, whose workers read its byte ranges (``--part-mib`` each).
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


def generate_array(root: Path, n: int) -> Path:
    data = root / f"array-{n}.json"
    if data.exists():
        return data
    partial = data.with_suffix(".partial")
    with partial.open("w") as f:
        f.write("[")
        for i in range(n):
            rec = {"id": f"{i:012d}", "image": f"coco/train2017/{i:012d}.jpg", "conversations": [
                {"from": "human", "value": "<image>\nWhat is the man in the picture doing, and why, {exactly}?"},
                {"from": "gpt", "value": f"He is riding a bicycle along the river, [{i}] \"probably\" to work."},
                {"from": "human", "value": "What colour is it?"}, {"from": "gpt", "value": "Red, mostly."}]}
            f.write(("," if i else "") + json.dumps(rec))
        f.write("]")
    partial.rename(data)
    return data


def run(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                   env={**os.environ, **(env or {})})
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "vlm-doctor-ray-bench"))
    ap.add_argument("--array-records", type=int, default=400_000, help="records of the one-line JSON array case")
    ap.add_argument("--part-mib", type=int, default=16, help="byte range per Ray part of the JSON array")
    ap.add_argument("--array-only", action="store_true", help="only the JSON array case")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    root = Path(args.work)
    root.mkdir(parents=True, exist_ok=True)
    if args.generate_only:
        generate(root, args.images)
        return 0
    if args.array_only:
        return array_case(root, args)
    data = root / f"data-{args.images}.jsonl"
    if not data.exists():  # a child of its own, so the contenders start from a small parent
        subprocess.run([sys.executable, __file__, "--generate-only", *sys.argv[1:]], check=True)
    print(f"dataset: {data} ({args.images:,} distinct images); cpus: {os.cpu_count()}; "
          f"python {sys.version.split()[0]}")
    base = [sys.executable, "-m", "doctor", "check", str(data), "--no-progress", "--select", "DAT2",
            "--output-format", "concise"]
    rows = []
    start_only = run([sys.executable, "-c", f"import ray; ray.init(num_cpus={args.workers}, include_dashboard=False, "
                      "_node_ip_address='127.0.0.1'); ray.shutdown()"])
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
    array_case(root, args)
    return 0


def array_case(root: Path, args: argparse.Namespace) -> int:
    """The record pass over a one-line JSON array: one process vs local Ray reading byte ranges."""
    data = generate_array(root, args.array_records)
    mib = data.stat().st_size / (1 << 20)
    base = [sys.executable, "-m", "doctor", "check", str(data), "--no-progress", "--images", "none",
            "--output-format", "concise"]
    # the part size is a module constant; a child sets it from this variable (benchmarks only)
    part = {"VLM_DOCTOR_BENCH_PART_BYTES": str(args.part_mib << 20)}
    single = run(base)
    ray = run([sys.executable, "-c", _WITH_PART, *base[3:], "--engine", "ray", "--jobs", str(args.workers)], part)
    start_only = run([sys.executable, "-c", f"import ray; ray.init(num_cpus={args.workers}, include_dashboard=False, "
                      "_node_ip_address='127.0.0.1'); ray.shutdown()"])
    n = args.array_records
    print(f"\nJSON array on one line: {data} ({n:,} records, {mib:,.0f} MiB), --images none, "
          f"Ray parts of {args.part_mib} MiB")
    print(f"{'contender':30} {'wall s':>8} {'records/s':>10} {'MiB/s':>7} {'vs one process':>15} {'records/s past start-up':>24}")
    print(f"{'one process':30} {single:8.2f} {n / single:10,.0f} {mib / single:7.1f} {1.0:14.2f}x")
    steady = n / max(ray - start_only, 1e-3)
    print(f"{f'Ray, {args.workers} workers (local)':30} {ray:8.2f} {n / ray:10,.0f} {mib / ray:7.1f} "
          f"{single / ray:14.2f}x {steady:24,.0f}")
    print(f"Ray start-up and shutdown alone: {start_only:.2f} s")
    # The parts' work without Ray (the same blocks in a plain loop, one core): what each worker
    # core of a cluster does per second, and the driver's share (head, chain, fold, duplicate ids).
    code = ("import sys, time, json; from doctor.checks.dataset import distributed as d\n"
            "spent = {}\n"
            "def loop(fn, blocks):\n"
            "    t = time.perf_counter(); out = [fn(b) for b in blocks]\n"
            "    spent[type(fn).__name__] = time.perf_counter() - t; return out\n"
            "t = time.perf_counter(); scan = d.scan_json_array(sys.argv[1], None, run=loop, part_bytes=int(sys.argv[2]))\n"
            "spent['total'] = time.perf_counter() - t; assert scan is not None; print(json.dumps(spent))")
    out = subprocess.run([sys.executable, "-c", code, str(data), str(args.part_mib << 20)], capture_output=True,
                         text=True, check=True).stdout
    spent = json.loads(out.strip().splitlines()[-1])
    work = spent["CountArray"] + spent["ScanArray"]
    print(f"the parts' work in one process, no Ray: pass 1 (find + count) {spent['CountArray']:.2f} s, pass 2 (check) "
          f"{spent['ScanArray']:.2f} s = {mib / work:,.0f} MiB/s per worker core; driver (head, chain, fold) "
          f"{spent['total'] - work:.2f} s")
    return 0


_WITH_PART = ("import os, sys, runpy; from doctor.checks.dataset import distributed as d; "
              "d.PART_BYTES = int(os.environ['VLM_DOCTOR_BENCH_PART_BYTES']); "
              "d.MIN_PART_BYTES = d.PART_BYTES // 4; sys.argv = ['doctor', *sys.argv[1:]]; "
              "runpy.run_module('doctor', run_name='__main__')")


if __name__ == "__main__":
    raise SystemExit(main())
