"""ADP checks on adapter_model.safetensors / .bin: present, non-empty, keys that land on the
base, ranks, dtypes, NaN/Inf, an untrained (all-zero) lora_B, and deltas too small to matter."""

from __future__ import annotations

import re
from typing import Any

from doctor.checks._adapter_fixtures import AdapterTensors, Versions
from doctor.checks._adapter_io import ADAPTER_FILES, BaseModel, Weights
from doctor.checks._adapter_keys import KeyPlan
from doctor.checks._adapter_numeric import FLOAT_DTYPES, frobenius, lora_delta_norm, scan_bits
from doctor.checks._adapter_targets import Resolution

from doctor.findings import Applicability, Fix, Location, Severity
from doctor.registry import Check, register

ADAPTER = frozenset({"adapter"})
MIN_REAL_ADAPTER_BYTES = 1024
FULL_SCAN_BYTES = 512 << 20   # NaN / zero scans read everything up to this; --deep lifts it
TINY_RATIO = 1e-4
DELTA_SAMPLE = 4


def _wfile(path: str, weights: Weights) -> str:
    return weights.file or f"{path}/{ADAPTER_FILES[0]}"


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
                               f"{list(empty[0].shape)}), e.g. {empty[0].name}", path=_wfile(path, adapter_weights),
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
            want = _pattern_value(pattern, mod, r_default)
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


@register
class LoraNanOrInf(Check):
    """Adapter tensors contain NaN or Inf.

    ## What it does
    Scans the float tensors' bits (fp16, bf16, fp32) for NaN/Inf without converting them.

    ## Why is this bad?
    One NaN in `lora_B` turns every output of that layer into NaN; a merge fails with "NaNs
    detected in the merged weights" (peft `safe_merge`).

    ## Example
    A run that diverged in fp16 and was saved anyway.

    ## How to fix
    Use an earlier checkpoint, and retrain with bf16 or a lower learning rate.
    """

    code = "ADP019"
    name = "lora-nan-inf"
    artifacts = ADAPTER
    requires = ("ADP014",)

    def run(self, adapter_weights: Weights, adapter_scan: dict[str, tuple[int, bool]], path: str):
        bad = {n: c for n, (c, _) in adapter_scan.items() if c}
        if bad:
            first = next(iter(bad))
            yield self.finding(f"{sum(bad.values())} NaN/Inf values in {len(bad)} tensor(s), e.g. {first}",
                               path=_wfile(path, adapter_weights), location=Location(tensor=first))


@register
class LoraBAllZero(Check):
    """`lora_B` is all zeros: the adapter was never trained and changes nothing.

    ## What it does
    Checks whether every element of each `lora_B` is zero (peft initialises `lora_B` to zeros).

    ## Why is this bad?
    `B @ A` is then 0: the merged model behaves exactly like the base ("LoRA had no effect").
    Usual causes: the optimizer never saw the LoRA parameters, a save before the first step, or
    a ZeRO-3 save of uninitialised shards.

    ## Example
    An adapter saved straight after `get_peft_model`.

    ## How to fix
    Check the training run (loss decreasing, LoRA parameters trainable) and save after training.
    """

    code = "ADP020"
    name = "lora-b-all-zero"
    artifacts = ADAPTER
    requires = ("ADP014", "ADP015")

    def run(self, adapter_tensors: AdapterTensors, adapter_scan: dict[str, tuple[int, bool]],
            adapter_weights: Weights, path: str):
        bs = [m.b.name for m in adapter_tensors.modules.values() if m.b is not None and m.b.name in adapter_scan]
        zero = [n for n in bs if adapter_scan[n][1]]
        if zero and len(zero) == len(bs):
            yield self.finding(f"all {len(bs)} lora_B tensors are zero: the adapter does nothing",
                               path=_wfile(path, adapter_weights), location=Location(tensor=zero[0]))
        elif zero:
            yield self.finding(f"{len(zero)} of {len(bs)} lora_B tensors are zero, e.g. {zero[0]}: those modules "
                               "were not trained", path=_wfile(path, adapter_weights),
                               location=Location(tensor=zero[0]), severity=Severity.WARNING)


