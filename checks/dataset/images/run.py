"""Run the image probes over a scanned dataset and turn their results into problems and
statistics (the ``dataset_images`` fixture)."""

from __future__ import annotations

import os
import time
from array import array
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.common import DROP, Problem, Problems
from doctor.checks.dataset.images.probe import ERROR, MISSING, Prober, pillow_max_pixels
from doctor.checks.dataset.images.remote import RemoteProber, dataset_folder, is_url

from doctor.findings import Applicability, Fix, Location, Severity

if TYPE_CHECKING:
    from doctor.checks.dataset.scan import DatasetScan

BATCH = 256
SERIAL_BELOW = 1024  # fewer images than this: no thread pool
WRONG_FOLDER_SHARE = 0.9  # this share of images missing under a default root: the root is wrong


@dataclass
class ImageReport:
    level: str
    root: str
    skipped: str | None = None
    root_given: bool = False
    problems: Problems = field(default_factory=Problems)
    checked: int = 0
    widths: array = field(default_factory=lambda: array("I"))  # by reference number; 0 = unknown
    heights: array = field(default_factory=lambda: array("I"))
    formats: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    bad: dict[str, str] = field(default_factory=dict)  # path -> "CODE detail", for the drop fix
    drop: Fix | None = None  # offered by the error findings; carries ``bad`` to the fixer
    seconds: float = 0.0

    def size_of(self, ref_id: int) -> tuple[int, int] | None:
        if ref_id < len(self.widths) and self.widths[ref_id]:
            return self.widths[ref_id], self.heights[ref_id]
        return None


def check_images(scan: DatasetScan, options: Any, progress: Callable[..., Any] | None = None) -> ImageReport:
    """Probe every distinct image of ``scan`` at ``options.images`` level."""
    given = bool(options.image_folder)
    remote = is_url(options.image_folder) or not given and is_url(scan.path)  # a URL dataset: images beside it
    root = str(options.image_folder).rstrip("/") if given and remote else \
        str(Path(options.image_folder)) if given else dataset_folder(scan.path)
    report = ImageReport(level=options.images, root=root, root_given=given)
    report.drop = Fix(DROP.description, Applicability.UNSAFE, DROP.fixer, {"images": report.bad})
    if options.images == "none":
        report.skipped = "image checks are off (--images none)"
        return report
    refs = list(scan.refs)
    if not refs:
        report.skipped = "the dataset references no images"
        return report
    if given and not remote and not os.path.isdir(root):
        report.skipped = f"--image-folder {root} is not a folder"
        report.problems.add(DAT.IMAGE_FOLDER_WRONG, Problem(f"the image folder {root} does not exist or is not a folder",
                                              path=scan.path))
        return report
    started = time.perf_counter()
    kind = RemoteProber if remote else Prober
    prober = kind(root, options.images, float(options.decode_sample), pillow_max_pixels())
    if getattr(options, "engine", "local") == "ray":
        from doctor.checks.dataset.distributed import probe_images

        results = probe_images(options, prober, refs)
    else:
        results = _run(prober, refs, options.jobs or os.cpu_count() or 1, progress)
    report.widths = array("I", (r[0] for r in results))
    report.heights = array("I", (r[1] for r in results))
    report.checked = len(results)
    missing = 0
    for ref_id, (_w, _h, fmt, nbytes, problems) in enumerate(results):
        report.bytes += nbytes
        if fmt:
            report.formats[fmt] = report.formats.get(fmt, 0) + 1
        for code, severity, detail in problems:
            missing += code == MISSING
            _add(report, scan, refs[ref_id], ref_id, code, severity, detail)
    if not given and missing >= WRONG_FOLDER_SHARE * len(refs):
        _wrong_folder(report, scan, refs, missing)
    report.seconds = time.perf_counter() - started
    return report


