"""Which peft release knows which ``LoraConfig`` field, and what each release does with a key it
does not know. Read from peft's git history (``git log`` over ``src/peft/tuners/lora/config.py``
and ``src/peft/config.py``, tags v0.2.0 .. v0.20.0; 0.21 from the installed package).

What ``PeftConfig.from_pretrained`` does with an ``adapter_config.json`` key its ``LoraConfig``
lacks (:func:`unknown_key_behaviour`):

- peft < 0.6: builds the config from defaults and ``setattr``s only the attributes it has:
  unknown keys are **ignored silently**;
- peft 0.6 - 0.13: ``LoraConfig(**json)``: **raises** ``TypeError: LoraConfig.__init__() got an
  unexpected keyword argument 'use_dora'``;
- peft >= 0.14 (PR #2038): catches that TypeError, **warns and drops** the unknown keys.

Importing peft imports torch, so the table-based part here never imports it: the installed
version comes from package metadata (:func:`installed_peft_version`). Only
:func:`installed_lora_fields` imports peft; call it from checks that declare ``packages=("peft",)``.
"""

from __future__ import annotations

import importlib.metadata
import math
from dataclasses import dataclass
from typing import Any

from doctor.envprobe import version_tuple as parse_version

RAISE = "raise"
DROP_WITH_WARNING = "drop-with-warning"
IGNORE_SILENTLY = "ignore-silently"

#: field -> the first peft release whose LoraConfig (or PeftConfig base) has it
FIELD_ADDED: dict[str, str] = {
    # 0.2 / 0.3: the original LoraConfig and PeftConfig
    "peft_type": "0.2", "task_type": "0.2", "base_model_name_or_path": "0.2", "inference_mode": "0.2",
    "r": "0.2", "target_modules": "0.2", "lora_alpha": "0.2", "lora_dropout": "0.2",
    "fan_in_fan_out": "0.2", "bias": "0.2", "modules_to_save": "0.2",
    "init_lora_weights": "0.3",
    "auto_mapping": "0.4", "revision": "0.4", "layers_to_transform": "0.4", "layers_pattern": "0.4",
    "rank_pattern": "0.6", "alpha_pattern": "0.6",
    "megatron_config": "0.7", "megatron_core": "0.7", "loftq_config": "0.7",
    "use_rslora": "0.8",
    "use_dora": "0.9",
    "layer_replication": "0.10",
    "runtime_config": "0.12",
    "exclude_modules": "0.14", "eva_config": "0.14", "lora_bias": "0.14",
    "trainable_token_indices": "0.15", "corda_config": "0.15",
    "use_qalora": "0.16", "qalora_group_size": "0.16",
    "target_parameters": "0.17",
    "alora_invocation_tokens": "0.18", "arrow_config": "0.18", "ensure_weight_tying": "0.18", "peft_version": "0.18",
    "lora_ga_config": "0.19", "use_bdlora": "0.19",
    "velora_config": "0.20", "monteclora_config": "0.20",
    "kasa_config": "0.21",
}
#: fields a release dropped (peft 0.2's LoraConfig had them; 0.3 removed them)
FIELD_REMOVED: dict[str, str] = {"enable_lora": "0.3", "merge_weights": "0.3"}

#: LoraConfig defaults (peft 0.21.2); a key holding its default can be dropped for an older peft
FIELD_DEFAULTS: dict[str, Any] = {
    "task_type": None, "auto_mapping": None, "peft_version": None, "base_model_name_or_path": None,
    "revision": None, "inference_mode": False, "r": 8, "target_modules": None, "exclude_modules": None,
    "lora_alpha": 8, "lora_dropout": 0.0, "fan_in_fan_out": False, "bias": "none", "use_rslora": False,
    "modules_to_save": None, "init_lora_weights": True, "layers_to_transform": None, "layers_pattern": None,
    "rank_pattern": {}, "alpha_pattern": {}, "megatron_config": None, "megatron_core": "megatron.core",
    "trainable_token_indices": None, "loftq_config": {}, "eva_config": None, "corda_config": None,
    "lora_ga_config": None, "use_dora": False, "velora_config": None, "alora_invocation_tokens": None,
    "use_qalora": False, "qalora_group_size": 16, "monteclora_config": None, "layer_replication": None,
    "lora_bias": False, "target_parameters": None, "use_bdlora": None, "arrow_config": None,
    "kasa_config": None, "ensure_weight_tying": False,
}

