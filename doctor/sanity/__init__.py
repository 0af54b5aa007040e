"""The inference sanity pass: load the model, show it an image, let it answer.

``run_sanity(model, ...) -> SanityResult`` runs six stages (load, forward, generate, the image
matters, adapter vs merged, probe), each reported as pass / warn / fail / skip with its time and
peak memory. ``docs/sanity.md`` describes the criteria. Importing this package is light: torch
and transformers are imported only when a pass runs.
"""

from __future__ import annotations

from typing import Any

from doctor.sanity.results import STAGES, SanityResult, StageInfo, StageResult


def run_sanity(model: str, **kwargs: Any) -> SanityResult:
    """See ``doctor.sanity.core.run_sanity``."""
    from doctor.sanity.core import run_sanity as _run

    return _run(model, **kwargs)


__all__ = ["run_sanity", "SanityResult", "StageResult", "StageInfo", "STAGES"]
