"""A PEFT LoRA adapter as the merge sees it: which modules it changes, by how much, and the
math of folding it into a base weight.

The scale of each module is resolved as peft's ``LoraModel._create_and_replace`` does:
``rank_pattern`` / ``alpha_pattern`` keys are matched with ``get_pattern_key`` (the first key
``k`` for which ``(.*\\.)?(k)$`` matches the module name wins), then ``alpha / r``, or
``alpha / sqrt(r)`` with ``use_rslora``. The module name matched is the one the adapter was saved
under (the name in the transformers release that trained it), since that is the name the
patterns were written against.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.fixers.merge.tensor_io import TensorReader, TensorRef, list_bin, list_safetensors

from doctor.errors import ArtifactError, UsageError
from doctor.files import ADAPTER_WEIGHTS

if TYPE_CHECKING:
    import torch

# LoraConfig fields that change nothing about a merge, or are checked separately below.
_HARMLESS = frozenset({
    "r", "lora_alpha", "lora_dropout", "target_modules", "exclude_modules", "fan_in_fan_out", "bias",
    "modules_to_save", "init_lora_weights", "layers_to_transform", "layers_pattern", "rank_pattern",
    "alpha_pattern", "use_rslora", "use_dora", "lora_bias", "task_type", "base_model_name_or_path",
    "revision", "inference_mode", "peft_type", "auto_mapping", "megatron_config", "megatron_core",
    "loftq_config", "eva_config", "runtime_config", "peft_version", "qalora_group_size",
    "ensure_weight_tying", "corda_config", "lora_ga_config",
})
# Initialisations that rewrote the base weights: the adapter is relative to a modified base.
_BASE_CHANGING_INIT = ("pissa", "olora", "corda", "loftq", "lora_ga")
_PIECES = re.compile(
    r"^(?P<module>.+?)\.(?P<piece>lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)"
    r"(?:\.(?P<adapter>[A-Za-z0-9_-]+?))??(?:\.(?P<param>weight|bias))?$"
)


@dataclass
class LoraModule:
    """One adapted module. ``name`` is the module path as saved, without ``base_model.model.``."""

    name: str
    a: TensorRef
    b: TensorRef
    r: int
    alpha: float
    scale: float
    kind: str = "linear"  # linear | embedding | conv
    magnitude: TensorRef | None = None  # DoRA
    bias: TensorRef | None = None  # lora_bias: lora_B.bias


@dataclass
class Adapter:
    folder: Path
    config: dict[str, Any]
    modules: dict[str, LoraModule] = field(default_factory=dict)
    #: full tensors saved beside the LoRA (``modules_to_save``, trained biases): name -> ref
    replacements: dict[str, TensorRef] = field(default_factory=dict)
    fan_in_fan_out: bool = False


def load_adapter(folder: Path, reader: TensorReader, label: str = "adapter") -> Adapter:
    """Read ``adapter_config.json`` and the tensor headers of ``adapter_model.*``; refuse what
    a merge cannot reproduce, with the reason."""
    cfg_path = folder / "adapter_config.json"
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{folder}: no adapter_config.json; is this a PEFT adapter folder?") from None
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{cfg_path}: unreadable JSON ({e}); run `vlm-doctor check {folder}`") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"{cfg_path}: expected a JSON object")
    refuse_unsupported(config, cfg_path)
    refs = _adapter_tensors(folder, reader)
    adapter = Adapter(folder, config, fan_in_fan_out=bool(config.get("fan_in_fan_out")))
    _group(adapter, refs, label)
    if not adapter.modules and not adapter.replacements:
        raise ArtifactError(f"{folder}: the adapter holds no LoRA tensors; nothing to merge "
                            "(an empty save; see `vlm-doctor check` ADP findings)")
    return adapter


def refuse_unsupported(config: dict[str, Any], where: Path) -> None:
    """Raise UsageError for adapters whose merge would not equal what peft computes."""
    ptype = str(config.get("peft_type", "LORA")).upper()
    if ptype != "LORA":
        raise UsageError(f"{where}: peft_type {ptype} is not LoRA; vlm-doctor merges LoRA adapters only. "
                         "Use peft's `PeftModel.from_pretrained(base, adapter).merge_and_unload()` for it.")
    init = str(config.get("init_lora_weights", "")).lower()
    if any(init.startswith(p) for p in _BASE_CHANGING_INIT):
        raise UsageError(
            f"{where}: init_lora_weights={config['init_lora_weights']!r} rewrote the base weights at training "
            "start, so this adapter is relative to a modified base. Re-save it with peft's "
            "`save_pretrained(..., path_initial_model_for_weight_conversion=...)` to get a plain LoRA, then merge.")
    defaults = _peft_defaults()
    active = []
    for key, value in config.items():
        if key in _HARMLESS or value in (None, False, {}, [], "", 0) or defaults.get(key, object()) == value:
            continue
        active.append(key)
    if active:
        names = ", ".join(sorted(set(active)))
        raise UsageError(
            f"{where}: this adapter uses {names}, which a plain LoRA merge cannot reproduce (it changes the "
            "model's structure or makes the adapter conditional). Keep it as an adapter, or merge it with "
            "peft's `merge_and_unload()` on a peft version that supports it.")


def _peft_defaults() -> dict[str, Any]:
    """Defaults of the installed peft's LoraConfig: a field a newer peft added and left at its
    default changes nothing (empty when peft is absent)."""
    try:
        import dataclasses

        from peft import LoraConfig
    except Exception:  # noqa: BLE001 - peft missing or broken: only the known fields are trusted
        return {}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(LoraConfig):
        if f.default is not dataclasses.MISSING and isinstance(f.default, (str, int, float, bool, type(None))):
            out[f.name] = f.default
    return out


def _adapter_tensors(folder: Path, reader: TensorReader) -> dict[str, TensorRef]:
    st = folder / ADAPTER_WEIGHTS[0]
    if st.exists():
        return {r.key: r for r in list_safetensors(st)}
    for name in ADAPTER_WEIGHTS[1:]:
        p = folder / name
        if p.exists():
            refs, state = list_bin(p)
            reader.hold(str(p), state)
            return {r.key: r for r in refs}
    raise ArtifactError(f"{folder}: no adapter_model.safetensors or adapter_model.bin")


def _group(adapter: Adapter, refs: dict[str, TensorRef], label: str) -> None:
    from doctor.layouts import strip_peft_prefix

    cfg = adapter.config
    pieces: dict[str, dict[str, TensorRef]] = {}
    for key, ref in refs.items():
        name = strip_peft_prefix(key)
        m = _PIECES.match(name)
        if m is None:
            if "trainable_tokens" in name:
                raise UsageError(f"{adapter.folder}: {key}: trainable-token deltas (trainable_token_indices) "
                                 "are not merged by vlm-doctor; use peft's merge_and_unload()")
            # modules_to_save copies (saved by peft without the wrapper; raw exports keep it)
            name = re.sub(r"\.modules_to_save\.[^.]+\.", ".", name)
            name = re.sub(r"\.(original_module|base_layer)\.", ".", name)
            adapter.replacements[name] = ref
            continue
        piece = m.group("piece") + ("." + m.group("param") if m.group("param") == "bias" else "")
        pieces.setdefault(m.group("module"), {})[piece] = ref
    dora = bool(cfg.get("use_dora"))
    for module, got in pieces.items():
        adapter.modules[module] = _module(adapter, module, got, dora, label)


def _module(adapter: Adapter, module: str, got: dict[str, TensorRef], dora: bool, label: str) -> LoraModule:
    cfg = adapter.config
    if "lora_A" in got and "lora_B" in got:
        a, b, kind = got["lora_A"], got["lora_B"], "conv" if len(got["lora_A"].shape) == 4 else "linear"
    elif "lora_embedding_A" in got and "lora_embedding_B" in got:
        a, b, kind = got["lora_embedding_A"], got["lora_embedding_B"], "embedding"
    else:
        raise ArtifactError(f"{adapter.folder}: {label} module {module} has {sorted(got)} but not both "
                            "LoRA matrices A and B")
    if any(d == 0 for d in a.shape + b.shape):
        raise ArtifactError(f"{adapter.folder}: {module}: a LoRA tensor has a zero-size dimension "
                            f"(A {list(a.shape)}, B {list(b.shape)}): a DeepSpeed ZeRO-3 save without gathering")
    r_default = int(cfg.get("r", 8))
    r = int(_pattern_value(cfg.get("rank_pattern") or {}, module, r_default))
    alpha = float(_pattern_value(cfg.get("alpha_pattern") or {}, module, cfg.get("lora_alpha", 8)))
    rows = a.shape[0] if kind != "embedding" else a.shape[0]
    if rows != r:
        raise ArtifactError(
            f"{adapter.folder}: {module}: lora_A has rank {rows} but adapter_config.json resolves r={r} for it "
            "(r / rank_pattern); peft would refuse to load this adapter with a size mismatch")
    if r <= 0:
        raise ArtifactError(f"{adapter.folder}: {module}: r={r} is not positive")
    scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    magnitude = got.get("lora_magnitude_vector")
    if dora and magnitude is None:
        raise ArtifactError(f"{adapter.folder}: use_dora is set but {module} has no lora_magnitude_vector")
    if magnitude is not None and kind != "linear":
        raise UsageError(f"{adapter.folder}: {module}: DoRA on a {kind} layer is not merged by vlm-doctor; "
                         "use peft's merge_and_unload()")
    bias = got.get("lora_B.bias")
    return LoraModule(module, a, b, r, alpha, scale, kind, magnitude, bias)


def get_pattern_key(pattern_keys: list[str], key_to_match: str) -> str:
    """peft's rule: the first pattern key ``k`` with ``(.*\\.)?(k)$`` matching the module name."""
    for key in pattern_keys:
        try:
            if re.match(rf"(.*\.)?({key})$", key_to_match):
                return key
        except re.error:
            continue
    return key_to_match


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    key = get_pattern_key(list(patterns), module)
    return patterns.get(key, default)


