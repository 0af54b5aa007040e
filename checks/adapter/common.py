"""What the adapter family's rule modules share."""

from __future__ import annotations

from doctor.checks.adapter.reading import ADAPTER_FILES, Weights

ADAPTER = frozenset({"adapter"})


def weights_file(path: str, weights: Weights) -> str:
    return weights.file or f"{path}/{ADAPTER_FILES[0]}"
