"""The shared test factory: tiny, REAL artifacts for vlm-doctor's tests.

Everything is built locally with seeded random weights (never downloaded), fast enough to
build per test (no global cache), and loadable offline by transformers / peft.

========================  =================================================================
module                    builds
========================  =================================================================
``images``                image files: healthy, truncated JPEG, decompression bomb, lying
                          extension, not-an-image (Pillow only)
``datasets``              LLaVA and messages datasets with named planted defects (Pillow only)
``tokenizer``             a Llama-style tokenizer folder (``tokenizers`` only)
``models``                llava / llava_next / mllama models, text LLMs, CLIP towers
``adapters``              PEFT LoRA adapters; original-LLaVA LoRA and merged layouts
``xtuner``                an XTuner LLaVA release (llm_adapter/, visual_encoder_adapter/,
                          projector/)
========================  =================================================================

Names are re-exported lazily: ``import doctor.testing`` imports nothing heavy, and
``from doctor.testing import make_image`` imports only Pillow.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "make_image": "images", "pil_image": "images", "make_truncated_jpeg": "images",
    "make_decompression_bomb_png": "images", "make_lying_extension": "images",
    "make_not_an_image": "images",
    "make_llava_dataset": "datasets", "make_messages_dataset": "datasets", "planted_records": "datasets",
    "LLAVA_PROBLEMS": "datasets", "MESSAGES_PROBLEMS": "datasets",
    "make_tokenizer": "tokenizer", "TokenizerInfo": "tokenizer",
    "make_llava_model": "models", "make_text_model": "models", "make_clip_vision_tower": "models",
    "tiny_inputs": "models", "ModelInfo": "models",
    "make_lora_adapter": "adapters", "VLM_LANGUAGE_TARGETS": "adapters",
    "make_llava_original_lora": "original", "make_llava_original_model": "original",
    "LlavaOriginalInfo": "original", "projector_state": "original",
    "make_xtuner_release": "xtuner", "XTunerInfo": "xtuner",
    "single_thread": "torch_context", "DELETE": "weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'doctor.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"doctor.testing.{module}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
