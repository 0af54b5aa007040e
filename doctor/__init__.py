"""vlm-doctor: a linter and doctor for LoRA fine-tuning of LLaVA-style vision-language models.

Python API for pre-training checks inside a training script::

    import doctor
    report = doctor.check(["data/llava_mix.json", "out/llava-lora"], base="models/vicuna-7b")
    report.raise_for_errors()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from doctor.report import Report


def check(paths: Any, **kwargs: Any) -> Report:
    """Run the checks on ``paths`` (a path or a list of paths); see ``doctor.runner.check``."""
    from doctor.runner import check as _check

    return _check(paths, **kwargs)


__all__ = ["check", "__version__"]
