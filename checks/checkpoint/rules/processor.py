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

from doctor.findings import Location, Severity
from doctor.registry import Check, register

from doctor.checks.checkpoint.fixtures import image_processor_config, load_json_dict, vision_config
from doctor.checks.checkpoint.rules.tokenizer import is_native_vlm

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
