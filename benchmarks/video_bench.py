"""Video header benchmark: vlm-doctor's container header reader against PyAV's ``av.open`` (what
LLaMA-Factory opens every video with), on the same files.

    python benchmarks/video_bench.py              # 400 files (copies of a few encoded clips)
    python benchmarks/video_bench.py --files 2000

Encodes a few real clips with PyAV (h264 and mpeg4, .mp4 moov-at-end and faststart, .mov, .avi),
copies them to --files files, then measures, best of 3, warm cache, one process each:

- PyAV: ``av.open`` + the first video stream's frames / duration / size (header only)
- vlm-doctor ``read_video_header`` (no decoding, no mdat read)

and prints videos/s and the ratio; every file's four numbers are compared between the two.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from doctor.io.video import pyav_info, read_video_header  # noqa: E402

from tests.helpers.video import Clip, encode  # noqa: E402

CLIPS = (Clip("a.mp4", width=320, height=240, frames=60, fps=25),
         Clip("b.mp4", codec="mpeg4", width=640, height=360, frames=90, fps=30, faststart=True),
         Clip("c.mov", codec="mpeg4", width=240, height=320, frames=45, fps=15),
         Clip("d.avi", codec="mpeg4", width=320, height=240, frames=50, fps=10))


def best(fn, files, repeat=3):
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        for f in files:
            fn(f)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = [encode(root / "src", clip) for clip in CLIPS]
        files = []
        for k in range(args.files):
            src = sources[k % len(sources)]
            dst = root / "v" / f"{k}{src.suffix}"
            dst.parent.mkdir(exist_ok=True)
            shutil.copy(src, dst)
            files.append(dst)
        same = all((m.frames, m.duration, m.width, m.height) == (p.frames, p.duration, p.width, p.height)
                   for m, p in ((read_video_header(f), pyav_info(f)) for f in files))
        pyav = best(pyav_info, files)
        mine = best(read_video_header, files)
        size = sum(f.stat().st_size for f in files) / len(files) / 1024
        print(f"{len(files)} files ({size:.0f} kB each on average), warm cache, one process")
        print(f"{'contender':40} {'wall s':>8} {'videos/s':>10} {'x av.open':>10}")
        print(f"{'PyAV av.open (header only)':40} {pyav:8.3f} {len(files) / pyav:10,.0f} {1.0:10.2f}")
        print(f"{'vlm-doctor read_video_header':40} {mine:8.3f} {len(files) / mine:10,.0f} {mine / pyav:10.2f}")
        print(f"same frames / duration / size as PyAV on every file: {same}")


if __name__ == "__main__":
    main()
