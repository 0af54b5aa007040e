"""Qwen2-VL image-token counting: vlm-doctor's dynamic rule (pure Python, from image sizes read in
headers) vs transformers' ``Qwen2VLImageProcessorPil.get_number_of_image_patches`` (the same
arithmetic through its kwargs machinery) vs running the processor on a real image of that size.

Every count is also compared: the three must agree on every size. Usage:
``python benchmarks/qwen_tokens_bench.py [--n 20000] [--real 200]``.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import warnings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000, help="image sizes for the two arithmetic paths")
    ap.add_argument("--real", type=int, default=200, help="of those, images run through the processor")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    from doctor.checks.dataset.vision import vision_spec

    from doctor.testing.images import pil_image
    from doctor.testing.qwen import image_processor, make_qwen_model

    rng = random.Random(0)
    sizes = [(rng.randint(28, 2000), rng.randint(28, 2000)) for _ in range(args.n)]
    with tempfile.TemporaryDirectory() as tmp:
        info = make_qwen_model(tmp, max_pixels=28 * 28 * 1280)
        spec = vision_spec(tmp)
        proc = image_processor(info)

        t0 = time.perf_counter()
        ours = [spec.tokens(w, h) - spec.extra for w, h in sizes]
        t_ours = time.perf_counter() - t0

        t0 = time.perf_counter()
        theirs = [proc.get_number_of_image_patches(h, w) // 4 for w, h in sizes]
        t_theirs = time.perf_counter() - t0
        assert ours == theirs

        real = sizes[: args.real]
        t0 = time.perf_counter()
        counted = []
        for w, h in real:
            grid = proc(images=pil_image((w, h), 0, "blank"), return_tensors="np")["image_grid_thw"][0]
            counted.append(int(grid.prod()) // 4)
        t_real = time.perf_counter() - t0
        assert counted == ours[: args.real]

    rate = lambda n, t: n / t if t else float("inf")  # noqa: E731
    r_ours, r_theirs, r_real = rate(len(sizes), t_ours), rate(len(sizes), t_theirs), rate(len(real), t_real)
    print("| path | images/s | x processor run |")
    print("|---|---|---|")
    print(f"| vlm-doctor dynamic rule (pure Python) | {r_ours:,.0f} | {r_ours / r_real:,.0f}x |")
    print(f"| Qwen2VLImageProcessorPil.get_number_of_image_patches | {r_theirs:,.0f} | {r_theirs / r_real:,.0f}x |")
    print(f"| processor on a real image of that size | {r_real:,.1f} | 1x |")
    print(f"\nall {len(sizes):,} counts equal get_number_of_image_patches; {len(real)} equal the processor's grid")


if __name__ == "__main__":
    main()
