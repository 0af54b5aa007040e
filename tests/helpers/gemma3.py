"""Helpers of the Gemma 3 tests (tests/gemma3/): the family runners of ``tests.helpers.qwen``, and
a forward pass that shows a planted failure is real with the installed transformers."""

from __future__ import annotations

from typing import Any

from tests.helpers.qwen import codes, fails, passes, run


def forward_error(info: Any, image_shape: tuple[int, int] = (56, 84)) -> str | None:
    """Load the folder with transformers and run one chat turn with one image; the error text, or None."""
    import torch
    import transformers

    from doctor.testing.gemma3 import gemma3_inputs
    from doctor.testing.torch_context import single_thread

    try:
        with single_thread():
            model = transformers.AutoModelForImageTextToText.from_pretrained(info.path)
            inputs = gemma3_inputs(info, image_shape)
            with torch.no_grad():
                model(**inputs)
    except Exception as e:  # noqa: BLE001 - any failure is the evidence
        return f"{type(e).__name__}: {e}"
    return None


__all__ = ["codes", "fails", "forward_error", "passes", "run"]
