"""The images stage 2 shows a model besides the main one: one per shape its processor treats apart.

- llava_next (anyres): one image per distinct aspect ratio in the union of config.json's and the
  image processor's ``image_grid_pinpoints``, at the smallest pinpoint of that ratio, plus every
  pinpoint that only one of the two lists holds (the two sides then pick different grids for it),
  plus one very tall and one very wide image. The processor picks the pinpoint that fits the image
  best (``select_best_resolution``) and the model recomputes the grid from ``image_sizes`` with
  its own list; an image only selects a pinpoint when it has that pinpoint's exact size (a smaller
  image of the same ratio wastes least on the smallest grid), so pinpoint images are full-size.
  Tiling cost is the grid, not the pixels, so this stays bounded by the pinpoint list.
- mllama: one image per tile arrangement of the image processor (``max_image_tiles``) and of
  ``vision_config.supported_aspect_ratios``, at the canvas size (tiles x tile size): the canvas is
  chosen by the smallest upscale, so only the exact size selects an arrangement.
- qwen2_vl / qwen2_5_vl: a portrait (1:2), a square and a landscape (2:1) image, each the smallest
  whose ``smart_resize`` keeps its ratio between the processor's ``min_pixels`` and ``max_pixels``.
- other tiling processors: portrait, square and landscape crops of the main image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_IMAGES = 12  # extra images per pass at most (llava-onevision's 36 pinpoints hold 23 ratios, some 30 tiles)
EXTREME = 10  # the very tall / very wide llava_next images: 1:10 and 10:1
EXTREME_SIDE = 20  # their short side in pixels (anyres pads to the chosen grid, so tiny is enough)


@dataclass(frozen=True)
class Shape:
    label: str  # what the image stands for: "pinpoint [336, 672]" ([height, width]), "1x2 tiles" (rows x columns), "portrait"
    size: tuple[int, int]  # (width, height), as PIL gives it
    note: str = ""  # where it came from, for a finding ("only in config.json's image_grid_pinpoints")


def shapes(processor: Any, config: dict[str, Any], family: str | None) -> list[Shape]:
    """The extra images for stage 2 (the main image runs besides them); [] for families that do
    not tile (llava's CLIP processor resizes and crops every image to one square)."""
    ip = getattr(processor, "image_processor", None)
    if family in ("qwen2_vl", "qwen2_5_vl") or hasattr(ip, "merge_size") and hasattr(ip, "temporal_patch_size"):
        return _qwen(ip)
    if family == "llava_next" or getattr(ip, "image_grid_pinpoints", None):
        return _anyres(ip, config)
    if family == "mllama" or getattr(ip, "max_image_tiles", None):
        return _tiles(ip, config)
    return []


def bounded(found: list[Shape], limit: int = MAX_IMAGES) -> tuple[list[Shape], list[Shape]]:
    """(run, left out): at most ``limit`` images, those that only one side knows first (where the
    processor and the model disagree), then in the given order (smallest first); the very tall
    and very wide images always run."""
    always = [sh for sh in found if sh.label in ("very tall", "very wide")]
    rest = [sh for sh in found if sh not in always]
    ranked = sorted(rest, key=lambda sh: not sh.note)  # stable: keeps the order within each group
    keep = set(ranked[: max(0, limit - len(always))])
    return [sh for sh in found if sh in keep or sh in always], [sh for sh in rest if sh not in keep]


def image_for(shape: Shape, main: Any) -> Any:
    """An image of ``shape.size``: the main image resized, so it shows the same content."""
    from PIL import Image

    return main.resize(shape.size, Image.Resampling.BILINEAR)


def _ratio(h: int, w: int) -> str:
    g = math.gcd(h, w) or 1
    return f"{h // g}:{w // g}"


def _pairs(value: Any) -> list[tuple[int, int]]:
    out = []
    if isinstance(value, (list, tuple)):
        for p in value:
            if isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, int) and x > 0 for x in p):
                out.append((int(p[0]), int(p[1])))
    return out


