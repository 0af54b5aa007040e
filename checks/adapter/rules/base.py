"""ADP checks that need the base model: which modules `target_modules` adapts, whether the
saved tensors land on them, and whether the base is the one the adapter was trained on. The base
is read from tensor headers only (``checks._adapter_io.load_base``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from doctor.checks.adapter.fixtures import AdapterTensors, Versions
from doctor.checks.adapter.keys import KeyPlan, plan_keys
from doctor.checks.adapter.reading import BaseModel, resolve_base
from doctor.checks.adapter.targets import (
    Resolution,
    language_only_regex,
    language_regex_from,
    parts_of,
    renamed_entries,
)

from doctor.findings import Applicability, Fix, Location, Severity
from doctor.registry import Check, fixture, register

ADAPTER = frozenset({"adapter"})


def _cfg(path: str) -> str:
    return f"{path}/adapter_config.json"


@fixture
def adapter_key_plan(adapter_tensors: AdapterTensors, adapter_base: BaseModel, adapter_targets: Resolution,
                     versions: Versions) -> KeyPlan:
    return plan_keys(adapter_tensors, adapter_base, adapter_targets, versions)


@register
class BaseModelUnresolved(Check):
    """The adapter's base model cannot be found locally, or is recorded as a local path that does not exist.

    ## What it does
    Looks for `base_model_name_or_path` as a folder, then in the local Hugging Face cache
    (`HF_HUB_CACHE`, `HF_HOME/hub`, `~/.cache/huggingface/hub`). With `--base`, the checks use
    that folder, and this check still reports a recorded base that is a local path (absolute, or
    starting with `./`, `../`, `~`) which does not exist, offering to record the `--base` used.

    ## Why is this bad?
    `AutoPeftModel.from_pretrained(adapter)` (and `PeftModel` users who pass the recorded name on)
    loads `base_model_name_or_path` as it is: a local path that does not exist on this machine
    raises `OSError` / `HFValidationError`, and offline a hub id that is not cached cannot load.
    A warning, not an error: `PeftModel.from_pretrained(base_model, adapter)` with the base loaded
    by hand works, and that is how most people load it. Without a base, the checks that compare the
    adapter with it (target modules, shapes, hidden size) cannot run.

    ## Example
    `"base_model_name_or_path": "/data/ckpt/vicuna-7b-v1.5"` on a machine without that folder.

    ## How to fix
    Pass the base folder with `--base PATH` (for LLaVA: what `--model-base` must be); with `--base`,
    `--fix` writes a copy of the adapter whose config records that folder (or write the base's hub id
    there by hand).
    """

    code = "ADP012"
    name = "base-model-unresolved"
    severity = Severity.WARNING
    artifacts = ADAPTER
    requires = ("ADP001",)

    def run(self, adapter_config: dict[str, Any], options: Any, path: str):
        name = adapter_config.get("base_model_name_or_path")
        base = getattr(options, "base", None)
        loc = Location(key="base_model_name_or_path")
        if base:
            if _missing_local_path(name, path):
                target = str(Path(base).expanduser().resolve())
                yield self.finding(
                    f"base_model_name_or_path {name!r} is a local path that does not exist here: "
                    f"AutoPeftModel.from_pretrained on the adapter alone fails (the checks used --base {base})",
                    path=_cfg(path), location=loc,
                    hint=f"Record the base that works here: base_model_name_or_path = {target!r} (the fix does), "
                         "or its hub id.",
                    fix=Fix(f"record base_model_name_or_path = {target!r} (the --base used)", Applicability.SAFE,
                            fixer="adapter_config", params={"set": {"base_model_name_or_path": target}}))
            return
        if not name:
            yield self.finding("base_model_name_or_path is empty: nothing records which base this adapter needs",
                               path=_cfg(path), location=loc,
                               hint="Record the base's hub id or path in base_model_name_or_path, and pass --base.")
        elif resolve_base(name, relative_to=path) is None:
            yield self.finding(f"base model {name!r} is neither a local folder nor in the Hugging Face cache; "
                               "the checks against the base were skipped", path=_cfg(path), location=loc,
                               hint=f"Pass --base /path/to/{str(name).rstrip('/').rsplit('/', 1)[-1]}.")


def _missing_local_path(name: Any, adapter: str) -> bool:
    """A recorded base written as a local path (not a hub id) that resolves to no model folder."""
    if not isinstance(name, str) or not name.strip():
        return False
    local = Path(name).is_absolute() or name.startswith(("./", "../", "~", ".\\", "..\\")) or "\\" in name
    return local and resolve_base(name, relative_to=adapter) is None


@register
class TargetModulesNotFound(Check):
    """`target_modules` matches no module of the base model (or matches a container).

    ## What it does
    Replays peft's matching (a list: exact name or `.name` suffix; a string: `re.fullmatch`;
    `all-linear`) over the base's module names read from its tensor headers, in the module
    layout the installed transformers builds.

    ## Why is this bad?
    `PeftModel.from_pretrained` raises `ValueError: Target modules {...} not found in the base
    model`; matching a container such as `self_attn` raises `Target module ... is not supported`.

    ## Example
    `["model.layers.0.self_attn.q_proj"]` (original LLaVA names) on an HF `llava` base whose
    modules are `model.language_model.layers.0.self_attn.q_proj`.

    ## How to fix
    Use leaf names (`["q_proj", "v_proj"]`) or the base's own module names.
    """

    code = "ADP008"
    name = "target-modules-not-found"
    artifacts = ADAPTER
    requires = ("ADP001",)

    def run(self, adapter_targets: Resolution, adapter_base: BaseModel, lora_config: dict[str, Any], path: str):
        res, targets = adapter_targets, lora_config.get("target_modules")
        loc = Location(key="target_modules")
        if res.error:
            yield self.finding(res.error, path=_cfg(path), location=loc)
            return
        if res.mode != "none" and not res.matched:
            renames = renamed_entries(targets, adapter_base) if isinstance(targets, list) else {}
            fix = _rename_fix(targets, renames) if renames and len(renames) == len(targets) else None
            yield self.finding(
                f"target_modules {targets!r} matches no module of the base ({adapter_base.folder}, "
                f"{adapter_base.layout.title}); peft raises 'Target modules ... not found in the base model'",
                path=_cfg(path), location=loc, fix=fix,
                hint=(f"Rename to the base's layout: {renames}." if fix else
                      f"Use leaf names such as {_example_leaves(adapter_base)}."))
        if res.unsupported:
            yield self.finding(f"target_modules matches {len(res.unsupported)} module(s) that are not Linear, "
                               f"Embedding or Conv layers, e.g. {res.unsupported[0]!r}; peft raises 'Target module "
                               "... is not supported'", path=_cfg(path), location=loc,
                               hint="Name the projection layers (q_proj, v_proj, ...), not their containers.")


@register
class TargetModulesStale(Check):
    """Some `target_modules` entries match nothing while others match: part of the LoRA is lost.

    ## What it does
    Counts, per listed entry, the base modules it matches, and reports entries that match none,
    recognising the transformers 4.x vs >= 4.52 / 5.x layout rename
    (`language_model.model.layers` vs `model.language_model.layers`) and the original LLaVA names.

    ## Why is this bad?
    peft raises only when nothing matches. Fully-qualified names written against another module
    tree silently leave those modules without LoRA. A warning: when saved tensors exist for those
    modules and are dropped on load, ADP016 reports that as an error; when none were saved, the
    adapter loads as it was trained.

    ## Example
    `["language_model.model.layers.0.self_attn.q_proj", "v_proj"]` on transformers 5: only `v_proj` is adapted.

    ## How to fix
    Rewrite the stale entries with the base's module names (the fix does it when the rename is known).
    """

    code = "ADP009"
    name = "target-modules-stale"
    severity = Severity.WARNING
    artifacts = ADAPTER
    requires = ("ADP008",)

    def run(self, adapter_targets: Resolution, adapter_base: BaseModel, lora_config: dict[str, Any], path: str):
        res = adapter_targets
        if res.mode != "list" or not res.matched:
            return
        empty = res.empty_entries
        if not empty:
            return
        renames = renamed_entries(empty, adapter_base)
        fix = _rename_fix(lora_config["target_modules"], renames) if renames else None
        yield self.finding(
            f"{len(empty)} of {len(res.per_entry)} target_modules entries match no module of the base, e.g. "
            f"{empty[0]!r}: those modules get no LoRA and their saved tensors are dropped",
            path=_cfg(path), location=Location(key="target_modules"), fix=fix,
            hint=f"Rename: {renames}." if renames else "Rewrite or remove the entries that match nothing.")


@register
class VisionTowerAdapted(Check):
    """The LoRA adapts the vision tower or the projector, not only the language model.

    ## What it does
    Groups the adapted modules by part of the VLM (language model, vision tower, projector) from
    the adapter's tensor names.

    ## Why is this bad?
    LLaVA's recipe freezes the vision tower and trains the projector fully
    (`find_all_linear_names` skips `mm_projector` and `vision_tower`). Bare names such as
    `q_proj` or `fc1` also match CLIP's layers in an HF llava model, which is rarely intended.

    ## Example
    `target_modules: ["q_proj", "v_proj"]` on `LlavaForConditionalGeneration`.

    ## How to fix
    Limit targets to the language model with a regex in the adapter's own key layout (the message
    gives it), e.g. `model\\.language_model\\.layers\\.\\d+\\..*\\.(q_proj|v_proj)` (transformers 5
    llava), `model\\.layers\\.\\d+\\..*\\.(q_proj|v_proj)` (Qwen2-VL before transformers 4.52).
    """

    code = "ADP010"
    name = "vision-tower-adapted"
    severity = Severity.WARNING
    artifacts = ADAPTER
    requires = ("ADP001",)

    def run(self, adapter_tensors: AdapterTensors, lora_config: dict[str, Any], path: str):
        parts = parts_of(list(adapter_tensors.modules))
        vision, projector = parts["vision"], parts["projector"]
        if not (vision or projector) or not (parts["language"] or parts["lm_head"]):
            return  # a vision-encoder-only adapter (XTuner's visual_encoder_adapter) is deliberate
        where = ", ".join(f"{len(v)} {k} module(s)" for k, v in (("vision-tower", vision), ("projector", projector)) if v)
        targets = lora_config.get("target_modules")
        leaves = sorted({t.rsplit(".", 1)[-1] for t in targets}) if isinstance(targets, list) else ["q_proj", "v_proj"]
        regex = language_regex_from(parts["language"], leaves)
        yield self.finding(f"the adapter also adapts {where}, e.g. {(vision or projector)[0]!r}",
                           path=_cfg(path), location=Location(key="target_modules"),
                           hint=f"If unintended, retrain with target_modules = {regex!r}.",
                           fix=Fix(f"retrain with target_modules {regex!r}", Applicability.DISPLAY_ONLY))


@register
class ModulesToSaveMissing(Check):
    """A `modules_to_save` entry has no tensors in the adapter weights.

    ## What it does
    Looks for saved full copies (`base_model.model.<module>.weight`) of each `modules_to_save` entry.

    ## Why is this bad?
    The trained copy of that module (an `lm_head` or `embed_tokens` resized for new tokens) is
    lost: peft keeps the base's weights, or fails with a KeyError when mapping the wrapper's keys.

    ## Example
    `"modules_to_save": ["lm_head", "embed_tokens"]` with only lora_A / lora_B tensors saved (a
    ZeRO-3 save that skipped them).

    ## How to fix
    Re-export from the last checkpoint with `save_pretrained` after gathering all parameters.
    """

    code = "ADP011"
    name = "modules-to-save-missing"
    artifacts = ADAPTER
    requires = ("ADP001",)

    def run(self, lora_config: dict[str, Any], adapter_tensors: AdapterTensors, path: str):
        wanted = lora_config.get("modules_to_save") or []
        saved = list(adapter_tensors.saved_modules)
        for m in wanted if isinstance(wanted, list) else []:
            if not any(s == m or s.endswith("." + m) or f".{m}." in f".{s}." for s in saved):
                yield self.finding(f"modules_to_save lists {m!r} but the adapter weights hold no tensor for it",
                                   path=_cfg(path), location=Location(key="modules_to_save"))


@register
class AdapterBaseMismatch(Check):
    """The adapter's tensor shapes do not fit the base model (an adapter for another base).

    ## What it does
    Compares each `lora_A`'s in-features and `lora_B`'s out-features with the in/out features of
    the base module it lands on (from the base's tensor headers).

    ## Why is this bad?
    An adapter for a 13B base (hidden 5120) on a 7B base (4096) fails with `size mismatch for
    ...lora_A.default.weight`; LLaVA's `finetune_task_lora.sh` adapters need llava-v1.5 as base,
    `finetune_lora.sh` adapters need vicuna.

    ## Example
    `lora_A` of shape [128, 5120] on a base whose `q_proj` is [4096, 4096].

    ## How to fix
    Load the base recorded in `base_model_name_or_path` (LLaVA: `--model-base`).
    """

    code = "ADP013"
    name = "adapter-base-mismatch"
    artifacts = ADAPTER
    requires = ("ADP001",)

    def run(self, adapter_key_plan: KeyPlan, adapter_base: BaseModel, lora_config: dict[str, Any], path: str):
        bad = adapter_key_plan.shape_mismatches
        if not bad:
            return
        name, saved, want = bad[0]
        hidden = adapter_base.hidden_size
        recorded = lora_config.get("base_model_name_or_path")
        yield self.finding(
            f"{len(bad)} adapter tensor(s) do not fit the base ({adapter_base.folder}, hidden size {hidden}): "
            f"{name} is {list(saved)}, the base needs {list(want)}; peft raises 'size mismatch'",
            path=f"{path}/{adapter_key_plan.file_name}", location=Location(tensor=name),
            hint=f"Use the base the adapter was trained on ({recorded!r})." if recorded else None)


def _rename_fix(targets: Any, renames: dict[str, str]) -> Fix:
    new = [renames.get(t, t) for t in targets]
    return Fix(f"rewrite target_modules for the base's layout ({len(renames)} entries)", Applicability.SAFE,
               fixer="adapter_config", params={"set": {"target_modules": new}})


def _example_leaves(base: BaseModel) -> list[str]:
    leaves = sorted({n.rsplit(".", 1)[-1] for n, m in base.modules.items()
                     if m.kind == "linear" and "language" in n or n.startswith("model.layers")})
    return leaves[:4] or ["q_proj", "v_proj"]


# keep language_only_regex importable from here for the llava family
__all__ = ["language_only_regex"]


@register
class PatternUnmatched(Check):
    """A `rank_pattern` / `alpha_pattern` key matches no adapted module.

    ## What it does
    Applies peft's pattern rule (`re.match(rf"(.*\\.)?({key})$", module)`) to the modules
    `target_modules` adapts on the base.

    ## Why is this bad?
    The rank or alpha meant for those modules is not used: the adapter is built with the global
    `r` / `lora_alpha` there (peft only warns), and a rank difference becomes a size mismatch.

    ## Example
    `"rank_pattern": {"language_model.model.layers.0.mlp.down_proj": 16}` on transformers 5.

    ## How to fix
    Write the keys with the base's module names, or as leaf patterns (`"down_proj": 16`).
    """

    code = "ADP005"
    name = "pattern-unmatched"
    severity = Severity.WARNING
    artifacts = ADAPTER
    requires = ("ADP008", "ADP003")

    def run(self, lora_config: dict[str, Any], adapter_targets: Resolution, path: str):
        for key in ("rank_pattern", "alpha_pattern"):
            pattern = lora_config.get(key) or {}
            for k in pattern:
                try:
                    rx = re.compile(rf"(.*\.)?({k})$")
                except re.error as e:
                    yield self.finding(f"{key} key {k!r} is not a valid regex: {e}", path=_cfg(path),
                                       location=Location(pointer=Location.json_pointer(key, k)), severity=Severity.ERROR)
                    continue
                if not any(rx.match(m) for m in adapter_targets.matched):
                    yield self.finding(f"{key} key {k!r} matches none of the {len(adapter_targets.matched)} adapted "
                                       "modules", path=_cfg(path), location=Location(pointer=Location.json_pointer(key, k)))
