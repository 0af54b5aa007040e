"""Dataset doctor benchmark: vlm-doctor's dataset checks against the anchors, side by side.

    python benchmarks/dataset_bench.py                  # 665k records, 3000 images (~1.1 GB)
    python benchmarks/dataset_bench.py --records 50000  # a quick run

Generates (once, cached under --work) a synthetic LLaVA-1.5-mix-like dataset: a JSON array written
with indent=2 (~1.6 KB a record, like llava_v1_5_mix665k.json), 6% text-only ShareGPT-style
records, VQA-style records with up to 20 turns, and a few thousand small real PNG/JPEG images each
referenced by many records. Then runs each contender in its own process (so its peak RSS is its
own, read with wait4) and prints one table:

- json.load of the file (what LLaVA's train.py does): the anchor
- ijson items (yajl2_c backend) and vlm-doctor's JsonStream: parsing only, the two streaming options
- vlm-doctor structure checks (DAT0xx + DAT1xx + DAT2xx + DAT901, --images exists): target <= 1.0x
  json.load's wall time and <= 0.1x its peak RSS, with the defect planted in the last record found;
  and the same with the compiled path off (the exact Python reader), for comparison
- a per-record jsonschema loop (the shipped llava.schema.json, record by record)
- peft-doctor dataset-doctor (PyPI), which json.loads the whole file and samples 50 records
- vlm-doctor image header checks on the distinct images, 2 workers, warm cache: target >= 20k
  images/s
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

WORDS = ("the a of image shows man woman dog cat table red blue two on in with what is there how many people "
         "standing near street car building sky white black green person holding large small").split()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=665_000)
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "vlm-doctor-dataset-bench"))
    ap.add_argument("--schema-records", type=int, default=0, help="cap the jsonschema loop (0: every record)")
    ap.add_argument("--skip", action="append", default=[], help="skip a contender: schema, peft, ijson")
    args = ap.parse_args()
    work = Path(args.work)
    data = generate(work, args.records, args.images)
    size = data.stat().st_size
    print(f"dataset: {data} ({size / 1e9:.2f} GB, {args.records:,} records, {args.images:,} images); "
          f"cpus: {os.cpu_count()}; python {sys.version.split()[0]}", flush=True)
    rows = []
    rows.append(measure("json.load (LLaVA's loader)", LOAD, data))
    if "ijson" not in args.skip:
        rows.append(measure("ijson.items, yajl2_c (parse only)", IJSON, data))
    rows.append(measure("vlm-doctor JsonStream (parse only)", STREAM, data))
    rows.append(measure("vlm-doctor structure checks", STRUCTURE.replace("FAST_PATH", "True"), data))
    rows.append(measure("  same, exact Python reader only", STRUCTURE.replace("FAST_PATH", "False"), data))
    if "schema" not in args.skip:
        rows.append(measure("jsonschema, per record", SCHEMA.replace("LIMIT", str(args.schema_records)), data))
    if "peft" not in args.skip:
        exe = shutil.which("peft-doctor")
        rows.append(measure("peft-doctor dataset-doctor", None, data, cmd=[exe, "dataset-doctor", str(data),
                                                                            "--output", "json"] if exe else None))
    images = measure("vlm-doctor image headers (2 jobs)", IMAGES, data)
    report(rows, images, args.records)
    return 0


# ---- contenders (each runs in a fresh interpreter; it prints one JSON line) ----------------------
LOAD = """
import json, sys
with open(sys.argv[1]) as f:
    n = len(json.load(f))
print(json.dumps({"records": n}))
"""
IJSON = """
import json, sys, ijson
n = 0
with open(sys.argv[1], "rb") as f:
    for _ in ijson.items(f, "item", use_float=True):
        n += 1
print(json.dumps({"records": n, "backend": ijson.backend}))
"""
STREAM = """
import json, sys
from doctor.io.jsonstream import JsonStream
n = sum(1 for _ in JsonStream(sys.argv[1]))
print(json.dumps({"records": n}))
"""
STRUCTURE = """
import json, os, sys, doctor
from doctor.checks.dataset import scan
scan.FAST = FAST_PATH
r = doctor.check(sys.argv[1], select=["DAT0", "DAT1", "DAT2", "DAT901"], images="exists",
                 image_folder=os.path.join(os.path.dirname(sys.argv[1]), "images"))
assert not r.internal_errors, r.internal_errors
n = int(next(f.message for f in r.findings if f.code == "DAT901").split(" records")[0].replace(",", ""))
last = [f for f in r.findings if f.code == "DAT101" and f.location and f.location.record == n - 1]
print(json.dumps({"findings": len(r.findings), "records": n, "defect_in_last_record_found": bool(last)}))
"""
SCHEMA = """
import json, sys
from importlib.resources import files
import jsonschema
from doctor.io.jsonstream import JsonStream
schema = json.loads((files("doctor.data") / "schemas" / "llava.schema.json").read_text())
validator = jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/record"})
n = errors = 0
limit = LIMIT
for value, *_ in JsonStream(sys.argv[1]):
    errors += any(True for _ in validator.iter_errors(value))
    n += 1
    if limit and n >= limit:
        break