@register
class LoraDeltaTiny(Check):
    """The LoRA updates are tiny next to the base weights they modify.

    ## What it does
    On a few adapted modules, compares `||B @ A|| x scale` with `||W||` of the base weight
    (reading only those tensors; `||B @ A||` from two r x r products).

    ## Why is this bad?
    A ratio below 1e-4 changes the outputs less than bf16 rounding does: the adapter has no
    visible effect (too low a learning rate, `lora_alpha` far below `r`, too few steps).

    ## Example
    r 64, alpha 16, lr 2e-6: `||dW|| / ||W||` about 1e-6.

    ## How to fix
    Retrain with a higher learning rate (LLaVA uses 2e-4) or a larger `lora_alpha`.
    """

    code = "ADP021"
    name = "lora-delta-tiny"
    severity = Severity.WARNING
    artifacts = ADAPTER
    requires = ("ADP013", "ADP019", "ADP003", "ADP018")

    def run(self, adapter_key_plan: KeyPlan, adapter_tensors: AdapterTensors, adapter_weights: Weights,
            adapter_base: BaseModel, lora_config: dict[str, Any], adapter_scan: dict[str, tuple[int, bool]],
            path: str):
        ratios = []
        trained = [(s, t) for s, t in adapter_key_plan.landed.items()
                   if (b := adapter_tensors.modules[s].b) is not None and not adapter_scan.get(b.name, (0, True))[1]]
        for saved, target in trained[:DELTA_SAMPLE]:  # all-zero lora_B is ADP020's finding
            lora, module = adapter_tensors.modules[saved], adapter_base.modules.get(target)
            if module is None or module.kind != "linear" or lora.a is None or lora.b is None \
                    or adapter_base.tensors[module.weight].dtype not in FLOAT_DTYPES:
                continue
            w_norm = frobenius(adapter_base.read_weight(module))
            if w_norm == 0:
                continue
            r = lora.a.shape[0]
            alpha = _pattern_value(lora_config.get("alpha_pattern") or {}, saved, lora_config.get("lora_alpha"))
            scale = alpha / (r ** 0.5 if lora_config.get("use_rslora") else r)
            delta = lora_delta_norm(adapter_weights.read(lora.a.name), adapter_weights.read(lora.b.name)) * scale
            ratios.append((delta / w_norm, saved))
        if ratios and max(r for r, _ in ratios) < TINY_RATIO:
            best, name = max(ratios)
            yield self.finding(f"||B@A||*scale / ||W|| is at most {best:.2g} over {len(ratios)} sampled modules "
                               f"(e.g. {name}): the adapter barely changes the model",
                               path=_wfile(path, adapter_weights), location=Location(tensor=name))


def _pattern_value(pattern: dict[str, Any], module: str, default: Any) -> Any:
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


# the scan shared by ADP019 / ADP020
from doctor.errors import Skip  # noqa: E402
from doctor.registry import fixture  # noqa: E402


@fixture
def adapter_scan(adapter_weights: Weights, options: Any) -> dict[str, tuple[int, bool]]:
    """NaN/Inf count and all-zero flag per float tensor. Everything is scanned up to
    FULL_SCAN_BYTES; beyond that (without --deep) lora_B fully and the rest by a sample."""
    tensors = [t for t in adapter_weights.tensors.values() if t.dtype in FLOAT_DTYPES]
    total = sum(max(t.nbytes, 0) for t in tensors)
    deep = bool(getattr(options, "deep", False))
    out = {}
    try:
        for i, t in enumerate(tensors):
            if deep or total <= FULL_SCAN_BYTES or ".lora_B" in t.name or i % 8 == 0:
                out[t.name] = scan_bits(adapter_weights, t)
    except Exception as e:  # noqa: BLE001 - a pickle the safe reader refuses is SEC's finding
        raise Skip(f"cannot read the tensor data: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return out


@register
class LoraDtypeUnusual(Check):
    """Adapter tensors are not floating point, or mix several float types.

    ## What it does
    Reads each LoRA tensor's dtype from the header.

    ## Why is this bad?
    peft creates float `lora_A`/`lora_B` parameters and copies the saved values in: integer or
    quantized tensors are a save from another tool (or a damaged file) and load as garbage;
    mixed dtypes usually mean tensors from two saves were combined.

    ## Example
    `lora_A` in I8 next to `lora_B` in BF16.

    ## How to fix
    Re-save the adapter from the trained model with `save_pretrained` (float16/bfloat16/float32).
    """

    code = "ADP018"
    name = "lora-dtype-unusual"
    artifacts = ADAPTER
    requires = ("ADP014",)

    def run(self, adapter_tensors: AdapterTensors, adapter_weights: Weights, path: str):
        infos = [t for m in adapter_tensors.modules.values() for t in (m.a, m.b) if t is not None]
        odd = [t for t in infos if t.dtype not in FLOAT_DTYPES]
        if odd:
            yield self.finding(f"{len(odd)} LoRA tensor(s) are {odd[0].dtype}, not floating point, e.g. {odd[0].name}",
                               path=_wfile(path, adapter_weights), location=Location(tensor=odd[0].name))
        kinds = sorted({t.dtype for t in infos if t.dtype in FLOAT_DTYPES})
        if len(kinds) > 1:
            yield self.finding(f"LoRA tensors mix dtypes {kinds}", path=_wfile(path, adapter_weights),
                               severity=Severity.INFO, hint="Re-save the adapter in one dtype.")
