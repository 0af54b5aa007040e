"""Where each saved LoRA tensor lands when the installed peft loads the adapter onto the base.

peft wraps the modules ``target_modules`` matches (``checks._adapter_targets``), then loads the
file with ``load_state_dict(strict=False)``: a tensor whose module was not wrapped is dropped
without an error, a wrapped module without tensors keeps its fresh (``lora_B`` = 0) init and
only ``Found missing adapter keys`` is logged. Keys saved under transformers < 4.52
(``language_model.model.layers``) are renamed by peft itself on a >= 4.52 model when the peft is
new enough (``doctor.peft_compat.converts_legacy_vlm_keys``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from doctor.checks.adapter.fixtures import AdapterTensors, Versions
from doctor.checks.adapter.reading import BaseModel, Module
from doctor.checks.adapter.targets import Resolution

from doctor import layouts, peft_compat


@dataclass
class KeyPlan:
    file_name: str
    landed: dict[str, str] = field(default_factory=dict)        # saved module -> base module
    renamed_by_peft: list[str] = field(default_factory=list)    # saved modules peft renames itself
    dropped: list[str] = field(default_factory=list)            # saved modules that land nowhere
    missing: list[str] = field(default_factory=list)            # wrapped base modules without tensors
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    rename: dict[str, str] = field(default_factory=dict)        # saved module -> base module (a fix)

    @property
    def saved_count(self) -> int:
        return len(self.landed) + len(self.dropped)


def plan_keys(tensors: AdapterTensors, base: BaseModel, targets: Resolution, versions: Versions) -> KeyPlan:
    files = {t.file for m in tensors.modules.values() for t in (m.a, m.b) if t is not None}
    plan = KeyPlan(Path(next(iter(files))).name if files else "adapter_model.safetensors")
    wrapped = set(targets.matched) if targets.mode not in ("none", "invalid") else set(base.modules)
    converts = peft_compat.converts_legacy_vlm_keys(versions.peft or "0", versions.transformers or "0")
    for saved, lora in tensors.modules.items():
        target, how = _land(saved, base, converts)
        if target is not None and target in wrapped:
            plan.landed[saved] = target
            if how == "peft":
                plan.renamed_by_peft.append(saved)
            _check_shapes(plan, lora, base.modules.get(target))
        else:
            plan.dropped.append(saved)
            alt = _alternative(saved, base)
            if alt and alt in wrapped:
                plan.rename[saved] = alt
    saved_targets = set(plan.landed.values())
    plan.missing = sorted(m for m in wrapped if m not in saved_targets and m in base.modules)
    return plan


def _alternative(saved: str, base: BaseModel) -> str | None:
    """The name ``saved`` has in the base's in-memory layout, if a known rename gives one."""
    if base.model_type in layouts.VISION_ONLY_TYPES:
        bare = saved[len("vision_model."):] if saved.startswith("vision_model.") else saved
        return next((c for c in (bare, "vision_model." + bare) if c in base.modules), None)
    return layouts.map_name(saved, base.layout, vision_prefix=base.vision_prefix)


def _land(saved: str, base: BaseModel, converts: bool) -> tuple[str | None, str]:
    if saved in base.all_modules or saved in base.modules:
        return saved, "as saved"
    found = layouts.to_canonical(saved)
    if found is None:
        return None, ""
    src, canon = found
    # Observed with peft 0.21.2 / transformers 5.24 (tests/test_adapter_targets.py): the rename
    # covers llava / llava_next names, but mllama's ``vision_model.*`` keys are left as they are.
    if canon.part == "vision" and canon.vision_style == "model":
        return None, ""
    if converts and src is layouts.HF_LEGACY and base.layout is layouts.HF_MODERN:
        return layouts.from_canonical(canon, base.layout, base.vision_prefix), "peft"
    return None, ""


def _check_shapes(plan: KeyPlan, lora: object, module: Module | None) -> None:
    if module is None or module.in_features is None or module.out_features is None:
        return
    a, b = getattr(lora, "a", None), getattr(lora, "b", None)
    if module.kind == "linear":
        want_a_in, want_b_out = module.in_features, module.out_features
    elif module.kind == "embedding":  # peft: lora_embedding_A [r, num_embeddings], B [dim, r]
        want_a_in, want_b_out = module.out_features, module.in_features
    else:
        return
    if a is not None and len(a.shape) == 2 and a.shape[1] != want_a_in:
        plan.shape_mismatches.append((a.name, a.shape, (a.shape[0], want_a_in)))
    if b is not None and len(b.shape) == 2 and b.shape[0] != want_b_out:
        plan.shape_mismatches.append((b.name, b.shape, (want_b_out, b.shape[1])))
