"""Fixer for CKP012: write a copy of generation_config.json without the flags greedy decoding
ignores, so that `save_pretrained` (transformers >= 4.37) accepts it.

The original file is never modified: the corrected copy is written atomically as
``generation_config.fixed.json`` beside it; replace the original with it when you are satisfied.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.atomic import atomic_file
from doctor.report import FixOutcome

if TYPE_CHECKING:
    from doctor.artifacts import Artifact
    from doctor.findings import Finding
    from doctor.runner import Options

OUTPUT_NAME = "generation_config.fixed.json"


def apply(artifact: Artifact, findings: list[Finding], options: Options) -> FixOutcome:
    """Remove the flags named by the CKP012 findings; write ``generation_config.fixed.json``."""
    source = Path(artifact.path) / "generation_config.json"
    remove: set[str] = set()
    for f in findings:
        if f.fix is not None:
            remove.update(f.fix.params.get("remove", []))
            source = Path(f.fix.params.get("file", source))
    out = source.with_name(OUTPUT_NAME)
    outcome = FixOutcome(fixer="generation_config", path=artifact.path)
    original_text = source.read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(original_text)
    removed = sorted(k for k in remove if k in data)
    fixed = {k: v for k, v in data.items() if k not in remove}
    fixed_text = json.dumps(fixed, indent=2, sort_keys=False) + "\n"
    outcome.summary = f"removed {', '.join(removed) or 'nothing'} -> {out.name}"
    if options.diff:
        before = json.dumps(data, indent=2) + "\n"  # same formatting on both sides: the diff shows keys only
        outcome.diff = "".join(difflib.unified_diff(
            before.splitlines(keepends=True), fixed_text.splitlines(keepends=True),
            fromfile=str(source), tofile=str(out)))
        return outcome
    with atomic_file(out) as fh:
        fh.write(fixed_text)
    outcome.written.append(str(out))
    return outcome
