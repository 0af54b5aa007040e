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
