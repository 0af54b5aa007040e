"""Fixer for SEC009: convert pickled weights (``pytorch_model*.bin``, ``adapter_model.bin``, or a
single weights file) to safetensors. A SAFE fix: the tensors are read only after a clean static
scan (``doctor.io.pickle_scan.safe_load``: scan, then ``torch.load(weights_only=True)``), and the
output is NEW files; the input is never modified.

- a folder becomes ``<folder>-safetensors/`` (or ``output=PATH`` through the Python API: ``doctor.check(..., fix=True, output=PATH)``): the converted weights
  (``pytorch_model.bin`` -> ``model.safetensors``, ``pytorch_model-00001-of-00002.bin`` ->
  ``model-00001-of-00002.safetensors`` with ``model.safetensors.index.json``,
  ``adapter_model.bin`` -> ``adapter_model.safetensors``) and every other file copied (never hard-linked);
- a single file ``X.bin`` becomes ``X.safetensors`` beside it (refused if that exists).

Tensors sharing storage (tied embeddings) are stored once, as safetensors' ``save_model`` does;
the name dropped is the output side (``lm_head.weight``) so transformers re-ties it on load, and
``__metadata__`` records ``{dropped: kept}`` plus ``{"format": "pt"}`` (transformers requires it).
One shard is in memory at a time.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.atomic import atomic_dir, atomic_file, copy_item
from doctor.errors import ArtifactError, UsageError
from doctor.report import FixOutcome

if TYPE_CHECKING:
    from doctor.artifacts import Artifact
    from doctor.findings import Finding
    from doctor.runner import Options

_SHARD = re.compile(r"^(?P<stem>pytorch_model|adapter_model)(?P<part>-\d+-of-\d+)?\.bin$")
_NEW_STEM = {"pytorch_model": "model", "adapter_model": "adapter_model"}


def apply(artifact: Artifact, findings: list[Finding], options: Options) -> FixOutcome:
    """Write safetensors copies of the pickled weights the findings name."""
    extra = getattr(options, "extra", {}) or {}
    files = sorted({str(f.fix.params["file"]) for f in findings if f.fix and f.fix.params.get("file")})
    outcome = FixOutcome(fixer="safetensors", path=artifact.path)
    src = Path(artifact.path)
    if not files:
        return outcome
    if src.is_file():
        out = Path(extra.get("output") or src.with_suffix(".safetensors"))
        outcome.summary = f"{src.name} -> {out}"
        if options.diff:
            outcome.diff = f"write {out} (from {src})\n"
            return outcome
        if out.exists() and not extra.get("force"):
            raise UsageError(f"{out} already exists: move it away first (or pass output=PATH to doctor.check)")
        _convert_file(src, out)  # written to a hidden sibling, renamed into place when complete
        outcome.written.append(str(out))
        return outcome
    out = Path(extra.get("output") or f"{str(src).rstrip('/')}-safetensors")
    plan = _plan(src, [Path(p) for p in files])
    indexes = {src / f"{stem}.bin.index.json" for stem in {_SHARD.match(p.name)["stem"] for p in plan}}  # type: ignore[index]
    outcome.summary = ", ".join(f"{p.name} -> {n}" for p, n in plan.items()) + f" in {out}"
    if options.diff:
        outcome.diff = "".join(f"write {out / n} (from {p})\n" for p, n in plan.items())
        return outcome
    with atomic_dir(out, force=bool(extra.get("force"))) as tmp:
        dropped: dict[str, str] = {}
        sizes: dict[str, int] = {}
        for path, name in plan.items():
            d, total = _convert_file(path, tmp / name)
            dropped.update(d)
            sizes[name] = total
        for index in indexes:
            if index.is_file():
                _write_index(index, tmp, plan, dropped, sizes)
        for item in src.iterdir():
            if item in plan or item in indexes or (tmp / item.name).exists():
                continue
            copy_item(item, tmp / item.name)
    outcome.written.append(str(out))
    return outcome


def _plan(src: Path, files: list[Path]) -> dict[Path, str]:
    """bin file -> new safetensors name; every shard of a sharded set must be included."""
    plan: dict[Path, str] = {}
    for path in files:
        m = _SHARD.match(path.name)
        if m is None or path.parent != src:
            raise UsageError(f"{path}: not a transformers/peft weights file this fixer converts")
        new_stem = _NEW_STEM[m["stem"]]
        if (src / f"{new_stem}.safetensors").exists() or (src / f"{new_stem}.safetensors.index.json").exists():
            raise UsageError(f"{src} already has {new_stem}.safetensors: delete {path.name} instead of converting it")
        plan[path] = f"{new_stem}{m['part'] or ''}.safetensors"
    for stem in {_SHARD.match(p.name)["stem"] for p in plan}:  # type: ignore[index]
        missing = sorted(p.name for p in src.glob(f"{stem}-*-of-*.bin") if p not in plan)
        if missing:
            raise ArtifactError(f"{src}: shards {', '.join(missing)} did not pass the security scan; "
                                "converting only some shards would leave a broken model")
    return plan


def _convert_file(path: Path, out: Path) -> tuple[dict[str, str], int]:
    """Scan, load with weights_only, untie shared storage, write. Returns (dropped, bytes)."""
    from safetensors.torch import save_file

    from doctor.io.pickle_scan import safe_load

    state = safe_load(path)
    if not state:
        raise ArtifactError(f"{path}: no tensors found at the top level of the pickle")
    state, dropped = _untie(state)
    metadata = {"format": "pt", **dropped}
    tmp = out.with_name(f".{out.name}.partial")
    try:
        save_file(state, str(tmp), metadata=metadata)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return dropped, sum(t.numel() * t.element_size() for t in state.values())


def _untie(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Keep one name per shared storage (a name covering all of it, preferring the input side
    of tied embeddings); copies for partial views; everything contiguous."""
    groups: dict[tuple[Any, int], list[str]] = {}
    for name, t in state.items():
        if t.numel():
            groups.setdefault((t.device, t.untyped_storage().data_ptr()), []).append(name)
    out = dict(state)
    dropped: dict[str, str] = {}
    for names in groups.values():
        if len(names) < 2:
            continue
        complete = [n for n in names if _covers_storage(state[n])]
        if not complete:
            for n in names:
                out[n] = state[n].clone()
            continue
        keep = sorted(complete, key=lambda n: ("lm_head" in n or "output" in n.split(".")[-2:], n))[0]
        for n in names:
            if n == keep:
                continue
            if n in complete and state[n].shape == state[keep].shape and state[n].stride() == state[keep].stride():
                del out[n]
                dropped[n] = keep
            else:
                out[n] = state[n].clone()
    return {k: v.contiguous() for k, v in out.items()}, dropped


def _covers_storage(t: Any) -> bool:
    storage = t.untyped_storage()
    return t.data_ptr() == storage.data_ptr() and t.numel() * t.element_size() == storage.nbytes()


def _write_index(index: Path, tmp: Path, plan: dict[Path, str], dropped: dict[str, str], sizes: dict[str, int]) -> None:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{index}: unreadable index: {e}") from None
    by_old = {p.name: n for p, n in plan.items()}
    weight_map = {k: by_old.get(v, v) for k, v in (data.get("weight_map") or {}).items() if k not in dropped}
    stem = _NEW_STEM[_SHARD.match(next(iter(plan)).name)["stem"]]  # type: ignore[index]
    new = {"metadata": {**(data.get("metadata") or {}), "total_size": sum(sizes.values())},
           "weight_map": dict(sorted(weight_map.items()))}
    with atomic_file(tmp / f"{stem}.safetensors.index.json") as f:
        f.write(json.dumps(new, indent=2) + "\n")


