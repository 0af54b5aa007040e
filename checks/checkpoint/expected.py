"""What ``from_pretrained`` would do with a folder's tensors, computed without reading a weight.

The model class is instantiated from config.json on the meta device (no memory, no weights), which
gives every parameter and persistent buffer with its shape. The checkpoint's on-disk names are then
mapped to in-memory names with the INSTALLED transformers' own machinery:

- 5.x: ``conversion_mapping.get_model_conversion_mapping`` + ``core_model_loading.rename_source_key``
  (the 4.x layout ``language_model.model.*`` and the in-memory layout both load);
- 4.52-4.57: the class's ``_checkpoint_conversion_mapping`` regexes (first match wins);
- older: names as they are, plus the ``base_model_prefix`` add/strip every release does.

Then the load report is reproduced: tied weights (``lm_head`` absent when tied) and the
``_keys_to_ignore_on_load_*`` patterns are honoured, like ``from_pretrained``'s
``output_loading_info``.

The model only has to be built once per config structure: what the prediction needs from it is
kept as a template (``doctor.checks.checkpoint.templates``), so a warm run imports neither torch
nor transformers.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.checks.checkpoint.fixtures import ModelWeights, is_lora_name

VLM_AUTO_CLASSES = ("AutoModelForImageTextToText", "AutoModelForVision2Seq", "AutoModelForCausalLM", "AutoModel")


class BuildError(Exception):
    """transformers could not build the model from config.json."""


@dataclass
class LoadPrediction:
    model_class: str
    expected: dict[str, tuple[int, ...]]  # in-memory name -> shape
    mapped: dict[str, str] = field(default_factory=dict)  # on-disk name -> in-memory name (matched)
    renamed: dict[str, str] = field(default_factory=dict)  # on-disk name -> the name transformers gives it
    missing: list[str] = field(default_factory=list)  # in-memory names left at random init
    unexpected: list[str] = field(default_factory=list)  # on-disk names transformers drops
    mismatched: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    tied: dict[str, str] = field(default_factory=dict)  # target -> source
    saved_names: dict[str, str] = field(default_factory=dict)  # missing in-memory name -> name save_pretrained writes

    def saved_name(self, memory_name: str) -> str:
        return self.saved_names.get(memory_name, memory_name)

    @property
    def unexpected_as_loaded(self) -> list[str]:
        """The unexpected names as ``from_pretrained``'s ``unexpected_keys`` spells them."""
        return sorted(self.renamed[k] for k in self.unexpected)


def predict_load(folder: Path, weights: ModelWeights | None, *, use_templates: bool = True) -> LoadPrediction:
    """Predict ``from_pretrained(folder, output_loading_info=True)``'s report (without weights:
    only build the model, so a config transformers cannot build is still reported).

    A known config is answered from its cached template (``templates``: no torch, no transformers);
    otherwise the model is built on the meta device, and its template learned for the next run."""
    from doctor.checks.checkpoint import templates
    from doctor.checks.checkpoint.fixtures import load_json_dict

    config = load_json_dict(folder / "config.json")
    _refuse_absurd_depth(config or {})
    if use_templates and config is not None:
        template = templates.lookup(config)
        if template is None:
            try:
                with _quiet():
                    template = templates.learn(config, _build_from_dict)
            except BuildError:
                template = None  # the full build below reports the error as from_pretrained would
        if template is not None:
            try:
                expected = template.expected(config)
                return assemble(template.model_class, expected, template.tied, template.mapper(expected),
                                template.namer(), template.ignore_missing, template.ignore_unexpected, weights)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError, re.error):
                pass  # a damaged cache entry: build the model below
    with _quiet():
        model = build_meta_model(folder)
    state = model.state_dict(keep_vars=True)
    expected = {k: tuple(v.shape) for k, v in state.items()}
    ignore_missing, ignore_unexpected = ignore_patterns(model)
    return assemble(type(model).__name__, expected, tied_pairs(model, state), key_mapper(model, expected),
                    save_namer(model), ignore_missing, ignore_unexpected, weights)


