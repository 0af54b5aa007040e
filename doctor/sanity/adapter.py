"""Stage 5: base + adapter (peft) and the merged model give the same logits, within tolerance.

Two ways, by the plan: with an adapter applied in stage 1, the peft model's logits are compared
with those of its in-memory ``merge_and_unload(safe_merge=True)``; with MODEL a merged output
(``--adapter`` and ``--base``), base + adapter is loaded through peft and compared with MODEL.
Merging and the unmerged LoRA path round differently, so they agree closely but not bitwise
(peft#1388): the tolerance is per dtype.
"""

from __future__ import annotations

from typing import Any

from doctor.findings import Severity
from doctor.sanity.load import apply_adapter, load_model
from doctor.sanity.memory import release
from doctor.sanity.quiet import quiet
from doctor.sanity.results import StageResult
from doctor.sanity.stages import Session

# max |logit difference| / max |logit|, over every position of the stage-2 prompt
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 5e-2}


def adapter_vs_merged(s: Session, stage: StageResult) -> None:
    if s.plan.compare is not None:
        _against_merged_output(s, stage)
    else:
        _against_memory_merge(s, stage)


def _logits(model: Any, inputs: dict[str, Any]) -> Any:
    import torch

    with torch.no_grad(), quiet():
        return model(**inputs).logits[0].float().cpu()


def _against_memory_merge(s: Session, stage: StageResult) -> None:
    peft_model = s.loaded.model
    adapted = s.all_logits if s.all_logits is not None else _logits(s.model, s.inputs)
    with peft_model.disable_adapter():
        base = _logits(peft_model.get_base_model(), s.inputs)
    effect = _relative(adapted, base)
    stage.metrics["adapter_effect"] = effect
    if effect == 0.0:
        stage.add(f"the adapter {s.plan.adapter} changes nothing: base and base + adapter give identical logits",
                  path=s.path, severity=Severity.WARNING,
                  hint="Every lora_B is zero (peft's initialisation): the adapter was never trained or saved "
                       "before the first step.")
    try:
        with quiet():
            merged = peft_model.merge_and_unload(safe_merge=True)
    except ValueError as e:  # peft's safe merge: "NaNs detected in the merged weights"
        stage.add(f"merging {s.plan.adapter} failed: {e}", path=s.path,
                  hint="The adapter holds NaN/inf tensors (a diverged run): retrain or use an earlier checkpoint.")
        return
    s.loaded.model, s.loaded.is_peft = merged, False
    _compare(s, stage, adapted, _logits(merged, s.inputs), "the in-memory merge (peft merge_and_unload)")


def _against_merged_output(s: Session, stage: StageResult) -> None:
    assert s.plan.compare is not None
    base_dir, adapter = s.plan.compare
    merged = s.all_logits if s.all_logits is not None else _logits(s.model, s.inputs)
    # Free the merged model before loading base + adapter: only its logits are needed now.
    s.loaded.model = None
    release()
    base = load_model(base_dir, s.plan, stage)
    if base is None:
        return
    peft_model = apply_adapter(base, adapter, stage)
    if peft_model is None:
        return
    try:
        adapted = _logits(peft_model.get_base_model(), s.inputs)
    finally:
        del peft_model, base
        release()
    _compare(s, stage, adapted, merged, f"the merged model {s.plan.model}")


def _relative(a: Any, b: Any) -> float:
    import torch

    if a.shape != b.shape:
        return float("inf")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("nan")
    return float((a - b).abs().max()) / max(float(a.abs().max()), 1e-6)


def _compare(s: Session, stage: StageResult, adapted: Any, merged: Any, what: str) -> None:
    tol = TOLERANCE[s.plan.dtype]
    rel = _relative(adapted, merged)
    agree = float((adapted.argmax(-1) == merged.argmax(-1)).float().mean()) if adapted.shape == merged.shape else 0.0
    stage.metrics.update({"relative_difference": rel, "tolerance": tol, "top1_agreement": agree})
    stage.detail = f"relative max |Δlogit| {rel:.3g} (tol {tol:g}), top-1 agreement {agree:.0%}"
    adapter = s.plan.adapter or (s.plan.compare[1] if s.plan.compare else "?")
    if adapted.shape != merged.shape:
        stage.add(f"base + adapter and {what} give logits of different shapes ({tuple(adapted.shape)} vs "
                  f"{tuple(merged.shape)})", path=s.path,
                  hint="The merged model has another vocabulary size than base + adapter: merge again from this base.")
    elif rel != rel:  # NaN
        stage.add(f"base + adapter or {what} gives NaN/inf logits", path=s.path,
                  hint="The adapter or the merged weights hold NaN/inf tensors: retrain or re-merge.")
    elif rel > tol:
        stage.add(f"base + {adapter} and {what} disagree: relative max |Δlogit| {rel:.3g} > {tol:g}, "
                  f"top-1 token agrees at {agree:.0%} of positions", path=s.path,
                  hint="The merge did not fold the LoRA that peft applies: check that the merge used this base, "
                       "the adapter's scale (alpha/r, rslora) and that no adapter tensor was dropped (key layout).")