def _run(prober: Prober, refs: list[str], jobs: int, progress: Callable[..., Any] | None) -> list[tuple]:
    batches = [refs[k:k + BATCH] for k in range(0, len(refs), BATCH)]
    out: list[tuple] = []
    bar = progress("Checking images", len(refs)) if progress else nullcontext(lambda n=1: None)
    with bar as advance:
        if len(refs) < SERIAL_BELOW or jobs <= 1:
            for b in batches:
                out.extend(prober.batch(b))
                advance(len(b))
            return out
        # Threads: file I/O and Pillow's decoders release the GIL; the header parse is ~50k images/s
        # on one core, past the 20k/s target, so processes would buy little for their start-up.
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for result in pool.map(prober.batch, batches):
                out.extend(result)
                advance(len(result))
    return out


def _add(report: ImageReport, scan: DatasetScan, ref: str, ref_id: int, code: str, severity: str,
         detail: str) -> None:
    first, parts = scan.pointer_of_ref(ref_id)
    sev = Severity.ERROR if severity == ERROR else Severity.WARNING
    fix = report.drop if sev is Severity.ERROR else None
    if fix is not None:
        report.bad.setdefault(ref, f"{code}: {detail}")
    report.problems.add(code, Problem(
        f"image {ref!r} (record {first}): {detail}", first, Location.json_pointer(first, *parts),
        scan.line_of(first) if first < len(scan.lines) else None, severity=sev, fix=fix, path=scan.path))


def _wrong_folder(report: ImageReport, scan: DatasetScan, refs: list[str], missing: int) -> None:
    """Most images missing under the default root: say so once, instead of one finding each."""
    report.problems.samples.pop(MISSING, None)
    report.problems.counts.pop(MISSING, None)
    report.bad.clear()
    found = None if is_url(scan.path) else _find_root(Path(scan.path).resolve().parent,
                                                      [r for r in refs[:20] if not os.path.isabs(r)])
    hint = (f"Pass --image-folder {found}: the images are there." if found else
            "Pass --image-folder DIR: the folder LLaVA's --image_folder names, that relative image paths "
            "start from.")
    report.problems.add(DAT.IMAGE_FOLDER_WRONG, Problem(
        f"{missing:,} of {len(refs):,} images are missing under {report.root} (the dataset's folder, used "
        "because --image-folder was not given)", path=scan.path, hint=hint))


def _find_root(base: Path, refs: list[str]) -> Path | None:
    if not refs:
        return None
    try:
        candidates = [d for d in sorted(base.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        candidates += [d for c in candidates[:20] for d in sorted(c.iterdir()) if d.is_dir()]
    except OSError:
        return None
    for folder in candidates[:200]:
        if sum((folder / r).is_file() for r in refs) * 2 > len(refs):
            return folder
    return None


def image_stats(report: ImageReport) -> dict[str, Any]:
    """Sizes, aspect ratios and formats of the images whose header was read."""
    import numpy as np

    w = np.frombuffer(report.widths, dtype=np.uint32).astype(np.float64)
    h = np.frombuffer(report.heights, dtype=np.uint32).astype(np.float64)
    known = (w > 0) & (h > 0)
    out: dict[str, Any] = {"checked": report.checked, "level": report.level, "root": report.root,
                           "bytes": report.bytes, "formats": dict(sorted(report.formats.items(), key=lambda kv: -kv[1]))}
    if not known.any():
        return out
    w, h = w[known], h[known]
    aspect = w / h

    def pct(values: Any) -> dict[str, float]:
        p5, p50, p95 = np.percentile(values, [5, 50, 95])
        return {"min": round(float(values.min()), 2), "p5": round(float(p5), 2), "p50": round(float(p50), 2),
                "p95": round(float(p95), 2), "max": round(float(values.max()), 2)}

    out.update({
        "sized": int(known.sum()), "width": pct(w), "height": pct(h), "aspect_ratio": pct(aspect),
        "portrait": int((aspect < 0.95).sum()), "square": int(((aspect >= 0.95) & (aspect <= 1.05)).sum()),
        "landscape": int((aspect > 1.05).sum()), "megapixels_p50": round(float(np.median(w * h)) / 1e6, 3),
    })
    return out