def assemble(model_class: str, expected: dict[str, tuple[int, ...]], tied: dict[str, str],
             mapper: Callable[[str], tuple[str, bool]], namer: Callable[[str], str], ignore_missing: list[str],
             ignore_unexpected: list[str], weights: ModelWeights | None) -> LoadPrediction:
    """The load report, from what the model (or its template) says."""
    pred = LoadPrediction(model_class, expected, tied=dict(tied))
    if weights is None:
        return pred
    present: set[str] = set()
    for disk, t in weights.tensors.items():
        mem, converted = mapper(disk)
        pred.renamed[disk] = mem
        if mem in expected:
            pred.mapped[disk] = mem
            present.add(mem)
            if not converted and tuple(t.shape) != expected[mem]:
                pred.mismatched.append((disk, mem, tuple(t.shape), expected[mem]))
        else:
            pred.unexpected.append(disk)
    missing = set(expected) - present
    for target, source in tied.items():
        if target in missing and source not in missing:
            missing.discard(target)
        elif source in missing and target not in missing:
            missing.discard(source)
    skip_missing, skip_unexpected = _compile(ignore_missing), _compile(ignore_unexpected)
    pred.missing = sorted(k for k in missing if not (skip_missing and skip_missing.search(k)))
    pred.saved_names = {k: namer(k) for k in pred.missing}
    pred.unexpected = sorted(k for k in pred.unexpected
                             if not (skip_unexpected and skip_unexpected.search(pred.renamed[k])))
    return pred


def _compile(patterns: list[str]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"({p})" for p in patterns)) if patterns else None


MAX_LAYERS = 1024  # far above any real model; a bogus count would build millions of modules


def build_meta_model(folder: Path) -> Any:
    """The model class of config.json, instantiated on the meta device."""
    from doctor.checks.checkpoint.fixtures import load_json_dict

    _refuse_absurd_depth(load_json_dict(folder / "config.json") or {})
    import torch
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(str(folder))
    except Exception as e:  # noqa: BLE001 - any failure here is what the user would see
        raise BuildError(f"AutoConfig.from_pretrained failed: {type(e).__name__}: {e}") from None
    cls = model_class(config)
    if cls is None:
        raise BuildError(f"no transformers model class for {type(config).__name__}")
    try:
        with torch.device("meta"):
            return cls._from_config(config)
    except Exception as e:  # noqa: BLE001
        raise BuildError(f"{cls.__name__} cannot be built from config.json: {type(e).__name__}: {e}") from None


def _build_from_dict(config: dict[str, Any]) -> Any:
    """``build_meta_model`` of a folder holding only this config.json (templates learn from it)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vlm-doctor-config-") as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(config), encoding="utf-8")
        return build_meta_model(Path(tmp))


def _refuse_absurd_depth(config: dict[str, Any]) -> None:
    """Meta tensors cost no memory, but every layer is a Python module: a config that declares
    10**12 layers would exhaust memory before any check could report it."""
    stack: list[tuple[str, Any]] = [("", config)]
    while stack:
        prefix, node = stack.pop()
        for key, value in node.items():
            if isinstance(value, dict):
                stack.append((f"{prefix}{key}.", value))
            elif (re.fullmatch(r"(num_\w*layers|n_layers?|num_hidden_layers|depth)", key) and isinstance(value, int)
                  and not isinstance(value, bool) and value > MAX_LAYERS):
                raise BuildError(f"config.json declares {prefix}{key} = {value:,}: not a real model (refusing to "
                                 "build it; from_pretrained would exhaust memory)")


def model_class(config: Any) -> Any:
    """``architectures[0]`` when transformers has it, else the first Auto class that maps the config."""
    import transformers

    archs = getattr(config, "architectures", None)
    for arch in archs if isinstance(archs, list) else []:
        cls = getattr(transformers, arch, None) if isinstance(arch, str) else None
        if cls is not None and hasattr(cls, "_from_config"):
            return cls
        break
    for auto in VLM_AUTO_CLASSES:
        mapping = getattr(getattr(transformers, auto, None), "_model_mapping", None)
        if mapping is None:
            continue
        try:
            return mapping[type(config)]
        except (KeyError, ValueError):
            continue
    return None


def tied_pairs(model: Any, state: dict[str, Any]) -> dict[str, str]:
    """target -> source of every tied parameter: 5.x declares them (``all_tied_weights_keys``);
    4.x ties by sharing one Parameter, visible as one object under two names."""
    pairs = dict(getattr(model, "all_tied_weights_keys", None) or {})
    by_id: dict[int, list[str]] = {}
    for name, tensor in state.items():
        by_id.setdefault(id(tensor), []).append(name)
    for names in by_id.values():
        for other in names[1:]:
            pairs.setdefault(other, names[0])
    return pairs


def ignore_patterns(model: Any) -> tuple[list[str], list[str]]:
    """The ``_keys_to_ignore_on_load_missing`` / ``_unexpected`` patterns, plus the buffers every
    release drops from checkpoints (rotary ``inv_freq``, ``position_ids``)."""
    missing = set(getattr(model, "_keys_to_ignore_on_load_missing", None) or [])
    unexpected = set(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])
    buffers = [n for n, _ in model.named_buffers()]
    if any(n.endswith("rotary_emb.inv_freq") for n in buffers):
        unexpected.add(r"rotary_emb\.inv_freq")
    if any(n.endswith("position_ids") for n in buffers):
        unexpected.add(r"(^|\.)position_ids$")

    return sorted(missing), sorted(unexpected)


def key_mapper(model: Any, expected: dict[str, Any]) -> Callable[[str], tuple[str, bool]]:
    """on-disk name -> (in-memory name, renamed by a many-to-one converter)."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:
        return _legacy_mapper(model, expected, prefix)
    try:
        conversions = get_model_conversion_mapping(model)
    except Exception:  # noqa: BLE001 - an API change in a future release: fall back to plain names
        return _legacy_mapper(model, expected, prefix)
    renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
    converters = [c for c in conversions if isinstance(c, WeightConverter)]

    def mapper(key: str) -> tuple[str, bool]:
        renamed, pattern = rename_source_key(key, renamings, converters, prefix, expected)
        if renamed not in expected and key in expected:
            renamed, pattern = rename_source_key(key, [], [], base_model_prefix=prefix, meta_state_dict=expected)
        return renamed, pattern is not None

    return mapper


