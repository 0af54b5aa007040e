"""ADP checks on adapter_model.safetensors / .bin: present, non-empty, keys that land on the
base, ranks. Values (dtypes, NaN/Inf, untrained lora_B, tiny deltas) are in ``doctor.checks.adapter.rules.values``."""

from __future__ import annotations

from typing import Any

from doctor.checks.adapter.common import ADAPTER, weights_file
from doctor.checks.adapter.fixtures import AdapterTensors, Versions
from doctor.checks.adapter.keys import KeyPlan
from doctor.checks.adapter.reading import Weights
from doctor.checks.adapter.targets import Resolution, pattern_value

from doctor.findings import Applicability, Fix, Location, Severity
from doctor.registry import Check, register


@register
class AdapterWeightsMissing(Check):
    """The adapter weights file is missing, empty, or unreadable.

    ## What it does
    Looks for adapter_model.safetensors, then adapter_model.bin (peft's order), and checks it
    holds at least one tensor.

    ## Why is this bad?
    A 443-byte adapter_model.bin (an old peft / alpaca-lora save bug) holds an empty state dict:
    the adapter loads without an error and does nothing.

    ## Example
    `adapter_model.bin` of 443 bytes next to a 1 GB `checkpoint-1000/pytorch_model.bin`.

    ## How to fix
    Re-save from the trained model (`model.save_pretrained`), or rebuild the adapter from the
    last checkpoint's full state dict.
    """

    code = "ADP014"
    name = "adapter-weights-missing"
    artifacts = ADAPTER

    def run(self, adapter_weights: Weights, path: str):
        w = adapter_weights
        if w.file is None:
            yield self.finding("no adapter_model.safetensors or adapter_model.bin in the folder", path=path)
        elif w.problem:
            yield self.finding(f"{w.file.rsplit('/', 1)[-1]} cannot be read: {w.problem}", path=w.file,
                               hint="Re-download or re-save the adapter; the SEC checks say more about the file.")
        elif not w.tensors:
            yield self.finding(f"{w.file.rsplit('/', 1)[-1]} ({w.size} bytes) holds no tensors: the adapter does "
                               "nothing", path=w.file)
        elif not any(".lora_" in n for n in w.tensors):
            yield self.finding(f"{len(w.tensors)} tensors but no lora_A / lora_B among them", path=w.file,
                               severity=Severity.WARNING)


@register
class AdapterTensorEmpty(Check):
    """Adapter tensors have zero elements (a DeepSpeed ZeRO-3 save without gathering).

    ## What it does
    Reports tensors whose shape contains 0.

    ## Why is this bad?
    Loading fails with `size mismatch for ...lora_B.default.weight: copying a param with shape
    torch.Size([0])`: under ZeRO-3 each rank holds a shard, and saving without gathering writes
    empty placeholders.

    ## Example
    `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` with shape `[0]`.

    ## How to fix
    Re-export from the DeepSpeed checkpoint (`zero_to_fp32.py`, or `stage3_gather_16bit_weights_on_model_save: true`).
    """

    code = "ADP015"
    name = "adapter-tensor-empty"
    artifacts = ADAPTER
    requires = ("ADP014",)

    def run(self, adapter_weights: Weights, path: str):
        empty = [t for t in adapter_weights.tensors.values() if t.numel == 0]
        if empty:
            yield self.finding(f"{len(empty)} of {len(adapter_weights.tensors)} tensors are empty (shape "
                               f"{list(empty[0].shape)}), e.g. {empty[0].name}", path=weights_file(path, adapter_weights),
                               location=Location(tensor=empty[0].name))


