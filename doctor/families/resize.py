"""The processor arithmetic of the ``"dynamic"`` token rule (Qwen2-VL / Qwen2.5-VL), replayed in
pure Python from transformers' ``image_processing_qwen2_vl.py`` (``smart_resize``,
``get_number_of_image_patches``) and ``Qwen2VLImageProcessor.__init__`` (which settings win). No
numpy, no torch: the dataset checks count tokens from image headers with it.
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


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def dynamic_geometry(processor: dict[str, Any] | None, family: Family) -> DynamicGeometry:
    """What ``Qwen2VLImageProcessor(**processor)`` ends up with: ``min_pixels`` / ``max_pixels``
    keys win over ``size.shortest_edge`` / ``size.longest_edge`` (4.4x also wrote
    ``size.min_pixels`` / ``size.max_pixels``), then the class defaults from the family table."""
    proc = processor or {}
    size = proc.get("size") if isinstance(proc.get("size"), dict) else {}
    defaults = family.processor_defaults
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
