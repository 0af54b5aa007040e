"""Fixer for ADP006 / ADP007 / ADP008 / ADP009 / ADP012 / ADP016 / ADP017: write a COPY of the adapter
folder (``<adapter>.fixed/``, or ``output=PATH`` through the Python API) with a repaired adapter_config.json and,
where module names must change, renamed tensor keys. The input folder is never modified; weights
that do not change are copied (never hard-linked: the input must stay out of reach).

Params it understands (merged over all findings of one adapter):

- ``drop_keys``: config keys to remove. A key is removed only when it holds LoraConfig's default
  (or only records who wrote the file, like ``peft_version``); anything else is refused with the
  reason, e.g. ``use_dora: true`` (an older peft would load a DoRA adapter as plain LoRA).
- ``set``: config keys to set (``target_modules`` renamed for the base's layout, ``r``, and
  ``base_model_name_or_path``: a recorded local path that does not exist, replaced by the ``--base``
  the checks used, so that ``AutoPeftModel.from_pretrained(adapter)`` finds its base).
- ``rename_modules``: ``{saved module: new module}``: tensor keys are renamed in the copy.
"""

from __future__ import annotations

import difflib
import json
import shutil
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor import peft_compat
from doctor.atomic import atomic_dir, copy_item
from doctor.report import FixOutcome

if TYPE_CHECKING:
    from doctor.artifacts import Artifact
    from doctor.findings import Finding
    from doctor.runner import Options

CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."


def apply(artifact: Artifact, findings: list[Finding], options: Options) -> FixOutcome:
    """Write ``<adapter>.fixed/`` with the repairs the findings ask for."""
    src = Path(artifact.path)
    extra = getattr(options, "extra", {}) or {}
    out = Path(extra.get("output") or f"{str(src).rstrip('/')}.fixed")
    outcome = FixOutcome(fixer="adapter_config", path=artifact.path)
    drop: set[str] = set()
    sets: dict[str, Any] = {}
    rename: dict[str, str] = {}
    for f in findings:
        params = f.fix.params if f.fix else {}
        drop.update(params.get("drop_keys", []))
        sets.update(params.get("set", {}))
        rename.update(params.get("rename_modules", {}))
    original_text = (src / CONFIG).read_text(encoding="utf-8")
    config = json.loads(original_text)
    refused = [c for c in peft_compat.check_keys({k: config[k] for k in drop if k in config}, set()) if not c.droppable]
    if refused:
        outcome.error = "refusing to drop " + "; ".join(c.reason or c.key for c in refused) + \
            ". Upgrade peft on the machine that loads the adapter instead."
        return outcome
    fixed = {k: v for k, v in config.items() if k not in drop}
    fixed.update(sets)
    fixed_text = json.dumps(fixed, indent=2, sort_keys=True) + "\n"
    changes = [f"dropped {', '.join(sorted(k for k in drop if k in config))}" if drop & set(config) else "",
               f"set {', '.join(sorted(sets))}" if sets else "",
               f"renamed {len(rename)} module(s) in the weights" if rename else ""]
    outcome.summary = "; ".join(c for c in changes if c) + f" -> {out}"
    if options.diff:
        diff = difflib.unified_diff(original_text.splitlines(keepends=True), fixed_text.splitlines(keepends=True),
                                    fromfile=str(src / CONFIG), tofile=str(out / CONFIG))
        outcome.diff = "".join(diff) + "".join(f"rename {a} -> {b}\n" for a, b in sorted(rename.items()))
        return outcome
    with atomic_dir(out, force=bool(extra.get("force"))) as tmp:
        for item in src.iterdir():
            if item.name == CONFIG or (rename and item.name.startswith("adapter_model.")):
                continue
            copy_item(item, tmp / item.name)
        (tmp / CONFIG).write_text(fixed_text, encoding="utf-8")
        if rename:
            _write_renamed_weights(src, tmp, rename)
    outcome.written.append(str(out))
    return outcome


def rename_key(key: str, rename: dict[str, str]) -> str:
    """Rename the module part of one adapter tensor key (the PEFT prefix is kept)."""
    prefix = PEFT_PREFIX if key.startswith(PEFT_PREFIX) else ""
    body = key[len(prefix):]
    for old in sorted(rename, key=len, reverse=True):
        if body.startswith(old + "."):
            return prefix + rename[old] + body[len(old):]
    return key


def _write_renamed_weights(src: Path, dst: Path, rename: dict[str, str]) -> None:
    st = src / "adapter_model.safetensors"
    if st.is_file():
        _rename_safetensors(st, dst / st.name, rename)
        return
    import torch

    from doctor.io.pickle_scan import safe_load  # scans before torch.load(weights_only=True)

    state = safe_load(src / "adapter_model.bin")
    torch.save({rename_key(k, rename): v for k, v in state.items()}, dst / "adapter_model.bin")


def _rename_safetensors(src: Path, dst: Path, rename: dict[str, str]) -> None:
    """Rewrite the header with new names; the tensor bytes are copied unchanged."""
    with src.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        new = {("__metadata__" if k == "__metadata__" else rename_key(k, rename)): v for k, v in header.items()}
        blob = json.dumps(new, separators=(",", ":")).encode("utf-8")
        blob += b" " * (-len(blob) % 8)  # keep the data 8-byte aligned, as safetensors writes it
        with dst.open("wb") as out:
            out.write(struct.pack("<Q", len(blob)))
            out.write(blob)
            shutil.copyfileobj(f, out, 16 << 20)
