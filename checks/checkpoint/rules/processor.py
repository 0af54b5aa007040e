"""CKP406-CKP407: the processor files of a transformers VLM folder against config.json.

Measured on the installed transformers (5.x) with real processor + forward runs: a LlavaProcessor
without ``patch_size`` raises ``TypeError: unsupported operand type(s) for //``; without
``vision_feature_select_strategy`` or ``num_additional_image_tokens`` (CLIP's CLS token) it writes
one image token too many or too few: ``Image features and image tokens do not match``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from doctor.checks.checkpoint.fixtures import image_processor_config, load_json_dict, vision_config
from doctor.checks.checkpoint.rules.tokenizer import is_native_vlm

from doctor.findings import Location, Severity
from doctor.registry import Check, register

# Processors that expand the image token themselves (transformers >= 4.47) and need these fields.
EXPANDING = frozenset({"llava", "llava_next", "llava_onevision", "llava_next_video", "vipllava"})
# Extra tokens a vision tower emits besides its patches (the CLS token).
ADDITIONAL_TOKENS = {"clip_vision_model": 1, "siglip_vision_model": 0}


@register
class ProcessorFilesMissing(Check):
    """A transformers VLM folder has no image-processor settings.

    ## What it does
    Looks for the image processor's config: `processor_config.json` with an `image_processor`
    section (what transformers 5 writes) or `preprocessor_config.json` (4.x).

    ## Why is this bad?
    `AutoProcessor.from_pretrained(folder)` fails (`OSError: Can't load image processor`), so inference
    code written for the published model breaks on the fine-tuned one; merge and convert scripts often
    forget these files. A warning, like a folder with no tokenizer (CKP401): the model itself loads
    (`from_pretrained` never reads these files) and the base's processor works with it; processor files
    that are present but disagree with the model are CKP407's error.

    ## Example
    A merged llava folder with config.json, model.safetensors and the tokenizer, nothing else.

    ## How to fix
    Copy preprocessor_config.json / processor_config.json (and chat_template.jinja) from the base model,
    or `AutoProcessor.from_pretrained(base).save_pretrained(folder)`.
    """

    code = "CKP406"
    name = "processor-files-missing"
    severity = Severity.WARNING
    artifacts = frozenset({"model"})
    requires = ("CKP001",)

    def run(self, ckp_config: dict[str, Any], path: str):
        if not is_native_vlm(ckp_config):
            return
        proc, _, _ = image_processor_config(Path(path))
        if proc is None:
            yield self.finding("no preprocessor_config.json and no processor_config.json with an image_processor "
                               "section: AutoProcessor.from_pretrained fails on this folder", path=path)


@register
class ProcessorConfigMismatch(Check):
    """The processor's `patch_size`, `vision_feature_select_strategy` or `num_additional_image_tokens`
    are missing or disagree with the model.

    ## What it does
    For processors that expand the image token (llava, llava_next, ...: transformers >= 4.47), reads
    processor_config.json and compares `patch_size` with `vision_config.patch_size`,
    `vision_feature_select_strategy` with config.json's, and `num_additional_image_tokens` with the
    tower's CLS token (CLIP: 1, SigLIP: 0).

    ## Why is this bad?
    The processor decides how many image tokens to write; the model produces features by its own
    config. Missing `patch_size` raises `TypeError: unsupported operand type(s) for //`; the other two
    give one token too many or too few: `Image features and image tokens do not match`. Processor
    files saved before 4.47 lack these fields ("Expanding inputs for image tokens in LLaVa should be
    done in processing").

    ## Example
    processor_config.json `{"processor_class": "LlavaProcessor"}` with no `patch_size`.

    ## How to fix
    Set the fields in processor_config.json from config.json (`patch_size` = vision_config.patch_size,
    the same `vision_feature_select_strategy`, `num_additional_image_tokens` 1 for CLIP).
    """

    code = "CKP407"
    name = "processor-config-mismatch"
    artifacts = frozenset({"model"})
    requires = ("CKP406",)

    def run(self, ckp_config: dict[str, Any], path: str):
        if ckp_config.get("model_type") not in EXPANDING or not is_native_vlm(ckp_config):
            return
        folder = Path(path)
        proc = load_json_dict(folder / "processor_config.json")
        where = str(folder / "processor_config.json")
        if proc is None:
            yield self.finding("no processor_config.json: the processor does not know patch_size and "
                               "vision_feature_select_strategy, so it cannot expand image tokens", path=path)
            return
        vc = vision_config(ckp_config) or {}
        wanted = {
            "patch_size": vc.get("patch_size"),
            "vision_feature_select_strategy": ckp_config.get("vision_feature_select_strategy", "default"),
            "num_additional_image_tokens": ADDITIONAL_TOKENS.get(str(vc.get("model_type"))),
        }
        for key, want in wanted.items():
            if want is None:
                continue
            have = proc.get(key)
            loc = Location(pointer=f"/{key}")
            if have is None:
                yield self.finding(f"processor_config.json has no {key} (the model needs {want!r})", path=where,
                                   location=loc, hint=f"Add \"{key}\": {json.dumps(want)} to processor_config.json.")
            elif have != want:
                yield self.finding(f"processor_config.json {key} is {have!r} but the model needs {want!r}",
                                   path=where, location=loc, hint=f"Set \"{key}\" to {json.dumps(want)}.")


# ---- family tables (doctor.families): the image processor's geometry against the vision config -------


def _processor_sections(folder: Path) -> list[tuple[dict[str, Any], Path, str]]:
    """The image processor's settings and, when saved, the video processor's (5.x writes
    ``video_preprocessor_config.json`` or a ``video_processor`` section)."""
    out = []
    proc, proc_path, prefix = image_processor_config(folder)
    if proc is not None and proc_path is not None:
        out.append((proc, proc_path, prefix))
    whole = load_json_dict(folder / "processor_config.json")
    if whole is not None and isinstance(whole.get("video_processor"), dict):
        out.append((whole["video_processor"], folder / "processor_config.json", "/video_processor"))
    video = load_json_dict(folder / "video_preprocessor_config.json")
    if video is not None:
        out.append((video, folder / "video_preprocessor_config.json", ""))
    return out


@register
class ProcessorGeometryMismatch(Check):
    """The image (or video) processor patches images differently from the vision encoder.

    ## What it does
    For families whose table maps processor keys to vision roles (Qwen2-VL, Qwen2.5-VL:
    `patch_size` -> `vision_config.patch_size`, `merge_size` -> `vision_config.spatial_merge_size`,
    `temporal_patch_size` -> `vision_config.temporal_patch_size`), compares each value in
    preprocessor_config.json / processor_config.json (and the video processor's file) with
    config.json. A key the processor file leaves out takes the processor class's default.

    ## Why is this bad?
    The processor cuts the pixels into patches and counts the placeholder tokens; the model
    re-assembles them by its own config. Measured on transformers 5 with real forwards: another
    `merge_size` raises `Image features and image tokens do not match`; another `patch_size` or
    `temporal_patch_size` raises a reshape / index error inside the vision encoder.

    ## Example
    preprocessor_config.json `"merge_size": 1` for a model with `"spatial_merge_size": 2`.

    ## How to fix
    Copy the processor files of the base model, or set the keys to the vision config's values.
    """

    code = "CKP503"
    name = "processor-geometry-mismatch"
    artifacts = frozenset({"model"})
    requires = ("CKP406",)

    def run(self, ckp_config: dict[str, Any], path: str):
        from doctor.families import family_of

        fam = family_of(ckp_config.get("model_type"))
        vc = vision_config(ckp_config)
        if fam is None or vc is None or not fam.processor_keys or fam.token_rule != "dynamic":
            return
        for proc, where, prefix in _processor_sections(Path(path)):
            video = prefix == "/video_processor" or where.name.startswith("video_")
            defaults = fam.video_processor_defaults if video and fam.video_processor_defaults else fam.processor_defaults
            for key, role in fam.processor_keys.items():
                vkey = fam.vision_keys.get(role)
                want = vc.get(vkey) if vkey else None
                if not isinstance(want, int) or isinstance(want, bool):
                    continue
                have = proc.get(key)
                shown = have if have is not None else defaults.get(key)
                if shown == want:
                    continue
                said = f"{key} is {have!r}" if have is not None else f"has no {key} (the processor then uses {shown})"
                yield self.finding(
                    f"{where.name} {said} but config.json vision_config.{vkey} is {want}: the processor's "
                    "patches and token count do not match what the vision encoder builds",
                    path=str(where), location=Location(pointer=f"{prefix}/{key}"),
                    hint=f"Set \"{key}\": {want} in {where.name}.")


@register
class PixelLimitsInvalid(Check):
    """The processor's `min_pixels` / `max_pixels` are inconsistent, or one image can fill the context.

    ## What it does
    For families with a dynamic-resolution token rule (Qwen2-VL, Qwen2.5-VL) reads the pixel
    limits the image processor ends up with (`min_pixels` / `max_pixels` keys win over
    `size.shortest_edge` / `size.longest_edge`) and flags: `min_pixels` above `max_pixels`;
    `max_pixels` below one merged patch (`(patch_size x merge_size)^2`, every image then becomes
    one token); and a largest image whose tokens (`max_pixels / (patch_size x merge_size)^2`)
    exceed the tokenizer's `model_max_length`.

    ## Why is this bad?
    With the limits reversed, images are resized to sizes outside the range the model was
    trained on and the token count no longer grows with the image. A `max_pixels` that lets one
    image take more tokens than the training length makes truncation cut through the image's
    `<|image_pad|>` tokens: the transformers 5 processor raises "Mismatch in `image` token count
    between text and `input_ids`" (measured), trainers that truncate after processing raise `Image
    features and image tokens do not match`; without truncation large images run out of memory.

    ## Example
    `"max_pixels": 12845056` (16384 tokens per image) with `"model_max_length": 4096`.

    ## How to fix
    Lower `max_pixels` (LLaMA-Factory: `image_max_pixels`; e.g. 768 x 768 = 589824, 752 tokens) or
    raise the training length; keep `min_pixels` <= `max_pixels`.
    """

    code = "CKP504"
    name = "pixel-limits-invalid"
    severity = Severity.WARNING
    artifacts = frozenset({"model"})
    requires = ("CKP406",)

    def run(self, ckp_config: dict[str, Any], path: str):
        from doctor.families import family_of
        from doctor.families.resize import dynamic_geometry

        fam = family_of(ckp_config.get("model_type"))
        if fam is None or fam.token_rule != "dynamic":
            return
        folder = Path(path)
        proc, where, prefix = image_processor_config(folder)
        if proc is None or where is None:
            return
        geo = dynamic_geometry(proc, fam)

        def loc(name: str) -> Location:
            src = geo.sources[name]
            return Location(pointer=f"{prefix}/{src.replace('.', '/')}" if src != "default" else prefix or "/")

        if geo.min_pixels > geo.max_pixels:
            yield self.finding(f"min_pixels {geo.min_pixels} is above max_pixels {geo.max_pixels}: images are resized "
                               "outside the range and their token count no longer follows their size",
                               path=str(where), location=loc("min_pixels"),
                               hint="Keep min_pixels <= max_pixels: copy both from the base model's processor files.")
            return
        unit = geo.factor * geo.factor
        if geo.max_pixels < unit:
            yield self.finding(f"max_pixels {geo.max_pixels} is below one merged patch ({geo.factor}x{geo.factor} = "
                               f"{unit} px): every image shrinks to one token", path=str(where), location=loc("max_pixels"),
                               hint=f"Set max_pixels to at least {unit * 4}, or copy it from the base model's processor files.")
            return
        tok = load_json_dict(folder / "tokenizer_config.json") or {}
        limit = tok.get("model_max_length")
        most = geo.max_image_tokens()
        if isinstance(limit, (int, float)) and not isinstance(limit, bool) and 0 < limit < 1e7 and most > limit:
            yield self.finding(
                f"max_pixels {geo.max_pixels} lets one image take up to {most} image tokens, more than "
                f"model_max_length {int(limit)}: truncation cuts through the image tokens (the processor raises "
                "\"Mismatch in `image` token count\")", path=str(where), location=loc("max_pixels"),
                hint=f"Lower max_pixels to at most {int(limit) // 2 * unit} ({int(limit) // 2} tokens) or raise the "
                     "training length.")


@register
class ImageSeqLengthMismatch(Check):
    """The processor writes another number of image tokens than the model makes image features.

    ## What it does
    For families whose processor writes a fixed run of image tokens per image (Gemma 3: the
    `"fixed_wrapped"` rule), compares processor_config.json's `image_seq_length` (the processor's
    default, 256, when the file leaves it out) with config.json's `mm_tokens_per_image` (the number
    of soft tokens the projector pools the patches to; 256 when absent).

    ## Why is this bad?
    The processor expands each image placeholder into `image_seq_length` `<image_soft_token>`s; the
    model scatters `mm_tokens_per_image` features per image into them. Measured on transformers 5:
    any difference raises `Image features and image tokens do not match` on the first image.

    Severity: error, because the first forward with an image raises.

    ## Example
    processor_config.json `"image_seq_length": 256` beside a config.json with `"mm_tokens_per_image": 64`.

    ## How to fix
    Copy processor_config.json from the base model, or set `image_seq_length` to config.json's
    `mm_tokens_per_image`.
    """

    code = "CKP507"
    name = "image-seq-length-mismatch"
    artifacts = frozenset({"model"})
    requires = ("CKP406",)

    def run(self, ckp_config: dict[str, Any], path: str):
        from doctor.families import family_of

        fam = family_of(ckp_config.get("model_type"))
        if fam is None or fam.token_rule != "fixed_wrapped":
            return
        where = Path(path) / "processor_config.json"
        saved = load_json_dict(where)
        if saved is None:
            return  # no saved processor: CKP406 says so; the processor then comes from elsewhere
        default = fam.processor_defaults.get("image_seq_length", 256)
        want = ckp_config.get("mm_tokens_per_image", default)
        have = saved.get("image_seq_length")
        shown = default if have is None else have
        if not _whole(want) or not _whole(shown) or shown == want:
            return
        said = f"image_seq_length is {have}" if have is not None else f"has no image_seq_length (the processor then uses {default})"
        yield self.finding(
            f"processor_config.json {said} but config.json mm_tokens_per_image is {want}: the processor writes "
            f"{shown} image tokens per image where the model makes {want} features, and the first image raises "
            "\"Image features and image tokens do not match\"",
            path=str(where), location=Location(pointer="/image_seq_length"),
            hint=f"Set \"image_seq_length\": {want} in processor_config.json (or copy it from the base model).")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
