"""Parquet dataset benchmark: vlm-doctor on a Hugging Face-style parquet file with embedded images,
beside reading the same file with pyarrow the way ``datasets.load_dataset("parquet")`` +
iteration does (the whole table into memory, then every row as Python objects).

    python benchmarks/table_bench.py                 # 4000 rows, ~60 KB images, 2% broken
    python benchmarks/table_bench.py --rows 20000

Each contender runs in its own process, so its peak RSS (wait4's ru_maxrss) is its own:

- pyarrow.parquet.read_table(...).to_pylist(): the anchor (datasets.load_dataset reads the same
  Arrow table; it is not installed here)
- vlm-doctor check --images header: the record rules on every row, every image from its bytes
  (a decode only for images that look cut short)
- vlm-doctor check --images decode: every image decoded as Image.open(...).convert("RGB")

Memory is bounded by one row group (``--row-group``), not by the table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ANCHOR = """
import sys, pyarrow.parquet as pq
rows = pq.read_table(sys.argv[1]).to_pylist()
n = sum(1 for r in rows for _ in r["images"])
print(len(rows), n)
"""


def generate(path: Path, rows: int, image_side: int, row_group: int, broken_every: int) -> Path:
    if path.exists():
        return path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from doctor.testing.tables import image_bytes, messages_row, write_parquet

    sizes = [(image_side, image_side * 3 // 4), (image_side * 3 // 4, image_side), (image_side, image_side)]
    pool = [image_bytes(sizes[i % 3], "JPEG" if i % 2 else "PNG", i) for i in range(64)]
    out = []
    for i in range(rows):
        data = pool[i % len(pool)]
        if broken_every and i % broken_every == broken_every - 1:
            data = data[: len(data) // 2]  # cut short: the header still reads
        out.append(messages_row([data], question=f"Question {i}: what is in the picture?"))
    return write_parquet(path, out, row_group_size=row_group)


def run(cmd: list[str]) -> tuple[float, float, str]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _pid, _status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out = proc.stdout.read() if proc.stdout else ""
    return wall, usage.ru_maxrss / 1024, out.strip().splitlines()[-1] if out.strip() else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--image-side", type=int, default=160)
    ap.add_argument("--row-group", type=int, default=256)
    ap.add_argument("--broken-every", type=int, default=50)
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "vlm-doctor-table-bench"))
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"train-{args.rows}-{args.image_side}-{args.row_group}.parquet"
    if args.generate_only:
        generate(path, args.rows, args.image_side, args.row_group, args.broken_every)
        return 0
    if not path.exists():
        # In a child of its own: a forked contender's peak RSS would count this process's pages.
        subprocess.run([sys.executable, __file__, "--generate-only", *sys.argv[1:]], check=True)
    print(f"dataset: {path} ({path.stat().st_size / 1e6:.1f} MB, {args.rows:,} rows, row groups of "
          f"{args.row_group}); cpus: {os.cpu_count()}; python {sys.version.split()[0]}")
    doctor = [sys.executable, "-m", "doctor", "check", str(path), "--no-progress", "--output-format", "concise"]
    contenders = [
        ("pyarrow read_table + to_pylist (anchor)", [sys.executable, "-c", ANCHOR, str(path)]),
        ("vlm-doctor check --images header", doctor + ["--images", "header"]),
        ("vlm-doctor check --images decode", doctor + ["--images", "decode"]),
    ]
    results = []
    for name, cmd in contenders:
        wall, rss, last = run(cmd)
        results.append((name, wall, rss, last))
    base_wall, base_rss = results[0][1], results[0][2]
    print(f"{'contender':42} {'wall s':>8} {'rows/s':>9} {'peak RSS MiB':>13} {'wall x':>7} {'RSS x':>6}")
    for name, wall, rss, _last in results:
        print(f"{name:42} {wall:8.2f} {args.rows / wall:9,.0f} {rss:13.0f} {wall / base_wall:7.2f} "
              f"{rss / base_rss:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
