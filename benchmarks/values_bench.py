"""Value-scan (CKP301-303, ADP019/020) throughput: how many bytes the NaN/Inf/all-zero scan reads
in about a second on this machine, the measurement behind ``doctor.io.scan_budget``.

Writes one safetensors file of random bf16 and fp32 tensors (``--mb``, default 256) and, with
``--bin``, the same tensors as a torch ``.bin``; scans each ``--repeat`` times with the page cache
warm (the file was just written: the case a CI job that has just saved a checkpoint sees) and
prints MB/s, next to ``cat FILE > /dev/null`` as the anchor, and the byte budget that one second
buys against the threshold in use.

    python benchmarks/values_bench.py [--mb 256] [--repeat 3] [--bin]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_safetensors(path: Path, total_bytes: int) -> int:
    """Random bf16 and fp32 tensors of 4 MiB each, written without torch; returns the data size."""
    import numpy as np

    rng = np.random.default_rng(0)
    chunk = 4 << 20
    header, offset, names = {}, 0, []
    while offset < total_bytes:
        i = len(names)
        dtype = "BF16" if i % 2 == 0 else "F32"
        width = 2 if dtype == "BF16" else 4
        n = chunk // width
        name = f"model.layers.{i}.mlp.weight"
        header[name] = {"dtype": dtype, "shape": [n // 1024, 1024], "data_offsets": [offset, offset + chunk]}
        names.append(name)
        offset += chunk
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _ in names:
            # small normal values (what trained weights look like), as uint16/uint32 bit patterns
            f.write(rng.standard_normal(chunk // 4, dtype=np.float32).tobytes())
    return offset


def time_it(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bin", action="store_true", help="also time a torch .bin (read through the safe unpickler)")
    args = ap.parse_args()

    from doctor.io.deep_scan import scan_file
    from doctor.io.scan_budget import BYTES_PER_SECOND, FULL_SCAN_BYTES

    with tempfile.TemporaryDirectory() as tmp:
        st = Path(tmp) / "model.safetensors"
        size = write_safetensors(st, args.mb << 20)
        cat = time_it(lambda: subprocess.run(["cat", str(st)], stdout=subprocess.DEVNULL, check=True), args.repeat)
        scan = time_it(lambda: scan_file(st), args.repeat)
        rows = [("cat (anchor)", size, cat), ("scan .safetensors", size, scan)]
        if args.bin:
            import torch
            from safetensors.torch import load_file

            from doctor.checks.checkpoint.rules.values import ValueScan, _scan_one

            b = Path(tmp) / "pytorch_model.bin"
            torch.save(load_file(str(st)), b)
            rows.append(("scan .bin (safe unpickler)", b.stat().st_size,
                         time_it(lambda: _scan_one(str(b), ValueScan(), lambda n: None), args.repeat)))
    print(f"{'what':<28} {'MB':>8} {'seconds':>8} {'MB/s':>8} {'x cat':>6}")
    for what, nbytes, secs in rows:
        print(f"{what:<28} {nbytes / 1e6:>8.0f} {secs:>8.3f} {nbytes / 1e6 / secs:>8.0f} {secs / cat:>6.2f}")
    rate = size / scan
    print(f"\none second of scanning reads {rate / 1e6:,.0f} MB here; "
          f"threshold in use: FULL_SCAN_BYTES = {FULL_SCAN_BYTES / 1e6:,.0f} MB, "
          f"estimate rate BYTES_PER_SECOND = {BYTES_PER_SECOND / 1e6:,.0f} MB/s "
          f"(ratio measured / assumed: {rate / BYTES_PER_SECOND:.2f})")
    print(f"cpu count {os.cpu_count()}")


if __name__ == "__main__":
    main()
