"""CKP004, CKP011: config.json against what the installed transformers release knows."""

from __future__ import annotations

from typing import Any

from doctor.checks.checkpoint.rules.config import ORIGINAL_ARCHITECTURES
from doctor.checks.checkpoint.rules.config import config_path as _config_path
from doctor.checks.checkpoint.rules.config import installed as _installed

from doctor.envprobe import version_tuple
from doctor.findings import Location, Severity
from doctor.registry import Check, register


@register
class ArchitectureUnknown(Check):
    """An entry of `architectures` is not a class of the installed transformers.

    ## What it does
    Looks up each name in `architectures` among the installed transformers' model classes.

    ## Why is this bad?
    Pipelines and tools that instantiate `architectures[0]` fail with `AttributeError: module
    transformers has no attribute ...`; it also often means the folder was written by another
    codebase or by a newer transformers. A warning: the Auto classes pick the class from `model_type`
    (CKP002's error when that is unknown), so `from_pretrained` itself loads the folder.

    ## Example
    `{"model_type": "llava", "architectures": ["LlavaForConditionalGenerationX"]}`

    ## How to fix
    Set `architectures` to the class that saved the weights (for llava: LlavaForConditionalGeneration),
    or upgrade transformers if the class is newer than the installed release.
    """

    code = "CKP004"
    name = "architecture-unknown"
    severity = Severity.WARNING
    artifacts = frozenset({"model"})
    requires = ("CKP002",)
    packages = ("transformers",)

    def run(self, ckp_config: dict[str, Any], path: str):
        info = _installed()
        archs = ckp_config.get("architectures")
        if archs is None or "auto_map" in ckp_config:
            return
        if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
            yield self.finding(f"\"architectures\" must be a list of class names, not {archs!r}",
                               path=_config_path(path), location=Location(key="architectures"))
            return
        for i, arch in enumerate(archs):
            if arch in ORIGINAL_ARCHITECTURES and ckp_config.get("model_type") == "llava":
                continue  # CKP003 explains this one
            if not info.knows_architecture(arch, ckp_config.get("model_type")):
                yield self.finding(f"architecture {arch!r} is not a class of transformers {info.version}",
                                   path=_config_path(path), location=Location(key=f"architectures.{i}"))


@register
class SavedByNewerTransformers(Check):
    """config.json was written by a newer transformers than the installed one.

    ## What it does
    Compares `transformers_version` in config.json with the installed release.

    ## Why is this bad?
    Newer releases write fields older ones do not read (transformers 5 writes `dtype` and
    `rope_parameters` instead of `torch_dtype` and `rope_scaling`, and a different processor file
    layout): loading may silently fall back to defaults or fail.

    ## Example
    `"transformers_version": "5.24.0"` read by transformers 4.37.2 (the LLaVA pin).

    ## How to fix
    Upgrade transformers to at least the version that saved the model, or re-save the model with the
    release you will load it with.
    """

    code = "CKP011"
    name = "saved-by-newer-transformers"
    severity = Severity.WARNING
    artifacts = frozenset({"model"})
    requires = ("CKP001",)
    packages = ("transformers",)

    def run(self, ckp_config: dict[str, Any], path: str):
        saved = ckp_config.get("transformers_version")
        if not isinstance(saved, str):
            return
        info = _installed()
        have, want = version_tuple(info.version)[:2], version_tuple(saved)[:2]
        if have and want and want > have:
            yield self.finding(f"config.json was saved by transformers {saved}; {info.version} is installed",
                               path=_config_path(path), location=Location(key="transformers_version"),
                               hint=f"pip install 'transformers>={saved}', or re-save the model with {info.version}.")
