"""CKP301-CKP304: tensor values (NaN, Inf, all-zero), scanned by default when cheap.

Weights up to ``doctor.io.scan_budget.FULL_SCAN_BYTES`` (about one second of scanning here, see
``benchmarks/values_bench.py``) are scanned on every run; larger weights need ``--deep``, and CKP304
says so with the cost. safetensors files are streamed by ``doctor.io.deep_scan`` (no torch, one
small buffer). A .bin file is a pickle: it is read only through the SEC family's
``pickle_scan.safe_load``, which scans the opcodes first and refuses anything that could run code;
its tensors are then scanned one at a time through integer views of their bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.checks.checkpoint.fixtures import normalize_dtype, read_model_weights

from doctor.errors import Skip
from doctor.findings import Location, Severity
from doctor.io.scan_budget import FULL_SCAN_BYTES, describe_cost
from doctor.registry import Check, fixture, register

if TYPE_CHECKING:
    from doctor.io.deep_scan import ValueStats  # numpy: imported only when a scan runs

MAX_FINDINGS = 10
# Parameters that are zero by design at initialization and legitimately stay zero.
ZERO_OK_SUFFIXES = (".bias",)


@dataclass
class ValueScan:
    stats: list[ValueStats] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # file -> why it was not scanned


@dataclass(frozen=True)
class ValuePlan:
    """Which weight files the value scan reads, their size, and whether this run scans them."""

    files: tuple[str, ...]
    nbytes: int
    deep: bool

    @property
    def scanned(self) -> bool:
        return bool(self.files) and (self.deep or self.nbytes <= FULL_SCAN_BYTES)


@fixture
def ckp_value_plan(artifact: Any, path: str, options: Any) -> ValuePlan:
    if "model" in artifact.kinds:
        weights = read_model_weights(Path(path))
        files = [f for f in weights.files if f not in weights.unreadable]
    else:
        files = [path]
    nbytes = 0
    for f in files:
        try:
            nbytes += Path(f).stat().st_size
        except OSError:
            pass
    return ValuePlan(tuple(files), nbytes, bool(getattr(options, "deep", False)))


@fixture
def ckp_values(ckp_value_plan: ValuePlan, progress: Any) -> ValueScan:
    plan = ckp_value_plan
    if not plan.files:
        raise Skip("no readable weight files")
    if not plan.scanned:
        raise Skip(f"weights are {describe_cost(plan.nbytes)} to scan: above the default budget, "
                   "run with --deep (see CKP304)")
    scan = ValueScan()
    with progress("Scanning tensor values", plan.nbytes) as advance:
        for f in plan.files:
            _scan_one(f, scan, advance)
    return scan


def _scan_one(file: str, scan: ValueScan, advance: Callable[[int], None]) -> None:
    from doctor.io.deep_scan import iter_scan_file, scan_bytes

    if file.endswith(".safetensors"):
        try:
            scan.stats.extend(iter_scan_file(file, progress=advance))
        except (ValueError, OSError) as e:
            scan.skipped[file] = str(e)
        return
    try:
        from doctor.io import pickle_scan

        state = pickle_scan.safe_load(file)
    except Exception as e:  # noqa: BLE001 - refused or unreadable: the SEC findings say why
        scan.skipped[file] = f"not read: {e}"
        return
    for name, tensor in _tensors(state):
        data = tensor.detach().contiguous().reshape(-1).view(_uint8())
        scan.stats.append(scan_bytes(name, normalize_dtype(tensor.dtype), data.numpy(), file))
    advance(Path(file).stat().st_size)


def _uint8() -> Any:
    import torch

    return torch.uint8


def _tensors(state: Any) -> list[tuple[str, Any]]:
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        return []
    out = []
    for k, v in state.items():
        if hasattr(v, "dtype") and hasattr(v, "reshape"):
            out.append((str(k), v))
    return out


def _report(check: Check, hits: list[ValueStats], describe: Callable[[ValueStats], str]):
    for s in hits[:MAX_FINDINGS]:
        yield check.finding(describe(s), path=s.file, location=Location(tensor=s.name))
    if len(hits) > MAX_FINDINGS:
        rest = hits[MAX_FINDINGS:]
        yield check.finding(f"... and {len(rest)} more tensor(s): {', '.join(s.name for s in rest[:5])}",
                            path=rest[0].file, location=Location(tensor=rest[0].name))


@register
class NanValues(Check):
    """A tensor contains NaN values.

    ## What it does
    Streams every tensor's bytes and counts NaN encodings through integer views (fp32, fp16, bf16,
    fp8 e4m3 / e5m2, fp64). Runs by default when the weights are small enough to scan in about a
    second (`doctor.io.scan_budget.FULL_SCAN_BYTES`), otherwise with `--deep` (CKP304 says which).

    ## Why is this bad?
    `from_pretrained` loads NaN weights without a word, and one NaN weight turns every activation it
    touches into NaN: the loss is `nan` and generation emits garbage or a single repeated token. A
    silently wrong model: error. Typical causes: fp16 overflow during training, a
    merge of a diverged adapter.

    ## Example
    `language_model.model.layers.12.mlp.down_proj.weight`: 4096 NaN values.

    ## How to fix
    Go back to the last checkpoint without NaN (re-merge from a healthy adapter); train in bf16 or
    with a lower learning rate.
    """

    code = "CKP301"
    name = "nan-values"
    artifacts = frozenset({"model", "weights"})

    def run(self, ckp_values: ValueScan):
        hits = [s for s in ckp_values.stats if s.nan]
        yield from _report(self, hits, lambda s: f"{s.name} ({s.dtype}) has {s.nan:,} NaN value(s) of {s.numel:,}")


@register
class InfValues(Check):
    """A tensor contains +Inf or -Inf values.

    ## What it does
    Streams every tensor's bytes and counts infinities through integer views.

    ## Why is this bad?
    `from_pretrained` loads them without a word, and Inf weights produce Inf/NaN activations: a
    silently wrong model (error). Often a bfloat16 or float32 checkpoint converted to
    float16: values beyond 65504 overflow to Inf.

    ## Example
    `lm_head.weight` (F16): 12 Inf values.

    ## How to fix
    Keep the dtype the model was trained in (bfloat16), or clamp before converting; re-export from the
    original checkpoint.
    """

    code = "CKP302"
    name = "inf-values"
    artifacts = frozenset({"model", "weights"})

    def run(self, ckp_values: ValueScan):
        hits = [s for s in ckp_values.stats if s.inf]
        yield from _report(self, hits, lambda s: f"{s.name} ({s.dtype}) has {s.inf:,} Inf value(s) of {s.numel:,}")


@register
class AllZeroTensor(Check):
    """A weight tensor is entirely zero.

    ## What it does
    Reports tensors whose every value is +0 or -0 (biases excluded: they are often zero).

    ## Why is this bad?
    A zero weight matrix blocks its path: a zero projector gives image-blind answers, a zero
    mllama cross-attention gate cuts images off, a zero `lm_head` makes every logit equal. It comes
    from ZeRO-3 partitions saved without gathering, or from an export that wrote placeholders. A
    warning, not an error: some parameters are zero by design (a freshly initialized gate, an
    unused padding row), and the loader itself is fine with them.

    ## Example
    `multi_modal_projector.linear_2.weight`: all 16,777,216 values are zero.

    ## How to fix
    Re-export the weights from the full checkpoint (with ZeRO-3: `zero_to_fp32.py` or
    `stage3_gather_16bit_weights_on_model_save`).
    """

    code = "CKP303"
    name = "all-zero-tensor"
    severity = Severity.WARNING
    artifacts = frozenset({"model", "weights"})

    def run(self, ckp_values: ValueScan):
        hits = [s for s in ckp_values.stats
                if s.scanned and s.numel > 0 and s.all_zero and not s.name.endswith(ZERO_OK_SUFFIXES)]
        yield from _report(self, hits, lambda s: f"{s.name} ({s.dtype}, {s.numel:,} values) is all zero")


@register
class ValuesNotScanned(Check):
    """Tensor values were not scanned: the weights are above the default budget.

    ## What it does
    When the weight files add up to more than `FULL_SCAN_BYTES` (the bytes this machine scans in
    about a second, measured by `benchmarks/values_bench.py`), CKP301-303 are skipped unless
    `--deep` is given; this check says so, with the bytes `--deep` would read and an estimate of
    the time it takes.

    ## Why is this bad?
    `from_pretrained` loads NaN / Inf / zero weights without a word, so only a scan can tell; without
    this note, "no CKP301" on a large checkpoint would read as "no NaN" when the values were never
    read. Info only: nothing is known to be wrong.

    ## Example
    `values not scanned: 14.0 GB (14,000,000,000 bytes), about 14 s with --deep`

    ## How to fix
    Run `vlm-doctor check --deep PATH` (for example once in CI after training) to scan every value.
    """

    code = "CKP304"
    name = "values-not-scanned"
    severity = Severity.INFO
    artifacts = frozenset({"model", "weights"})

    def run(self, ckp_value_plan: ValuePlan, path: str):
        plan = ckp_value_plan
        if plan.files and not plan.scanned:
            yield self.finding(f"tensor values (NaN / Inf / all-zero) not scanned: {len(plan.files)} weight "
                               f"file(s), {describe_cost(plan.nbytes)} with --deep", path=path)