print(json.dumps({"records": n, "invalid": errors}))
"""
IMAGES = """
import json, sys, time
from doctor.checks.dataset.scan import scan_dataset
from doctor.checks.dataset.images.run import check_images
from doctor.runner import Options
scan = scan_dataset(sys.argv[1])
opts = Options(image_folder=sys.argv[1].rsplit("/", 1)[0] + "/images", images="header", jobs=2)
check_images(scan, opts)  # warm the page cache
best = min((check_images(scan, opts) for _ in range(5)), key=lambda r: r.seconds)
print(json.dumps({"images": best.checked, "seconds": best.seconds, "problems": sum(best.problems.counts.values())}))
"""


def measure(name: str, snippet: str | None, data: Path, cmd: list[str] | None = None) -> dict:
    if snippet is not None:
        cmd = [sys.executable, "-c", snippet, str(data)]
    if cmd is None:
        return {"name": name, "error": "not installed"}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    proc.returncode = os.waitstatus_to_exitcode(status)
    row = {"name": name, "wall": wall, "rss": usage.ru_maxrss / 1024, "cpu": usage.ru_utime + usage.ru_stime}
    if proc.returncode != 0:
        row["error"] = (err.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:100]
    else:
        last = out.strip().splitlines()[-1] if out.strip() else "{}"
        try:
            row["result"] = json.loads(last)
        except ValueError:
            row["result"] = {"output": last[:60]}
    print(f"  measured {name}: {wall:.1f} s", file=sys.stderr, flush=True)
    return row


def report(rows: list[dict], images: dict, records: int) -> None:
    anchor = rows[0]
    print()
    print(f"{'contender':38} {'wall s':>8} {'x load':>7} {'cpu s':>7} {'peak RSS MB':>12} {'x load':>7} {'records/s':>11}")
    for r in rows:
        if "error" in r and "wall" not in r:
            print(f"{r['name']:38} {r['error']}")
            continue
        n = (r.get("result") or {}).get("records") or records
        line = (f"{r['name']:38} {r['wall']:8.2f} {r['wall'] / anchor['wall']:7.2f} {r['cpu']:7.2f} "
                f"{r['rss']:12,.0f} {r['rss'] / anchor['rss']:7.3f} {n / r['wall']:11,.0f}")
        if "error" in r:
            line += f"  (failed: {r['error']})"
        print(line)
    structure = next(r for r in rows if r["name"].startswith("vlm-doctor structure"))
    res = images.get("result") or {}
    rate = res.get("images", 0) / res["seconds"] if res.get("seconds") else 0.0
    print(f"\nimage header checks: {res.get('images', 0):,} distinct images in {res.get('seconds', 0):.3f} s "
          f"= {rate:,.0f} images/s (2 jobs, warm cache, best of 5)")
    wall_ok = structure["wall"] <= anchor["wall"]
    rss_ok = structure["rss"] <= 0.1 * anchor["rss"]
    found = (structure.get("result") or {}).get("defect_in_last_record_found")
    print(f"defect in the last record found: {found}")
    print(f"targets: structure wall {structure['wall'] / anchor['wall']:.2f}x json.load (<= 1.0: "
          f"{'ok' if wall_ok else 'MISSED'}), peak RSS {structure['rss'] / anchor['rss']:.3f}x (<= 0.1: "
          f"{'ok' if rss_ok else 'MISSED'}), images {rate:,.0f}/s (>= 20,000: {'ok' if rate >= 20000 else 'MISSED'})")


# ---- the synthetic dataset ------------------------------------------------------------------------
def generate(work: Path, n: int, n_images: int) -> Path:
    data = work / f"llava_mix_{n}_{n_images}_v2.json"  # v2: a defect in the last record
    if data.exists():
        return data
    from doctor.testing import make_image

    rng = random.Random(0)
    image_dir = work / "images" / "coco"
    for k in range(n_images):
        suffix, fmt = ((".jpg", "JPEG"), (".png", "PNG"))[k % 2]
        path = image_dir / f"{k:012d}{suffix}"
        if not path.exists():
            make_image(path, size=(rng.randint(32, 96), rng.randint(32, 96)), fmt=fmt, seed=k)
    tmp = data.with_suffix(".partial")
    with tmp.open("w", encoding="utf-8") as f:
        f.write("[\n")
        for i in range(n):
            record = _record(i, rng, n_images)
            if i == n - 1:  # the defect the structure check must find: a role LLaVA does not know
                record["conversations"][-1]["from"] = "assistant"
            text = json.dumps(record, indent=2)
            f.write(("" if i == 0 else ",\n") + "  " + text.replace("\n", "\n  "))
        f.write("\n]\n")
    tmp.replace(data)
    return data


def _record(i: int, rng: random.Random, n_images: int) -> dict:
    def sentence(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    if rng.random() < 0.06:  # ShareGPT-style text-only conversation
        turns = rng.randint(1, 8) * 2
        return {"id": f"sharegpt_{i}", "conversations": [
            {"from": "human" if t % 2 == 0 else "gpt", "value": sentence(rng.randint(10, 200))} for t in range(turns)]}
    k = rng.randrange(n_images)
    conv = []
    for t in range(rng.choice((2, 2, 4, 6, 10, 20))):
        if t % 2 == 0:
            value = sentence(rng.randint(5, 25)) + "?"
            conv.append({"from": "human", "value": ("<image>\n" + value) if t == 0 else value})
        else:
            conv.append({"from": "gpt", "value": sentence(rng.choice((1, 3, 30, 80)))})
    return {"id": f"{i:012d}", "image": f"coco/{k:012d}{('.jpg', '.png')[k % 2]}", "conversations": conv}


if __name__ == "__main__":
    raise SystemExit(main())
