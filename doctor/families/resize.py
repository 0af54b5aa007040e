"""The processor arithmetic of the ``"dynamic"`` token rule (Qwen2-VL / Qwen2.5-VL), replayed in
pure Python from transformers' ``image_processing_qwen2_vl.py`` (``smart_resize``,
``get_number_of_image_patches``) and ``Qwen2VLImageProcessor.__init__`` (which settings win). No
numpy, no torch: the dataset checks count tokens from image headers with it.

Videos are counted the way LLaMA-Factory's ``Qwen2VLPlugin`` counts them without decoding
(``mm_plugin.py``: ``_get_video_sample_indices``, ``_get_qwen_video_size_after_regularization``,
``_get_qwen_video_grid_metadata``): ``sampled_frames`` from the container's frame count and
duration at ``video_fps`` (at most ``video_maxlen``), made even; each frame shrunk under
``video_max_pixels`` / grown over ``video_min_pixels`` (``regularized_size``); then the video
processor's ``smart_resize`` and ``ceil(frames / temporal_patch_size)`` grids
(``DynamicGeometry.video_grid``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from doctor.families.spec import Family


class AspectRatioError(ValueError):
    """The processor refuses images whose long side is more than 200 times the short side."""


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) after the processor's resize: multiples of ``factor``, area within
    [``min_pixels``, ``max_pixels``] as far as the rounding allows, aspect ratio kept."""
    if max(height, width) / min(height, width) > 200:
        raise AspectRatioError(f"absolute aspect ratio must be smaller than 200, got "
                               f"{max(height, width) / min(height, width)}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class DynamicGeometry:
    """The settings the processor uses (after its own precedence rules) and where each came from."""

    min_pixels: int
    max_pixels: int
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    sources: dict[str, str]

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def image_tokens(self, width: int, height: int) -> int:
        """Placeholder tokens for one ``width`` x ``height`` image: (h' / f) * (w' / f)."""
        h, w = smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)
        return (h // self.factor) * (w // self.factor)

    def max_image_tokens(self) -> int:
        """An upper bound on the tokens of one image of any size the processor accepts: the
        largest grid within ``max_pixels``, or, for a very thin image (aspect ratio up to 200)
        whose short side is clamped to one ``factor``, ``sqrt(200 * max_pixels) / factor`` along
        the long side. With Qwen's defaults the first term is the bound (16384)."""
        f = self.factor
        return max(1, self.max_pixels // (f * f), math.isqrt(200 * self.max_pixels) // f)

    def video_tokens(self, frames: int, width: int, height: int) -> int:
        """Tokens for a video of ``frames`` frames (already sampled) of ``width`` x ``height``:
        frames are padded to a multiple of ``temporal_patch_size`` and every
        ``temporal_patch_size`` frames share one grid of (h' / f) * (w' / f) tokens."""
        t = max(1, self.temporal_patch_size)
        groups = -(-max(1, frames) // t)
        return groups * self.image_tokens(width, height)

    def video_grid(self, frames: int, width: int, height: int) -> tuple[int, int, int]:
        """``video_grid_thw`` of LLaMA-Factory's ``_get_qwen_video_grid_metadata`` for ``frames``
        sampled frames of ``width`` x ``height`` (already regularized): the frame count made even,
        ``ceil(frames / temporal_patch_size)`` by the patch rows and columns after ``smart_resize``."""
        frames += frames % 2
        h, w = smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)
        return -(-frames // max(1, self.temporal_patch_size)), h // self.patch_size, w // self.patch_size

    def grid_tokens(self, grid: tuple[int, int, int]) -> int:
        """Placeholder tokens of one ``(t, h, w)`` grid: ``t * h * w / merge_size ** 2``."""
        t, h, w = grid
        return t * h * w // (self.merge_size * self.merge_size)


@dataclass(frozen=True)
class VideoSampling:
    """The trainer's frame sampling: LLaMA-Factory's ``video_fps``, ``video_maxlen``,
    ``video_max_pixels``, ``video_min_pixels`` (``hparams/model_args.py`` defaults)."""

    fps: float = 2.0
    maxlen: int = 128
    max_pixels: int = 256 * 256
    min_pixels: int = 16 * 16


def sampled_frames(frames: int, seconds: float | None, sampling: VideoSampling) -> int:
    """How many frames ``BasePlugin._get_video_sample_indices`` keeps of a stream of ``frames``
    frames lasting ``seconds``: ``video_maxlen`` when the container gives no frame count (0,
    "infinite"), else ``min(frames, video_maxlen, max(1, floor(seconds * video_fps)))``. (With a
    frame count and no duration LLaMA-Factory raises a TypeError; counted here as ``frames``.)"""
    if frames <= 0:
        return sampling.maxlen
    by_time = max(1, math.floor(seconds * sampling.fps)) if seconds is not None else frames
    return min(frames, sampling.maxlen, by_time)


def regularized_size(width: int, height: int, sampling: VideoSampling) -> tuple[int, int]:
    """(width, height) of each sampled frame after ``Qwen2VLPlugin._preprocess_image``: scaled
    (truncating, as PIL sizes are ints) under ``video_max_pixels`` and over ``video_min_pixels``,
    each side at least 28, an aspect ratio over 200 cut to 180."""
    if width * height > sampling.max_pixels:
        factor = math.sqrt(sampling.max_pixels / (width * height))
        width, height = int(width * factor), int(height * factor)
    if width * height < sampling.min_pixels:
        factor = math.sqrt(sampling.min_pixels / (width * height))
        width, height = int(width * factor), int(height * factor)
    if min(width, height) < 28:
        width, height = max(width, 28), max(height, 28)
    if width / height > 200:
        width, height = height * 180, height
    if height / width > 200:
        width, height = width, width * 180
    return width, height


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def dynamic_geometry(processor: dict[str, Any] | None, family: Family,
                     defaults: dict[str, int] | None = None) -> DynamicGeometry:
    """What ``Qwen2VLImageProcessor(**processor)`` ends up with: ``min_pixels`` / ``max_pixels``
    keys win over ``size.shortest_edge`` / ``size.longest_edge`` (4.4x also wrote
    ``size.min_pixels`` / ``size.max_pixels``), then the class defaults from the family table."""
    proc = processor or {}
    size = proc.get("size") if isinstance(proc.get("size"), dict) else {}
    defaults = defaults or family.processor_defaults
    out: dict[str, int] = {}
    sources: dict[str, str] = {}
    for name, size_keys in (("min_pixels", ("shortest_edge", "min_pixels")),
                            ("max_pixels", ("longest_edge", "max_pixels"))):
        for where, value in [(name, proc.get(name))] + [(f"size.{k}", size.get(k)) for k in size_keys]:
            if _int(value):
                out[name], sources[name] = value, where
                break
        else:
            out[name], sources[name] = defaults[name], "default"
    for name in ("patch_size", "merge_size", "temporal_patch_size"):
        value = _int(proc.get(name))
        out[name], sources[name] = (value, name) if value else (defaults[name], "default")
    return DynamicGeometry(sources=sources, **out)
