"""ADP checks on adapter tensor values: dtypes, NaN/Inf (bit scans, bf16 included), an
untrained (all-zero) lora_B, and LoRA deltas too small to matter next to the base weights."""

from __future__ import annotations

from typing import Any

from doctor.checks.adapter.common import ADAPTER, weights_file
from doctor.checks.adapter.fixtures import AdapterTensors
from doctor.checks.adapter.keys import KeyPlan
from doctor.checks.adapter.numeric import FLOAT_DTYPES, frobenius, lora_delta_norm, scan_bits
from doctor.checks.adapter.reading import BaseModel, Weights
from doctor.checks.adapter.targets import pattern_value

from doctor.errors import Skip
from doctor.findings import Location, Severity
from doctor.io.scan_budget import FULL_SCAN_BYTES, describe_cost  # NaN / zero scans read everything up to this
from doctor.registry import Check, fixture, register

TINY_RATIO = 1e-4
DELTA_SAMPLE = 4


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
                               path=weights_file(path, adapter_weights), location=Location(tensor=first))


@register
class LoraBAllZero(Check):
    """`lora_B` is all zeros: the adapter was never trained and changes nothing.

    ## What it does
    Checks whether every element of each `lora_B` is zero (peft initialises `lora_B` to zeros).

    ## Why is this bad?
    `B @ A` is then 0: peft loads it without a word and the merged model behaves exactly like the base
    ("LoRA had no effect"), a silently unchanged model.
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
                               path=weights_file(path, adapter_weights), location=Location(tensor=zero[0]))
        elif zero:
            yield self.finding(f"{len(zero)} of {len(bs)} lora_B tensors are zero, e.g. {zero[0]}: those modules "
                               "were not trained", path=weights_file(path, adapter_weights),
                               location=Location(tensor=zero[0]), severity=Severity.WARNING)


@register
class LoraDeltaTiny(Check):
    """The LoRA updates are tiny next to the base weights they modify.

    ## What it does
    On a few adapted modules, compares `||B @ A|| x scale` with `||W||` of the base weight
    (reading only those tensors; `||B @ A||` from two r x r products).

    ## Why is this bad?
    A ratio below 1e-4 changes the outputs less than bf16 rounding does: the adapter has no
    visible effect (too low a learning rate, `lora_alpha` far below `r`, too few steps). A warning:
    peft loads and applies it correctly, and a small update can be intended.

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
            alpha = pattern_value(lora_config.get("alpha_pattern") or {}, saved, lora_config.get("lora_alpha"))
            scale = alpha / (r ** 0.5 if lora_config.get("use_rslora") else r)
            delta = lora_delta_norm(adapter_weights.read(lora.a.name), adapter_weights.read(lora.b.name)) * scale
            ratios.append((delta / w_norm, saved))
        if ratios and max(r for r, _ in ratios) < TINY_RATIO:
            best, name = max(ratios)
            yield self.finding(f"||B@A||*scale / ||W|| is at most {best:.2g} over {len(ratios)} sampled modules "
                               f"(e.g. {name}): the adapter barely changes the model",
                               path=weights_file(path, adapter_weights), location=Location(tensor=name))


@register
class LoraValuesSampled(Check):
    """Adapter values were scanned by a sample: the adapter is above the default scan budget.

    ## What it does
    When the adapter's float tensors add up to more than `FULL_SCAN_BYTES` (the bytes this machine
    scans in about a second, measured by `benchmarks/values_bench.py`; the same budget as the
    checkpoint scan, CKP304), ADP019 / ADP020 read every `lora_B` but only one tensor in eight of the
    rest unless `--deep` is given; this check says so, with what `--deep` would read.

    ## Why is this bad?
    peft loads NaN values without a word, so only a scan can tell; without this note, "no ADP019"
    would read as "no NaN anywhere" when most `lora_A` tensors were never read. Info only: nothing is
    known to be wrong.

    ## Example
    `values sampled: 2 of 16 lora_A tensors read; --deep reads 1.2 GB (1,200,000,000 bytes), about a second`

    ## How to fix
    Run `vlm-doctor check --deep ADAPTER` to scan every value.
    """

    code = "ADP022"
    name = "lora-values-sampled"
    severity = Severity.INFO
    artifacts = ADAPTER
    requires = ("ADP014",)

    def run(self, adapter_weights: Weights, adapter_scan: dict[str, tuple[int, bool]], path: str):
        tensors = [t for t in adapter_weights.tensors.values() if t.dtype in FLOAT_DTYPES]
        unread = [t for t in tensors if t.name not in adapter_scan]
        if unread:
            total = sum(max(t.nbytes, 0) for t in tensors)
            yield self.finding(f"tensor values sampled: {len(unread)} of {len(tensors)} float tensors not read "
                               f"(every lora_B was); --deep reads {describe_cost(total)}",
                               path=weights_file(path, adapter_weights), location=Location(tensor=unread[0].name))


# the scan shared by ADP019 / ADP020 / ADP022


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
                               path=weights_file(path, adapter_weights), location=Location(tensor=odd[0].name))
        kinds = sorted({t.dtype for t in infos if t.dtype in FLOAT_DTYPES})
        if len(kinds) > 1:
            yield self.finding(f"LoRA tensors mix dtypes {kinds}", path=weights_file(path, adapter_weights),
                               severity=Severity.INFO, hint="Re-save the adapter in one dtype.")