def save_namer(model: Any) -> Callable[[str], str]:
    """in-memory name -> the name ``save_pretrained`` writes (transformers 5 reverts its conversion
    mapping on save, as ``core_model_loading.revert_weight_conversion`` does); identity on 4.x."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import PrefixChange, WeightConverter, WeightRenaming, rename_source_key

        conversions = [c for c in get_model_conversion_mapping(model, add_legacy=False)
                       if not isinstance(c, PrefixChange)]
        reverse = [c.reverse_transform() for c in conversions[::-1]]
    except Exception:  # noqa: BLE001 - 4.x (no such API) or a future change: names as in memory
        return lambda name: name
    renamings = [c for c in reverse if isinstance(c, WeightRenaming)]
    converters = [c for c in reverse if isinstance(c, WeightConverter)]

    def namer(name: str) -> str:
        try:
            return rename_source_key(name, renamings, converters, reverse=True)[0]
        except Exception:  # noqa: BLE001
            return name

    return namer


def _legacy_mapper(model: Any, expected: dict[str, Any], prefix: str) -> Callable[[str], tuple[str, bool]]:
    """transformers 4.x: the class's key-mapping regexes (4.52+), then base_model_prefix handling."""
    key_mapping = getattr(type(model), "_checkpoint_conversion_mapping", None) or {}
    expects_prefix = bool(prefix) and any(k.startswith(prefix + ".") for k in expected)

    def mapper(key: str) -> tuple[str, bool]:
        new = key
        for pattern, replacement in key_mapping.items():
            new, n = re.subn(pattern, replacement, new)
            if n:
                break
        new = new.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if new not in expected and prefix:
            if expects_prefix and f"{prefix}.{new}" in expected:
                new = f"{prefix}.{new}"
            elif new.startswith(prefix + ".") and new[len(prefix) + 1:] in expected:
                new = new[len(prefix) + 1:]
        return new, False

    return mapper


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' logger (load reports, config warnings) while building the model."""
    try:
        from transformers.utils import logging as tlog
    except ImportError:
        yield
        return
    level = tlog.get_verbosity()
    tlog.set_verbosity_error()
    try:
        yield
    finally:
        tlog.set_verbosity(level)


def split_lora(names: list[str]) -> tuple[list[str], list[str]]:
    """(LoRA leftovers, the rest)."""
    lora = [n for n in names if is_lora_name(n)]
    return lora, [n for n in names if not is_lora_name(n)]
