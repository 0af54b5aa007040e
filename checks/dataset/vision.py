"""How many tokens one image takes in the text, derived from a model's config.json, the way the
processors of transformers 5.x expand the image placeholder (read in ``processing_llava.py`` and
``processing_llava_next.py``):

- llava: ``(image_size // patch) ** 2`` patches, plus the CLS token when
  ``vision_feature_select_strategy == "full"`` (``"default"`` drops it): 576 for CLIP-336/14.
  (The model's ``get_image_features`` drops the first token for "default", so a tower without
  CLS, like SigLIP, loses a patch: 729 - 1.)
- llava_next: a base tile plus the "anyres" grid for the image's own size: the best
  ``image_grid_pinpoints`` resolution (``select_best_resolution``), the padding removed
  (``_get_unpadded_features``), one newline token per row, minus 1 for "default".
- mllama: one ``<|image|>`` token per image; the pixels reach the text through cross-attention.
- dynamic resolution (Qwen2-VL, Qwen2.5-VL: the ``"dynamic"`` rule of their ``doctor.families``
  table): the image is resized with ``smart_resize`` to multiples of ``patch_size * merge_size``
  (28) with ``min_pixels <= h' * w' <= max_pixels`` and takes ``(h' / 28) * (w' / 28)``
  ``<|image_pad|>`` tokens, plus the ``<|vision_start|>`` / ``<|vision_end|>`` pair the chat
  template puts around it (``doctor.families.resize``, from image headers, no torch); a video of
  ``n`` sampled frames takes ``ceil(n / temporal_patch_size)`` such grids.
- Gemma 3 (the ``"fixed_wrapped"`` rule): ``image_seq_length`` (256) ``<image_soft_token>`` per
  image whatever its size, plus ``\n\n<start_of_image>`` ... ``<end_of_image>\n\n`` (4 tokens)
  that ``processing_gemma3.py`` writes in place of the ``<start_of_image>`` placeholder.
- original LLaVA (``llava_llama``...): from ``mm_vision_tower`` (``clip-vit-large-patch14-336``) and
  ``mm_vision_select_feature`` ("patch" drops CLS, "cls_patch" keeps it).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.families import Family, family_of
from doctor.families.resize import AspectRatioError, DynamicGeometry, dynamic_geometry

DEFAULT_TOKENS = 576  # CLIP ViT-L/14 at 336 px, LLaVA-1.5


@dataclass
class VisionSpec:
    family: str
    description: str
    per_image: int | None = None  # tokens for every image, when the size does not matter
    size: int = 336
    patch: int = 14
    cls: int = 1  # extra tokens the tower puts before the patches (CLIP's CLS)
    strategy: str = "default"
    pinpoints: list[tuple[int, int]] = field(default_factory=list)
    dynamic: DynamicGeometry | None = None  # the "dynamic" rule (Qwen2-VL): the processor's settings
    extra: int = 0  # tokens the chat template puts around every image (Qwen: vision start / end)
    video: DynamicGeometry | None = None  # the video processor's settings, when they differ
    video_not_counted: str = ""  # why this family's video tokens are not counted (Qwen3-VL: timestamps)

    def tokens(self, width: int | None = None, height: int | None = None) -> int:
        """Tokens for one image of ``width`` x ``height`` px (unknown size: the largest case)."""
        if self.dynamic is not None:
            if not width or not height:
                return self.dynamic.max_image_tokens() + self.extra
            try:
                return self.dynamic.image_tokens(width, height) + self.extra
            except AspectRatioError:  # the processor refuses it; count the most it could take
                return self.dynamic.max_image_tokens() + self.extra
        if self.per_image is not None:
            return self.per_image
        side = self.size // self.patch
        base = side * side + self.cls
        if not width or not height:  # the most an image can take: one whose shape fills a grid exactly
            rows_cols = [(h // self.size * side, w // self.size * side) for h, w in self.pinpoints]
            return max(r * c + r for r, c in rows_cols) + base - (1 if self.strategy == "default" else 0)
        best_h, best_w = select_best_resolution((height, width), self.pinpoints)
        unpadded, newlines = unpadded_features(height, width, side, side, best_h // self.size, best_w // self.size)
        return unpadded + newlines + base - (1 if self.strategy == "default" else 0)

    def video_tokens(self, frames: int, width: int, height: int) -> int:
        """Tokens for a video of ``frames`` sampled frames (dynamic rule only; others: per frame)."""
        geo = self.video or self.dynamic
        if geo is None:
            return frames * self.tokens(width, height)
        try:
            return geo.video_tokens(frames, width, height) + self.extra
        except AspectRatioError:
            return -(-frames // max(1, geo.temporal_patch_size)) * geo.max_image_tokens() + self.extra


def vision_spec(model_dir: str | None) -> VisionSpec:
    """The spec for ``model_dir``'s config.json; the LLaVA-1.5 default without a model."""
    if not model_dir:
        return VisionSpec("default", f"{DEFAULT_TOKENS} per image (assumed: CLIP ViT-L/14 at 336 px as in "
                                     "LLaVA-1.5; pass --model for the model's own count)", per_image=DEFAULT_TOKENS)
    config = _read(Path(model_dir) / "config.json")
    model_type = config.get("model_type")
    vision = config.get("vision_config") or {}
    strategy = config.get("vision_feature_select_strategy", "default")
    fam = family_of(model_type)  # the family table's token rule decides
    if fam is None and vision:
        # a vision-language model with no family table: its processor's count is unknown here, and
        # llava's formula is wrong for most (tiles, dynamic resolution, fixed soft tokens): not counted
        return VisionSpec(str(model_type or "unknown"), f"not counted: model type {model_type!r} has no family "
                          "table in vlm-doctor (docs/families.md), so its image tokens are unknown; records are "
                          "measured by their text alone", per_image=0)
    rule = fam.token_rule if fam is not None else None
    if fam is not None and rule == "dynamic":
        return dynamic_spec(Path(model_dir), fam)
    if fam is not None and rule == "fixed_wrapped":
        return wrapped_spec(Path(model_dir), fam, config)
    if fam is not None and rule == "one":
        return VisionSpec(fam.name, f"1 per image ({fam.name}: one {fam.image_token} token; pixels go through "
                                    "cross-attention)", per_image=1)
    if rule in ("fixed", "anyres"):
        size = int(vision.get("image_size", 224))
        patch = int(vision.get("patch_size", 32))
        cls = 0 if "siglip" in str(vision.get("model_type", "")) else 1
        processor = _read(Path(model_dir) / "processor_config.json")
        if isinstance(processor.get("num_additional_image_tokens"), int):
            cls = processor["num_additional_image_tokens"]
        if rule == "anyres":
            pins = config.get("image_grid_pinpoints") or [[size, size]]
            spec = VisionSpec("llava_next", "", None, size, patch, cls, strategy, [tuple(p) for p in pins])
            spec.description = (f"llava_next: {spec.tokens(size, size)} for a {size}x{size} image, up to "
                                f"{spec.tokens()} by aspect ratio (image_grid_pinpoints)")
            return spec
        n = (size // patch) ** 2 + cls - (1 if strategy == "default" else 0)
        return VisionSpec("llava", f"{n} per image ({size} px / patch {patch}, "
                                   f"vision_feature_select_strategy {strategy!r})", per_image=n)
    tower = str(config.get("mm_vision_tower") or "")
    if tower:
        m = re.search(r"patch(\d+)(?:-(\d+))?", tower)
        patch, size = (int(m.group(1)), int(m.group(2) or 224)) if m else (14, 336)
        select = config.get("mm_vision_select_feature", "patch")
        n = (size // patch) ** 2 + (1 if select == "cls_patch" else 0)
        return VisionSpec("llava-original", f"{n} per image ({tower}, mm_vision_select_feature {select!r})",
                          per_image=n)
    return VisionSpec("default", f"{DEFAULT_TOKENS} per image (assumed: {model_dir}/config.json names no "
                                 "vision tower)", per_image=DEFAULT_TOKENS)


def dynamic_spec(folder: Path, fam: Family) -> VisionSpec:
    """The spec of a dynamic-resolution family from its saved processor settings."""
    image, video = processor_sections(folder)
    geo = dynamic_geometry(image, fam)
    # No video processor settings saved: transformers' video processor loads preprocessor_config.json
    # over its own class defaults (video_processing_utils.get_video_processor_dict).
    video_geo = dynamic_geometry(video if video else image, fam, fam.video_processor_defaults or None)
    spec = VisionSpec(fam.name, "", dynamic=geo, extra=fam.tokens_per_image_extra, video=video_geo,
                      video_not_counted=fam.video_tokens_not_counted)
    spec.description = (
        f"{fam.name}: (h'/{geo.factor}) x (w'/{geo.factor}) per image after smart_resize between min_pixels "
        f"{geo.min_pixels:,} and max_pixels {geo.max_pixels:,}, up to {geo.max_image_tokens():,}"
        + (f", + {fam.tokens_per_image_extra} around each" if fam.tokens_per_image_extra else ""))
    return spec


def wrapped_spec(folder: Path, fam: Family, config: dict[str, Any]) -> VisionSpec:
    """The ``"fixed_wrapped"`` rule (Gemma 3): the processor writes ``image_seq_length`` image
    tokens (processor_config.json; else config.json's ``mm_tokens_per_image``; else the class
    default) plus ``tokens_per_image_extra`` around them, whatever the image's size."""
    saved = _read(folder / "processor_config.json").get("image_seq_length")
    n, source = ((saved, "image_seq_length in processor_config.json") if _count(saved) else
                 (config["mm_tokens_per_image"], "mm_tokens_per_image in config.json")
                 if _count(config.get("mm_tokens_per_image")) else
                 (fam.processor_defaults.get("image_seq_length", 256), "the processor's default"))
    extra = fam.tokens_per_image_extra
    return VisionSpec(fam.name, f"{n + extra} per image ({n} {fam.image_token}, {source}, + {extra} around "
                                "each; pan-and-scan crops, on only when the processor is called with "
                                "do_pan_and_scan=True, not counted)", per_image=n + extra)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def processor_sections(folder: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(image processor settings, video processor settings) as transformers 5 (one
    processor_config.json) or 4.x (preprocessor_config.json, video_preprocessor_config.json) save them."""
    whole = _read(folder / "processor_config.json")
    image = whole.get("image_processor") if isinstance(whole.get("image_processor"), dict) else None
    video = whole.get("video_processor") if isinstance(whole.get("video_processor"), dict) else None
    if image is None and (folder / "preprocessor_config.json").is_file():
        image = _read(folder / "preprocessor_config.json")
    if video is None and (folder / "video_preprocessor_config.json").is_file():
        video = _read(folder / "video_preprocessor_config.json")
    return image, video


def max_length_of(model_dir: str | None, tokenizer_dir: str | None) -> tuple[int | None, str]:
    """The training length budget and where it came from."""
    if model_dir:
        config = _read(Path(model_dir) / "config.json")
        if isinstance(config.get("tokenizer_model_max_length"), int):  # original LLaVA records it
            return config["tokenizer_model_max_length"], "tokenizer_model_max_length in config.json"
    for folder in (tokenizer_dir, model_dir):
        if folder:
            value = _read(Path(folder) / "tokenizer_config.json").get("model_max_length")
            if isinstance(value, (int, float)) and 0 < value < 1e7:
                return int(value), f"model_max_length in {folder}/tokenizer_config.json"
    return None, ""


def select_best_resolution(original: tuple[int, int], possible: list[tuple[int, int]]) -> tuple[int, int]:
    """transformers' ``image_processing_utils.select_best_resolution``: (height, width)."""
    height0, width0 = original
    best, best_effective, best_waste = possible[0], 0, math.inf
    for height, width in possible:
        scale = min(width / width0, height / height0)
        effective = min(int(width0 * scale) * int(height0 * scale), width0 * height0)
        waste = width * height - effective
        if effective > best_effective or (effective == best_effective and waste < best_waste):
            best, best_effective, best_waste = (height, width), effective, waste
    return best


def unpadded_features(height: int, width: int, patches_h: int, patches_w: int, scale_h: int,
                      scale_w: int) -> tuple[int, int]:
    """``LlavaNextProcessor._get_unpadded_features``: (features, newline features)."""
    current_h, current_w = patches_h * scale_h, patches_w * scale_w
    if width / height > current_w / current_h:
        new_h = int(round(height * (current_w / width), 7))
        current_h -= (current_h - new_h) // 2 * 2
    else:
        new_w = int(round(width * (current_h / height), 7))
        current_w -= (current_w - new_w) // 2 * 2
    return current_h * current_w, current_h


def read_config(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when it is missing or not one."""
    return _read(path)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            value = json.load(f)
    except (OSError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}
