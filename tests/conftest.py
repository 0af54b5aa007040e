"""Shared test setup: nothing may reach a model hub, and tests never need a GPU."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models on a busy 2-core machine: one BLAS thread is far faster than two fighting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Learned checkpoint templates go to a throwaway folder, never the user's cache.
os.environ.setdefault("VLM_DOCTOR_CACHE", tempfile.mkdtemp(prefix="vlm-doctor-test-cache-"))


# The ML stack (pip install ".[ml]"): without it, test modules that build or load models are not
# collected (the light core's tests still run). One rule here instead of an import-skip per module.
ML_PACKAGES = ("torch", "transformers", "peft")
ML_MARKERS = ("import torch", "from torch", "transformers", "peft", "make_llava_model", "make_qwen_model",
              "make_text_model", "make_lora_adapter", "make_llava_original", "make_xtuner_release",
              "make_clip_vision_tower", "safetensors.torch", "doctor.demo",
              "helpers.pickle_corpus", "helpers.convert", "helpers.sanity", "helpers.qwen")
_ml_missing: list[str] | None = None


def _missing_ml() -> list[str]:
    global _ml_missing
    if _ml_missing is None:
        import importlib.util

        _ml_missing = [p for p in ML_PACKAGES if importlib.util.find_spec(p) is None]
    return _ml_missing


def pytest_ignore_collect(collection_path, config):
    """Skip collecting a test module that needs the ML stack when it is not installed."""
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test_") or not _missing_ml():
        return None
    try:
        text = collection_path.read_text()
    except OSError:
        return None
    return True if any(marker in text for marker in ML_MARKERS) else None


def pytest_report_header(config):
    missing = _missing_ml()
    return f"ML stack missing ({', '.join(missing)}): model tests not collected" if missing else None


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run only where a CUDA GPU is usable."""
    import pytest

    cuda_items = [item for item in items if item.get_closest_marker("cuda")]
    if not cuda_items:
        return
    try:
        import torch

        usable = torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no torch means no GPU
        usable = False
    if not usable:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in cuda_items:
            item.add_marker(skip)