#: keys that only describe the file (who wrote it), never how the adapter computes: always droppable
METADATA_FIELDS = frozenset({"peft_version", "auto_mapping", "revision", "runtime_config", "inference_mode"})

#: why a non-default value cannot simply be dropped
FIELD_MEANING: dict[str, str] = {
    "use_dora": "DoRA adds a learned magnitude per module (lora_magnitude_vector); without it the adapter "
                "computes a different function",
    "use_rslora": "rsLoRA scales by lora_alpha/sqrt(r) instead of lora_alpha/r",
    "layer_replication": "the base model's layers are duplicated before the adapter is applied",
    "lora_bias": "lora_B carries a trained bias",
    "exclude_modules": "it removes modules that target_modules would otherwise adapt",
    "trainable_token_indices": "it trains embedding rows of selected tokens",
    "target_parameters": "it adapts nn.Parameters (e.g. MoE experts), not modules",
    "alora_invocation_tokens": "activated LoRA only applies after the invocation tokens",
    "use_qalora": "QA-LoRA pools the input before lora_A",
    "ensure_weight_tying": "it ties the adapters of tied embedding and output layers",
    "layers_to_transform": "it limits the adapted layers",
    "layers_pattern": "it names the layer list that layers_to_transform indexes",
    "rank_pattern": "it gives some modules another rank",
    "alpha_pattern": "it gives some modules another lora_alpha",
    "use_bdlora": "BD-LoRA changes the adapter's structure",
    "megatron_config": "the adapter is built for Megatron parallel layers",
}


@dataclass(frozen=True)
class KeyCompat:
    """One adapter_config.json key as seen by one peft version."""

    key: str
    value: Any
    added_in: str | None   # None: no peft release has this LoraConfig field
    is_default: bool
    droppable: bool         # safe to remove for an older peft
    reason: str | None      # why not, when not droppable




def installed_peft_version() -> str | None:
    """The installed peft version from package metadata (no import), or None."""
    try:
        return importlib.metadata.version("peft")
    except importlib.metadata.PackageNotFoundError:
        return None


def unknown_key_behaviour(version: str) -> str:
    """What ``PeftConfig.from_pretrained`` of that peft does with a key LoraConfig lacks:
    :data:`IGNORE_SILENTLY` (< 0.6), :data:`RAISE` (0.6 - 0.13), :data:`DROP_WITH_WARNING` (>= 0.14)."""
    v = parse_version(version)
    if v < (0, 6):
        return IGNORE_SILENTLY
    if v < (0, 14):
        return RAISE
    return DROP_WITH_WARNING


def describe_behaviour(behaviour: str, version: str, keys: list[str]) -> str:
    """A sentence for a finding: what peft ``version`` would do with these unknown ``keys``."""
    shown = ", ".join(repr(k) for k in keys)
    if behaviour == RAISE:
        return (f"peft {version} raises TypeError: LoraConfig.__init__() got an unexpected keyword argument "
                f"'{keys[0]}'")
    if behaviour == DROP_WITH_WARNING:
        return f"peft {version} warns 'Unexpected keyword arguments [{shown}] ... ignored' and drops them"
    return f"peft {version} ignores {shown} without a word"


def fields_known_by(version: str) -> frozenset[str]:
    """LoraConfig/PeftConfig fields of that peft release, from the table."""
    v = parse_version(version)
    known = {k for k, added in FIELD_ADDED.items() if parse_version(added) <= v}
    known |= {k for k, removed in FIELD_REMOVED.items() if v < parse_version(removed)}
    return frozenset(known)


def installed_lora_fields() -> frozenset[str]:
    """The installed peft's LoraConfig fields.

    Read from the installed source (the annotated fields of ``LoraConfig``, ``PeftConfig`` and
    ``PeftConfigMixin``, parsed with ``ast``: importing peft imports torch, seconds of start-up),
    falling back to ``dataclasses.fields(peft.LoraConfig)`` when the source is not laid out as
    expected. A test asserts both agree."""
    fields = _fields_from_source()
    if fields:
        return fields
    return installed_lora_fields_by_import()