def pinpoint_lists(ip: Any, config: dict[str, Any]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(config.json's, the image processor's) ``image_grid_pinpoints`` as (height, width) pairs."""
    return _pairs(config.get("image_grid_pinpoints")), _pairs(getattr(ip, "image_grid_pinpoints", None))


def _anyres(ip: Any, config: dict[str, Any]) -> list[Shape]:
    cfg, proc = pinpoint_lists(ip, config)
    union = sorted(set(cfg) | set(proc), key=lambda p: (p[0] * p[1], p))
    out: dict[tuple[int, int], Shape] = {}
    seen_ratio: set[str] = set()
    for h, w in union:
        only = ("only in config.json's image_grid_pinpoints" if (h, w) not in proc else
                "only in the image processor's image_grid_pinpoints" if (h, w) not in cfg else "")
        ratio = _ratio(h, w)
        if ratio in seen_ratio and not only:
            continue
        seen_ratio.add(ratio)
        out[(h, w)] = Shape(f"pinpoint [{h}, {w}]", (w, h), only)
    short, long = EXTREME_SIDE, EXTREME_SIDE * EXTREME
    return [*out.values(), Shape("very tall", (short, long)), Shape("very wide", (long, short))]


def _size_field(size: Any, key: str) -> int | None:
    """``size[key]`` of an image processor: a dict (4.x, saved configs) or a SizeDict (5.x)."""
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _tile_size(ip: Any) -> int | None:
    size = getattr(ip, "size", None)
    if isinstance(size, int) and size > 0:
        return size
    return _size_field(size, "height") or _size_field(size, "shortest_edge")


def _tiles(ip: Any, config: dict[str, Any]) -> list[Shape]:
    tile = _tile_size(ip)
    max_tiles = getattr(ip, "max_image_tiles", None)
    if tile is None:
        return []
    arrangements: dict[tuple[int, int], str] = {}
    if isinstance(max_tiles, int) and max_tiles > 0:
        for a in range(1, max_tiles + 1):
            for b in range(1, max_tiles + 1):
                if a * b <= max_tiles:
                    arrangements[(a, b)] = ""
    vision = config.get("vision_config") if isinstance(config.get("vision_config"), dict) else {}
    for a, b in _pairs(vision.get("supported_aspect_ratios")):
        arrangements.setdefault((a, b), "only in vision_config.supported_aspect_ratios")
    # the processor's canvas is (rows, columns) of tiles: height a * tile, width b * tile
    return [Shape(f"{a}x{b} tiles", (b * tile, a * tile), note)
            for (a, b), note in sorted(arrangements.items(), key=lambda kv: (kv[0][0] * kv[0][1], kv[0]))]


def _qwen(ip: Any) -> list[Shape]:
    patch = getattr(ip, "patch_size", 14) or 14
    merge = getattr(ip, "merge_size", 2) or 2
    factor = int(patch) * int(merge)
    size = getattr(ip, "size", None)
    lo = getattr(ip, "min_pixels", None) or _size_field(size, "shortest_edge") or 56 * 56
    hi = getattr(ip, "max_pixels", None) or _size_field(size, "longest_edge") or lo * 4
    # the smallest side s (a multiple of factor) whose s x 2s image is within [min_pixels, max_pixels]
    side = factor * max(1, math.ceil(math.sqrt(lo / 2) / factor))
    if 2 * side * side > hi:
        side = factor * max(1, math.floor(math.sqrt(hi / 2) / factor))
    square = factor * max(1, math.ceil(math.sqrt(lo) / factor))
    return [Shape("portrait", (side, 2 * side)), Shape("square", (square, square)), Shape("landscape", (2 * side, side))]


def _pp(pairs: list[tuple[int, int]]) -> str:
    return "[" + ", ".join(f"[{h}, {w}]" for h, w in pairs) + "]"

def disagreements(processor: Any, config: dict[str, Any]) -> list[str]:
    """Where the processor's image geometry and config.json differ (the causes of a shape that
    raises): llava_next pinpoints, mllama tiles and tile size, Qwen patch / merge / temporal
    patch sizes, llava's patch size and feature strategy."""
    ip = getattr(processor, "image_processor", None)
    vision = config.get("vision_config") if isinstance(config.get("vision_config"), dict) else {}
    out: list[str] = []
    cfg_pp, proc_pp = pinpoint_lists(ip, config)
    if cfg_pp and proc_pp and set(cfg_pp) != set(proc_pp):
        out.append(f"config.json's image_grid_pinpoints {_pp(cfg_pp)} vs the image processor's {_pp(proc_pp)}")
    pairs: list[tuple[str, Any, str, Any]] = []
    if getattr(ip, "max_image_tiles", None) is not None:
        pairs += [("max_image_tiles", ip.max_image_tiles, "vision_config.max_num_tiles", vision.get("max_num_tiles")),
                  ("size", _tile_size(ip), "vision_config.image_size", vision.get("image_size"))]
    if hasattr(ip, "merge_size") and hasattr(ip, "temporal_patch_size"):
        pairs += [("patch_size", ip.patch_size, "vision_config.patch_size", vision.get("patch_size")),
                  ("merge_size", ip.merge_size, "vision_config.spatial_merge_size", vision.get("spatial_merge_size")),
                  ("temporal_patch_size", ip.temporal_patch_size, "vision_config.temporal_patch_size",
                   vision.get("temporal_patch_size"))]
    if getattr(processor, "patch_size", None) is not None and not hasattr(ip, "merge_size"):
        pairs += [("patch_size", processor.patch_size, "vision_config.patch_size", vision.get("patch_size")),
                  ("vision_feature_select_strategy", getattr(processor, "vision_feature_select_strategy", None),
                   "vision_feature_select_strategy", config.get("vision_feature_select_strategy"))]
    for mine, have, theirs, want in pairs:
        if have is not None and want is not None and have != want:
            out.append(f"the processor's {mine} is {have!r}, config.json's {theirs} is {want!r}")
    return out
