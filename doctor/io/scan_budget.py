"""How many weight bytes vlm-doctor reads by default to scan tensor values (NaN, Inf, all-zero).

One place for both value scans: checkpoints (CKP301-303) and adapters (ADP019/020). Weights up to
``FULL_SCAN_BYTES`` are scanned without ``--deep``, because that costs about a second on a small
machine; above it the scan needs ``--deep`` and a finding says what it would cost. The numbers come
from ``benchmarks/values_bench.py`` (2-core VM, page cache warm): rerun it and update both.
Importing this module is free (no numpy).
"""

from __future__ import annotations

#: measured throughput of ``doctor.io.deep_scan`` over warm safetensors data (benchmarks/values_bench.py)
BYTES_PER_SECOND = 1_000_000_000
#: weights up to this many bytes are value-scanned by default: about one second at BYTES_PER_SECOND
FULL_SCAN_BYTES = 1_000_000_000


def estimate_seconds(nbytes: int) -> float:
    """Seconds the value scan of ``nbytes`` takes here, from the measured throughput (warm cache;
    a cold disk is slower, bounded by its read speed)."""
    return nbytes / BYTES_PER_SECOND


def describe_cost(nbytes: int) -> str:
    """``'14.0 GB, about 14 s'``: what ``--deep`` would read and roughly how long it takes."""
    secs = estimate_seconds(nbytes)
    when = f"about {secs:.0f} s" if secs >= 1.5 else "about a second"
    return f"{nbytes / 1e9:.1f} GB ({nbytes:,} bytes), {when}"
