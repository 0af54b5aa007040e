"""Videos in a dataset: their placeholders (per record, from the streaming scan) and their files
(the ``dataset_videos`` fixture: every distinct video measured once from its container header).

What LLaMA-Factory does with a record's videos (``data/mm_plugin.py``): ``_validate_messages``
raises "The number of videos does not match the number of <video> tokens" when the ``videos``
column and the ``<video>`` placeholders disagree; ``_validate_input`` raises "This model does not
support video input" when the template's plugin has no video token (llava, llava_next, mllama,
paligemma, pixtral ...; Qwen2-VL / Qwen2.5-VL have ``<|video_pad|>``); ``_regularize_videos``
opens each path with ``av.open`` (a missing file, a folder, an empty or truncated file raise
there) and takes ``next(stream for stream in container.streams if stream.type == "video")``
(StopIteration for a file without a video stream). Paths resolve like the images' (``media_dir``
is LLaMA-Factory's name for ``--image-folder``; default the dataset's folder).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.common import Problem, Problems, describe

from doctor.findings import Location, Severity

if TYPE_CHECKING:
    from doctor.checks.dataset.scan import DatasetScan

    from doctor.io.video import VideoInfo

INSTALL_HINT = "pip install av (or pip install 'vlm-doctor[video]')"
NOT_MEASURED_SHOWN = 5


def check_video_placeholders(P: Problems, rec: dict, i: int, line: int | None, col: int | None, n_videos: int,
                             slots: list[tuple[int, int]], field: str, value_key: str,
                             at: tuple[Any, ...] | None = None) -> None:
    """``slots``: (turn index, ``<video>`` placeholders or video parts in it); LLaMA-Factory
    raises unless their total equals the number of videos. ``at``: the pointer parts to report
    at (default the first slot's turn, else ``field``)."""
    total = sum(c for _, c in slots)
    if total == n_videos:
        return
    where = at if at is not None else (field, slots[0][0], value_key) if slots else (field,)
    what = (f"{total} <video> placeholder(s) for {n_videos} video(s)" if n_videos else
            f"{total} <video> placeholder(s) but no video")
    P.record(DAT.VIDEO_PLACEHOLDER_COUNT, i, line, col, where,
             f"{describe(i, rec)} has {what}: LLaMA-Factory raises \"The number of videos does not match the "
             "number of <video> tokens\"")


@dataclass
class VideoReport:
    """Every distinct video of a dataset, measured (``infos`` by video reference number)."""

    root: str = ""
    skipped: str | None = None
    problems: Problems = field(default_factory=Problems)
    infos: list[VideoInfo | None] = field(default_factory=list)
    not_measured: list[tuple[str, str]] = field(default_factory=list)  # (path, container)
    images: int = 0  # image files given as videos (PyAV opens them as one-frame videos)
    by_pyav: int = 0
    checked: int = 0
    seconds: float = 0.0

    def info_of(self, ref_id: int) -> VideoInfo | None:
        return self.infos[ref_id] if ref_id < len(self.infos) else None


def check_videos(scan: DatasetScan, options: Any) -> VideoReport:
    """Measure every distinct video of ``scan`` (header only; PyAV for the containers the header
    reader does not know, when it is installed)."""
    from doctor.io.video import probe_video, pyav_available

    checker = scan.checker
    refs = list(checker.videos) if checker is not None else []
    given = bool(options.image_folder)
    root = str(options.image_folder) if given else str(Path(scan.path).resolve().parent)
    report = VideoReport(root=root)
    if not refs:
        report.skipped = "the dataset references no videos"
        return report
    if getattr(options, "images", "header") == "none":
        report.skipped = "media checks are off (--images none)"
        return report
    if "://" in root:
        report.skipped = f"videos under {root} are not measured (object storage)"
        report.infos = [None] * len(refs)
        report.not_measured = [(r, "object storage") for r in refs]
        return report
    started = time.perf_counter()
    use_pyav = pyav_available()
    for ref_id, ref in enumerate(refs):
        report.infos.append(_probe(report, scan, ref, ref_id, root, use_pyav, probe_video))
    report.checked = len(refs)
    report.seconds = time.perf_counter() - started
    return report


def _probe(report: VideoReport, scan: DatasetScan, ref: str, ref_id: int, root: str, use_pyav: bool,
           probe_video: Any) -> VideoInfo | None:
    from doctor.io.video import VideoError, VideoInfo

    path = ref if os.path.isabs(ref) else os.path.join(root, ref)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _add(report, scan, ref, ref_id, DAT.VIDEO_MISSING, f"no such file: {path} (av.open raises FileNotFoundError)")
        return None
    except (OSError, ValueError) as e:
        _add(report, scan, ref, ref_id, DAT.VIDEO_UNREADABLE, f"cannot stat {path}: {getattr(e, 'strerror', None) or e}")
        return None
    if os.path.isdir(path):
        _add(report, scan, ref, ref_id, DAT.VIDEO_IS_FOLDER, f"{path} is a folder (av.open raises IsADirectoryError)")
        return None
    if st.st_size == 0:
        _add(report, scan, ref, ref_id, DAT.VIDEO_EMPTY, f"{path} has 0 bytes (av.open raises InvalidDataError)")
        return None
    try:
        info = probe_video(path, use_pyav=use_pyav)
    except VideoError as e:
        if e.kind == "unmeasured":
            report.not_measured.append((ref, e.container or str(e)))
        elif e.kind == "no-video-stream":
            _add(report, scan, ref, ref_id, DAT.VIDEO_WITHOUT_VIDEO_STREAM,
                 f"{e}: LLaMA-Factory's next(stream ... if stream.type == \"video\") raises StopIteration")
        elif e.kind == "image":
            report.images += 1
            size = _image_size(path)
            _add(report, scan, ref, ref_id, DAT.VIDEO_UNREADABLE,
                 f"{e}: PyAV opens it with its image demuxer as a one-frame video, so it trains as a still "
                 "(put it in \"images\" with an <image> placeholder instead)", Severity.WARNING)
            if size:
                return VideoInfo(1, None, size[0], size[1], e.container, "image")
        else:
            _add(report, scan, ref, ref_id, DAT.VIDEO_UNREADABLE, f"{e}: av.open raises InvalidDataError")
        return None
    except OSError as e:
        _add(report, scan, ref, ref_id, DAT.VIDEO_UNREADABLE, f"cannot read {path}: {e.strerror or e}")
        return None
    if info.measured_by == "pyav":
        report.by_pyav += 1
    return info


def _image_size(path: str) -> tuple[int, int] | None:
    from doctor.checks.dataset.images.header import HEAD, HeaderError, read_size, sniff

    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            head = os.pread(fd, HEAD, 0)
            fmt = sniff(head)
            if fmt is None:
                return None
            w, h, _note = read_size(fd, head, fmt, os.fstat(fd).st_size)
            return (w, h) if w and h else None
        finally:
            os.close(fd)
    except (OSError, HeaderError, ValueError):
        return None


def _add(report: VideoReport, scan: DatasetScan, ref: str, ref_id: int, code: str, detail: str,
         severity: Severity | None = None) -> None:
    checker = scan.checker
    assert checker is not None
    first = checker.video_first[ref_id]
    parts = checker.keys[checker.video_key[ref_id]]
    line = scan.line_of(first) if hasattr(scan, "line_of") and first < len(getattr(scan, "lines", ())) else None
    report.problems.add(code, Problem(f"video {ref!r} (record {first}): {detail}", first,
                                      Location.json_pointer(first, *parts), line, severity=severity,
                                      path=scan.path))


def not_measured_problem(report: VideoReport, scan: DatasetScan) -> None:
    """One warning for every video that could not be measured (``DAT217``)."""
    if not report.not_measured:
        return
    containers: dict[str, int] = {}
    for _path, container in report.not_measured:
        containers[container] = containers.get(container, 0) + 1
    shown = ", ".join(repr(p) for p, _ in report.not_measured[:NOT_MEASURED_SHOWN])
    kinds = ", ".join(f"{c} ({n})" for c, n in sorted(containers.items(), key=lambda kv: -kv[1]))
    more = len(report.not_measured) - NOT_MEASURED_SHOWN
    report.problems.add(DAT.VIDEO_NOT_MEASURED, Problem(
        f"{len(report.not_measured):,} video(s) were not measured ({kinds}): {shown}"
        + (f" and {more:,} more" if more > 0 else "")
        + "; their frames, sizes and tokens are unknown, so they are not counted in the token budget",
        path=scan.path, hint=f"{INSTALL_HINT} to measure every container PyAV reads"
        if "object storage" not in containers else "Copy the videos to a local folder to measure them."))


def unsupported_problem(scan: DatasetScan, model: str, family: str) -> Problem:
    """``DAT116``: videos for a model whose LLaMA-Factory template has no video token."""
    checker = scan.checker
    assert checker is not None
    first = checker.video_records_first or 0
    return Problem(
        f"{checker.records_with_videos:,} record(s) have videos (the first: record {first}), but {model} is a "
        f"{family} model, whose LLaMA-Factory template has no video token: LLaMA-Factory raises \"This model does "
        "not support video input. Please check whether the correct `template` is used.\"",
        first, Location.json_pointer(first), path=scan.path,
        hint="Train a video-capable model (Qwen2-VL, Qwen2.5-VL, LLaVA-NeXT-Video ...) or remove the videos.")


def video_support(model_dir: str) -> tuple[bool | None, str]:
    """(whether ``model_dir``'s family takes videos in LLaMA-Factory, the family's name): True for
    a family with a video token (``<|video_pad|>``), False for a known family without one (its
    template's ``get_mm_plugin(..., image_token=...)`` names no ``video_token``) and for original
    LLaVA folders, None when the model type is unknown here."""
    from doctor.checks.dataset.vision import read_config

    from doctor.families import family_of

    config = read_config(Path(model_dir) / "config.json")
    model_type = config.get("model_type")
    fam = family_of(model_type)
    if fam is not None:
        return bool(fam.tokens.get("video_token_id")), fam.name
    if config.get("mm_vision_tower"):
        return False, f"original LLaVA ({model_type})"
    return None, str(model_type)
