"""Torch context for the builders: seeded without touching the caller's RNG, single-threaded.

Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP workers
spinning against other processes make a 32x64 matmul 100x slower; both settings are restored.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread inside the block, then restore the previous count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """``torch.manual_seed(seed)`` inside the block only (CPU RNG forked), on one thread."""
    import torch

    with torch.random.fork_rng(devices=[]), single_thread():
        torch.manual_seed(seed)
        yield
