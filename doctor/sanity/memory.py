"""Time and peak memory of a stage, and how much memory a model needs before it is loaded.

GPU memory is ``torch.cuda.max_memory_allocated`` (reset at the start of each stage). On the CPU it
is the process's peak resident set: Linux lets a process reset its own high-water mark by writing
``5`` to ``/proc/self/clear_refs``, so ``VmHWM`` becomes a per-stage peak; elsewhere the
lifetime peak from ``getrusage`` is reported.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doctor.sanity.results import StageResult

# Bytes per parameter by the dtype we load in; 4-bit nf4 packs two values per byte plus
# one absmax per 64-block (and the non-Linear parts stay in the compute dtype).
BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "nf4": 0.5 + 4 / 64}


@contextlib.contextmanager
def measure(stage: StageResult, device: str) -> Iterator[StageResult]:
    """Fill ``stage.seconds`` and ``stage.peak_memory_bytes`` around the block."""
    cuda = device.startswith("cuda")
    stage.memory_kind = "cuda" if cuda else "rss"
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        _reset_rss_peak()
    started = time.perf_counter()
    try:
        yield stage
    finally:
        if cuda:
            import torch

            with contextlib.suppress(Exception):
                torch.cuda.synchronize()
            stage.peak_memory_bytes = int(torch.cuda.max_memory_allocated())
        else:
            stage.peak_memory_bytes = rss_peak()
        stage.seconds = time.perf_counter() - started


def _reset_rss_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def rss_peak() -> int | None:
    """Peak resident set of this process in bytes (since the last reset where supported)."""
    try:
        m = re.search(r"VmHWM:\s+(\d+)\s*kB", Path("/proc/self/status").read_text())
        if m:
            return int(m.group(1)) * 1024
    except OSError:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except (ImportError, OSError):
        return None


def parameter_count(folder: str) -> int | None:
    """Parameters stored in a model folder's safetensors files, from the headers only."""
    try:
        from doctor.io.safetensors_header import read_folder_tensors

        tensors = read_folder_tensors(folder, stem="model").tensors
    except Exception:  # noqa: BLE001 - an estimate only; the load reports the real problem
        return None
    if not tensors:
        return None
    return sum(t.numel for t in tensors.values())


def estimate_bytes(folder: str, dtype: str, quantization: str | None) -> int | None:
    """What the weights will take once loaded (parameters only; activations come on top)."""
    n = parameter_count(folder)
    if n is None:
        return None
    per = BYTES_PER_PARAM["nf4" if quantization == "4bit" else "int8" if quantization == "8bit" else dtype]
    return int(n * per)


def free_memory(device: str) -> int | None:
    """Free bytes on the device: ``torch.cuda.mem_get_info`` on CUDA, MemAvailable on the CPU."""
    if device.startswith("cuda"):
        try:
            import torch

            return int(torch.cuda.mem_get_info()[0])
        except Exception:  # noqa: BLE001
            return None
    try:
        m = re.search(r"MemAvailable:\s+(\d+)\s*kB", Path("/proc/meminfo").read_text())
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None


def is_oom(exc: BaseException) -> bool:
    """True for CUDA out-of-memory (any torch version) and CPU allocation failures."""
    name = type(exc).__name__
    text = str(exc).lower()
    return name in ("OutOfMemoryError", "MemoryError") or "out of memory" in text or (
        "defaultcpuallocator" in text and "not enough memory" in text
    )


def gib(n: float | None) -> str:
    if n is None:
        return "?"
    if n < 2**20:
        return f"{n / 1024:.0f} KiB"
    if n < 2**30:
        return f"{n / 2**20:.1f} MiB"
    return f"{n / 2**30:.2f} GiB"


def release(*objs: Any, collect: bool = True) -> None:
    """Drop references and give cached GPU memory back. ``collect=False`` skips the full garbage
    collection (0.1-0.7 s with torch and transformers imported): models hold no reference cycles,
    so reference counting frees them as soon as the last name goes."""
    del objs
    import gc

    if collect:
        gc.collect()
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