def installed_lora_fields_by_import() -> frozenset[str]:
    """``dataclasses.fields(peft.LoraConfig)``: the ground truth. Imports peft (and torch)."""
    import dataclasses

    import peft

    return frozenset(f.name for f in dataclasses.fields(peft.LoraConfig) if f.init)


def _fields_from_source() -> frozenset[str] | None:
    import ast
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("peft")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    wanted = {root / "tuners" / "lora" / "config.py": {"LoraConfig"},
              root / "config.py": {"PeftConfig", "PeftConfigMixin"}}
    found: set[str] = set()
    seen: set[str] = set()
    for file, classes in wanted.items():
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            return None
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name in classes:
                seen.add(node.name)
                found |= {s.target.id for s in node.body
                          if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                          and not _is_classvar(s.annotation)}
    if seen != {"LoraConfig", "PeftConfig", "PeftConfigMixin"} or "r" not in found:
        return None
    return frozenset(found)


def _is_classvar(annotation: object) -> bool:
    import ast

    text = ast.unparse(annotation) if isinstance(annotation, ast.AST) else ""
    return text.startswith(("ClassVar", "typing.ClassVar"))


def is_default(key: str, value: Any) -> bool:
    """True when ``value`` is LoraConfig's default for ``key`` (empty containers count as null)."""
    if key not in FIELD_DEFAULTS:
        return False
    default = FIELD_DEFAULTS[key]
    if value == default and type(value) is type(default) or value is default:
        return True
    empty = (None, {}, [])
    return value in empty and default in empty


def min_version_for(config: dict[str, Any]) -> tuple[str, list[str]]:
    """The oldest peft whose LoraConfig knows every key of ``config``, and the keys that need it."""
    best = (0, 2)
    keys: list[str] = []
    for key in config:
        added = FIELD_ADDED.get(key)
        if added is None:
            continue
        v = parse_version(added)
        if v > best:
            best, keys = v, [key]
        elif v == best:
            keys.append(key)
    return ".".join(map(str, best)), keys


def check_keys(config: dict[str, Any], known: frozenset[str] | set[str]) -> list[KeyCompat]:
    """The keys of ``config`` not in ``known``, each with whether dropping it is safe."""
    out = []
    for key, value in config.items():
        if key in known:
            continue
        default = is_default(key, value)
        droppable = default or key in METADATA_FIELDS
        reason = None
        if not droppable:
            meaning = FIELD_MEANING.get(key, "its value is not LoraConfig's default")
            reason = f"{key}={value!r} matters: {meaning}"
        out.append(KeyCompat(key, value, FIELD_ADDED.get(key), default, droppable, reason))
    return out


def converts_legacy_vlm_keys(peft_version: str, transformers_version: str) -> bool:
    """Whether ``PeftModel.from_pretrained`` renames adapter keys saved with transformers < 4.52
    (``language_model.model.layers...``) onto the >= 4.52 module tree by itself.

    transformers 4.52-4.x: peft >= 0.16 passes the model's ``_checkpoint_conversion_mapping`` as
    ``key_mapping`` (peft PR #2574). transformers 5.x has no such attribute; peft >= 0.19 applies
    transformers' weight-conversion mapping instead (peft PR #3083). Below 4.52 nothing needs
    renaming. Adapters saved with >= 4.52 are never renamed back for an older transformers."""
    t, p = parse_version(transformers_version), parse_version(peft_version)
    if t < (4, 52):
        return True
    if t < (5,):
        return p >= (0, 16)
    return p >= (0, 19)


def rslora_equivalent_alpha(alpha: float, r: int) -> float:
    """The plain-LoRA ``lora_alpha`` with the same scale as rsLoRA's ``alpha/sqrt(r)``."""
    return alpha * math.sqrt(r)


__all__ = [
    "RAISE", "DROP_WITH_WARNING", "IGNORE_SILENTLY", "FIELD_ADDED", "FIELD_REMOVED", "FIELD_DEFAULTS",
    "METADATA_FIELDS", "FIELD_MEANING", "KeyCompat", "parse_version", "installed_peft_version",
    "unknown_key_behaviour", "describe_behaviour", "fields_known_by", "installed_lora_fields", "is_default",
    "min_version_for", "check_keys", "rslora_equivalent_alpha", "converts_legacy_vlm_keys",
]