@register
class AdapterKeysDropped(Check):
    """Saved LoRA tensors that land on no module peft adapts: the adapter partly or fully does nothing.

    ## What it does
    Maps every saved tensor to the base module it belongs to, in the module layout the installed
    transformers builds, with the renaming the installed peft applies by itself (transformers
    4.x -> >= 4.52 names for llava-style models), and counts what `load_state_dict(strict=False)`
    would drop.

    ## Why is this bad?
    peft logs only `Found missing adapter keys` and the output equals the base's: an adapter
    saved in one layout (original LLaVA `model.layers...`, or >= 4.52 names on an older
    transformers) applied to another.

    ## Example
    Keys `base_model.model.model.language_model.layers.0...` (transformers 5) loaded with
    transformers 4.45, whose modules are `language_model.model.layers.0...`.

    ## How to fix
    Rename the keys to the base's layout (the fix writes a renamed copy), or upgrade peft.
    """

    code = "ADP016"
    name = "adapter-keys-dropped"
    artifacts = ADAPTER
    requires = ("ADP014", "ADP008")

    def run(self, adapter_key_plan: KeyPlan, adapter_targets: Resolution, versions: Versions, path: str):
        plan = adapter_key_plan
        if not plan.dropped and not plan.missing:
            return
        fix = None
        if plan.rename and len(plan.rename) == len(plan.dropped):
            fix = Fix(f"write a copy with {len(plan.rename)} module names renamed to the base's layout",
                      Applicability.SAFE, fixer="adapter_config", params={"rename_modules": plan.rename})
        if plan.dropped:
            sev = Severity.ERROR if not plan.landed or len(plan.dropped) > len(plan.landed) else Severity.WARNING
            yield self.finding(
                f"{len(plan.dropped)} of {plan.saved_count} adapted modules land on no module peft "
                f"{versions.peft} wraps on this base (transformers {versions.transformers}), e.g. "
                f"{plan.dropped[0]!r}: their tensors are dropped silently", severity=sev,
                path=f"{path}/{plan.file_name}", location=Location(tensor=plan.dropped[0]), fix=fix)
        elif plan.missing:
            yield self.finding(
                f"{len(plan.missing)} module(s) that target_modules wraps have no saved tensors, e.g. "
                f"{plan.missing[0]!r}: they keep lora_B = 0 (peft logs 'Found missing adapter keys')",
                path=f"{path}/{plan.file_name}", severity=Severity.WARNING,
                hint="Save the adapter from the same config it was trained with.")


@register
class LoraRankInconsistent(Check):
    """LoRA tensor shapes disagree with `r` / `rank_pattern` or with each other.

    ## What it does
    Checks every `lora_A` has `r` rows and its `lora_B` `r` columns, with `r` from `rank_pattern`
    (peft's rule: the first key matching `(.*\\.)?key$`) or the global `r`.

    ## Why is this bad?
    peft builds each module with the configured rank, then `size mismatch for lora_A` on load.
    A config edited after training (or a rank_pattern lost) is the usual cause.

    ## Example
    `"r": 8` with `lora_A` tensors of shape `[16, 4096]`.

    ## How to fix
    Set `r` (or the `rank_pattern` entry) to the tensors' rank.
    """

    code = "ADP017"
    name = "lora-rank-inconsistent"
    artifacts = ADAPTER
    requires = ("ADP014", "ADP003")

    def run(self, lora_config: dict[str, Any], adapter_tensors: AdapterTensors, path: str):
        pattern = lora_config.get("rank_pattern") or {}
        r_default = lora_config.get("r")
        bad: list[tuple[str, int, int]] = []
        for mod, lora in adapter_tensors.modules.items():
            want = pattern_value(pattern, mod, r_default)
            a, b = lora.a, lora.b
            if a is not None and a.numel and a.shape[0] != want:
                bad.append((a.name, a.shape[0], want))
            if b is not None and b.numel and len(b.shape) == 2 and b.shape[1] != (a.shape[0] if a is not None else want):
                bad.append((b.name, b.shape[1], a.shape[0] if a is not None else want))
        if bad:
            ranks = sorted({got for _, got, _ in bad})
            fix = None
            if len(ranks) == 1 and not pattern:
                fix = Fix(f"set r to {ranks[0]}", Applicability.SAFE, fixer="adapter_config",
                          params={"set": {"r": ranks[0]}})
            yield self.finding(f"{len(bad)} tensor(s) have rank {ranks} where the config says {bad[0][2]}, e.g. "
                               f"{bad[0][0]}", path=f"{path}/adapter_config.json", location=Location(key="r"), fix=fix)


# value checks (ADP018 - ADP021) register on import
