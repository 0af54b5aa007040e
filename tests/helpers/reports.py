"""Reports compared across engines and paths: the JSON findings without what measures the run."""

from __future__ import annotations

import re

# The numbers in the summaries that measure this run, not the data.
TIMING = re.compile(r"read in [\d.]+ s \([\d,]+ records/s\)")


def comparable(report, replace: tuple[str, str] | None = None) -> list[dict]:
    """``report``'s findings as JSON dicts, timings masked; ``replace`` = (old, new) rewrites a
    dataset's name in every string (a URL's report against the local path's)."""
    out = []
    for f in report.to_dict("test")["findings"]:
        f = dict(f)
        f["message"] = TIMING.sub("read in <t>", f["message"])
        if replace:
            f = _replace(f, *replace)
        out.append(f)
    return out


def _replace(value, old: str, new: str):
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: _replace(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, old, new) for v in value]
    return value