# ---- the math --------------------------------------------------------------------------------

def fold(weight: torch.Tensor, mod: LoraModule, reader: TensorReader, fan_in_fan_out: bool,
         name: str) -> torch.Tensor:
    """``weight`` (fp32, modified in place) + scale * B @ A, laid out as the base weight is;
    DoRA rescales each output row to the trained magnitude as peft's merge does."""
    a = reader.read(mod.a).float()
    b = reader.read(mod.b).float()
    if mod.kind == "embedding":  # lora_embedding_A [r, num_embeddings], B [dim, r]: delta = (B A)^T
        _check(weight, (a.shape[1], b.shape[0]), name, mod)
        weight.addmm_(a.t(), b.t(), alpha=mod.scale)
        return weight
    if mod.kind == "conv":  # A [r, in, kh, kw], B [out, r, 1, 1]
        delta = (b.flatten(1) @ a.flatten(1)).reshape(b.shape[0], *a.shape[1:])
        _check(weight, tuple(delta.shape), name, mod)
        weight.add_(delta, alpha=mod.scale)
        return weight
    out_in = (b.shape[0], a.shape[1])
    _check(weight, out_in[::-1] if fan_in_fan_out else out_in, name, mod)
    if mod.magnitude is None:
        if fan_in_fan_out:
            weight.addmm_(a.t(), b.t(), alpha=mod.scale)
        else:
            weight.addmm_(b, a, alpha=mod.scale)
        return weight
    magnitude = reader.read(mod.magnitude).float().reshape(-1)
    merged = weight.t() if fan_in_fan_out else weight  # a view: [out, in]
    merged.addmm_(b, a, alpha=mod.scale)
    norm = merged.norm(dim=1)
    merged.mul_((magnitude / norm).unsqueeze(1))
    return weight


def fold_bias(bias: torch.Tensor, mod: LoraModule, reader: TensorReader) -> torch.Tensor:
    assert mod.bias is not None
    return bias.add_(reader.read(mod.bias).float(), alpha=mod.scale)


def _check(weight: torch.Tensor, shape: tuple[int, ...], name: str, mod: LoraModule) -> None:
    if tuple(weight.shape) != tuple(shape):
        raise ArtifactError(
            f"LoRA module {mod.name} does not fit base tensor {name}: the adapter implies shape {list(shape)}, "
            f"the base has {list(weight.shape)}. The adapter was trained on another base (a 13B adapter on a "
            "7B base?): pass the base it was trained on with --base.")
