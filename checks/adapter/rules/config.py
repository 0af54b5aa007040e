"""ADP001-ADP0xx on adapter_config.json itself: JSON, fields, values, and what the installed peft accepts."""

from __future__ import annotations

import math
from typing import Any

from doctor.checks.adapter.common import ADAPTER
from doctor.checks.adapter.fixtures import Versions
from doctor.checks.adapter.reading import JsonDoc

from doctor import peft_compat
from doctor.findings import Applicability, Fix, Location, Severity
from doctor.registry import Check, register

PEFT_TYPES = frozenset({
    "PROMPT_TUNING", "MULTITASK_PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "LORA", "ADALORA", "ADAMSS", "BOFT",
    "ADAPTION_PROMPT", "IA3", "BEFT", "LILY", "LOHA", "LOKR", "OFT", "POLY", "LN_TUNING", "VERA", "FROD", "PVERA",
    "FOURIERFT", "GLORA", "XLORA", "HRA", "VBLORA", "UNILORA", "CPT", "MISS", "RANDLORA", "ROAD", "TRAINABLE_TOKENS",
    "HIRA", "SHIRA", "C3A", "WAVEFT", "OSF", "DELORA", "GRALORA", "CARTRIDGE", "TINYLORA", "PSOFT", "PEANUT",
    "SHADOW", "SUPERTUNING", "DEFT", "BONE",
})  # peft 0.21.2's PeftType (+ BONE, renamed MISS in 0.15)
TASK_TYPES = frozenset({"SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION"})
WEAK_SCALE, STRONG_SCALE = 0.25, 32.0


def _cfg(path: str) -> str:
    return f"{path}/adapter_config.json"


@register
class AdapterConfigInvalid(Check):
    """adapter_config.json is missing, is not valid JSON, or has no `peft_type`.

    ## What it does
    Parses adapter_config.json and reports the parser's message with its line and column, a
    top level that is not an object, or a missing `peft_type`.

    ## Why is this bad?
    `PeftModel.from_pretrained` starts by reading this file: `json.decoder.JSONDecodeError`,
    `ValueError: Can't find 'adapter_config.json'`, or `KeyError: 'peft_type'`.

    ## Example
    `{"r": 8, "lora_alpha": 16,}` (a trailing comma), or a folder saved without its config.

    ## How to fix
    Repair the JSON at the reported position, or copy adapter_config.json from the training
    run's output folder (the adapter_config.json written beside adapter_model.safetensors).
    """

    code = "ADP001"
    name = "adapter-config-invalid"
    artifacts = ADAPTER

    def run(self, adapter_config_doc: JsonDoc, path: str):
        doc = adapter_config_doc
        if not doc.exists:
            yield self.finding("adapter_config.json is missing", path=_cfg(path))
        elif doc.error:
            loc = Location(line=doc.line, column=doc.column) if doc.line else None
            yield self.finding(f"adapter_config.json is not valid JSON: {doc.error}", path=_cfg(path), location=loc)
        elif not isinstance(doc.data, dict):
            yield self.finding(f"adapter_config.json holds a {type(doc.data).__name__}, not an object",
                               path=_cfg(path), location=Location(pointer=""))
        elif not isinstance(doc.data.get("peft_type"), str):
            yield self.finding("adapter_config.json has no peft_type string", path=_cfg(path),
                               location=Location(key="peft_type"),
                               hint='Add "peft_type": "LORA" (the adapter tensors are named lora_A / lora_B).')


@register
class UnknownPeftType(Check):
    """`peft_type` or `task_type` is not a value peft knows.

    ## What it does
    Compares `peft_type` with peft's `PeftType` and `task_type` with `TaskType`.

    ## Why is this bad?
    An unknown `peft_type` fails with `KeyError` in `PEFT_TYPE_TO_CONFIG_MAPPING`; an unknown
    `task_type` raises `ValueError: Invalid task type` in `PeftConfig.__post_init__`.

    ## Example
    `"peft_type": "lora"` written by hand is fine (upper-cased by the enum); `"peft_type": "QLORA"` is not.

    ## How to fix
    Use `"peft_type": "LORA"` for QLoRA/LoRA adapters and `"task_type": "CAUSAL_LM"` (or null).
    """

    code = "ADP002"
    name = "unknown-peft-type"
    artifacts = ADAPTER
    requires = ("ADP001",)

    def run(self, adapter_config: dict[str, Any], path: str):
        peft_type = adapter_config.get("peft_type")
        if str(peft_type).upper() not in PEFT_TYPES:
            yield self.finding(f"peft_type {peft_type!r} is not a PEFT method", path=_cfg(path),
                               location=Location(key="peft_type"))
        task = adapter_config.get("task_type")
        if task is not None and task not in TASK_TYPES:
            yield self.finding(f"task_type {task!r} is not one of {', '.join(sorted(TASK_TYPES))}; peft raises "
                               "ValueError: Invalid task type", path=_cfg(path), location=Location(key="task_type"),
                               hint="Set task_type to CAUSAL_LM for a LLaVA language-model LoRA, or null.")


@register
class LoraHyperparameterInvalid(Check):
    """`r`, `lora_alpha`, `lora_dropout` or `bias` has a value LoRA cannot use.

    ## What it does
    Checks `r` is an integer >= 1, `lora_alpha` a positive number, `lora_dropout` in [0, 1),
    `bias` one of none / all / lora_only, and the values of `rank_pattern` / `alpha_pattern`.

    ## Why is this bad?
    peft builds `lora_A` with `r` rows: `r` 0 raises `ValueError: r should be a positive
    integer`; an unknown `bias` raises `NotImplementedError`; a dropout outside [0, 1] raises in
    `torch.nn.Dropout`; `lora_alpha` 0 loads and scales every update to nothing (a silently unchanged
    model). Errors. A negative `lora_alpha` and dropout 1 load: the first flips the update's sign
    (right only if the adapter was trained with it), the second zeroes LoRA's input in training
    only; warnings.

    ## Example
    `{"r": 0, "lora_alpha": 16}` or `{"lora_dropout": 5}` (meant 0.05).

    ## How to fix
    Set `r` to the first dimension of any `lora_A` tensor and `lora_alpha` to the training value.
    """

    code = "ADP003"
    name = "lora-hyperparameter-invalid"
    artifacts = ADAPTER
    requires = ("ADP001",)

    def run(self, lora_config: dict[str, Any], path: str):
        r, alpha, dropout = lora_config.get("r"), lora_config.get("lora_alpha"), lora_config.get("lora_dropout", 0.0)
        if not _is_int(r) or r < 1:
            yield self.finding(f"r is {r!r}; it must be an integer >= 1", path=_cfg(path), location=Location(key="r"))
        if not _is_num(alpha) or alpha == 0:
            effect = "the update is scaled by 0: the adapter changes nothing" if alpha == 0 else \
                "peft cannot compute the scale lora_alpha / r"
            yield self.finding(f"lora_alpha is {alpha!r}; it must be a positive number ({effect})", path=_cfg(path),
                               location=Location(key="lora_alpha"))
        elif alpha < 0:
            yield self.finding(f"lora_alpha is {alpha!r}: peft loads it and flips the sign of every update; right only "
                               "if the adapter was trained with it", path=_cfg(path),
                               location=Location(key="lora_alpha"), severity=Severity.WARNING)
        if dropout is not None and (not _is_num(dropout) or not 0 <= dropout <= 1):
            yield self.finding(f"lora_dropout is {dropout!r}; it must be in [0, 1) (torch.nn.Dropout raises)",
                               path=_cfg(path), location=Location(key="lora_dropout"), hint="Use a fraction such as 0.05.")
        elif dropout == 1:
            yield self.finding("lora_dropout is 1: the adapter loads (dropout is off at inference), but training with "
                               "it zeroes every LoRA input and learns nothing", path=_cfg(path),
                               location=Location(key="lora_dropout"), severity=Severity.WARNING,
                               hint="Use a fraction such as 0.05.")
        bias = lora_config.get("bias", "none")
        if bias not in ("none", "all", "lora_only"):
            yield self.finding(f"bias is {bias!r}; peft accepts none, all or lora_only", path=_cfg(path),
                               location=Location(key="bias"))
        for key, check in (("rank_pattern", _is_int), ("alpha_pattern", _is_num)):
            pattern = lora_config.get(key) or {}
            if not isinstance(pattern, dict):
                yield self.finding(f"{key} must be an object of module pattern -> value", path=_cfg(path),
                                   location=Location(key=key))
                continue
            for k, v in pattern.items():
                if not check(v) or v <= 0:
                    yield self.finding(f"{key}[{k!r}] is {v!r}; it must be a positive "
                                       f"{'integer' if key == 'rank_pattern' else 'number'}",
                                       path=_cfg(path), location=Location(pointer=Location.json_pointer(key, k)))


@register
class LoraScaleExtreme(Check):
    """The LoRA scale (`lora_alpha / r`, or `/ sqrt(r)` with `use_rslora`) is extreme.

    ## What it does
    Computes the scale peft multiplies `B @ A` by and warns at or below 0.25 or at or above 32.

    ## Why is this bad?
    LLaVA's `train.py` defaults (`lora_r` 64, `lora_alpha` 16) give 0.25, and users report
    "LoRA had no effect"; LLaVA's own scripts use r 128, alpha 256 (scale 2). A huge scale makes
    training unstable and a merged model drift far from the base.

    ## Example
    `{"r": 64, "lora_alpha": 16}` -> scale 0.25.

    ## How to fix
    Retrain with `lora_alpha` about 2 x `r` (LLaVA: `--lora_r 128 --lora_alpha 256`).
    """

    code = "ADP004"
    name = "lora-scale-extreme"
    severity = Severity.WARNING
    artifacts = ADAPTER
    requires = ("ADP003",)

    def run(self, lora_config: dict[str, Any], path: str):
        r, alpha = lora_config.get("r"), lora_config.get("lora_alpha")
        rslora = bool(lora_config.get("use_rslora"))
        scale = alpha / (math.sqrt(r) if rslora else r)
        formula = f"{alpha}/sqrt({r})" if rslora else f"{alpha}/{r}"
        if scale <= WEAK_SCALE:
            yield self.finding(f"LoRA scale is {formula} = {scale:.3g}: the update is damped to a quarter or less",
                               path=_cfg(path), location=Location(key="lora_alpha"),
                               hint=f"Retrain with lora_alpha = {2 * r} (2 x r), as LLaVA's finetune_lora.sh does.")
        elif scale >= STRONG_SCALE:
            yield self.finding(f"LoRA scale is {formula} = {scale:.3g}: very large updates", path=_cfg(path),
                               location=Location(key="lora_alpha"),
                               hint=f"Retrain with lora_alpha about {2 * r} or check use_rslora.")


@register
class ConfigKeyUnknownToInstalledPeft(Check):
    """adapter_config.json has keys the installed peft's `LoraConfig` does not know.

    ## What it does
    Compares the keys with the fields of the installed `peft.LoraConfig` dataclass and says what
    that peft does with the rest: raise (0.6 - 0.13), warn and drop (>= 0.14), or ignore (< 0.6).

    ## Why is this bad?
    peft 0.6 - 0.13 fail with `TypeError: LoraConfig.__init__() got an unexpected keyword
    argument 'use_dora'`. Newer releases drop the key: harmless at its default, but a dropped
    `use_dora: true` or `use_rslora: true` silently computes a different function.

    ## Example
    An adapter saved by peft 0.9 (`"use_dora": false`) loaded with peft 0.8.

    ## How to fix
    Upgrade peft (`pip install -U peft`), or write a copy without the keys that hold their
    default values (`vlm-doctor check ADAPTER --fix`).
    """

    code = "ADP006"
    name = "config-key-unknown-to-peft"
    artifacts = ADAPTER
    requires = ("ADP001",)
    packages = ("peft",)

    def run(self, lora_config: dict[str, Any], versions: Versions, path: str):
        version = versions.peft or "?"
        if version == peft_compat.installed_peft_version():
            known = peft_compat.installed_lora_fields()
        else:  # judging for another peft (``peft_version=`` option): the table
            known = peft_compat.fields_known_by(version)
        unknown = peft_compat.check_keys(lora_config, known | {"runtime_config"})
        if not unknown:
            return
        behaviour = peft_compat.unknown_key_behaviour(version)
        keys = [k.key for k in unknown]
        effect = peft_compat.describe_behaviour(behaviour, version, keys)
        blocked = [k for k in unknown if not k.droppable]
        newer = [f"{k.key} (peft >= {k.added_in})" for k in unknown if k.added_in]
        upgrade = f"Upgrade peft: {', '.join(newer)}." if newer else "These keys come from another tool or a fork."
        if behaviour == peft_compat.RAISE or any(k.added_in for k in blocked):
            severity = Severity.ERROR      # raises, or silently computes another function
        elif blocked:
            severity = Severity.WARNING    # a key no peft release has, with a non-default value
        else:
            severity = Severity.INFO
        fix = None
        if not blocked:
            fix = Fix(f"write a copy without {', '.join(keys)} (all at their defaults)", Applicability.SAFE,
                      fixer="adapter_config", params={"drop_keys": keys})
        reasons = "; ".join(k.reason for k in blocked if k.reason)
        msg = f"keys peft {version}'s LoraConfig does not know: {', '.join(keys)}; {effect}"
        if reasons:
            msg += f". Dropping is not safe: {reasons}"
        yield self.finding(msg, path=_cfg(path), location=Location(key=keys[0]), severity=severity, fix=fix,
                           hint=upgrade if blocked or not fix else f"{upgrade} Or apply the fix to write a copy.")


@register
class ConfigNeedsNewerPeft(Check):
    """adapter_config.json only loads on a recent peft; older releases raise on its keys.

    ## What it does
    Finds, from the table of which peft release added which `LoraConfig` field, the oldest peft
    that knows every key, and the oldest that would load a copy without the keys at their
    defaults. Informational: the installed peft is judged by ADP006.

    ## Why is this bad?
    Adapters are shared: on peft 0.6 - 0.13 (the LLaVA era) each key added later is a
    `TypeError: LoraConfig.__init__() got an unexpected keyword argument`.

    ## Example
    A peft 0.18 adapter (`"alora_invocation_tokens": null`, `"peft_version": "0.18.0"`) loaded on 0.13.

    ## How to fix
    Publish the compatible copy `--fix --unsafe-fixes` writes beside the adapter (opt-in, since
    the installed peft needs no change), or state the minimum peft.
    """

    code = "ADP007"
    name = "config-needs-newer-peft"
    severity = Severity.INFO
    artifacts = ADAPTER
    requires = ("ADP001",)

    def run(self, lora_config: dict[str, Any], path: str):
        need, keys = peft_compat.min_version_for(lora_config)
        if peft_compat.parse_version(need) < (0, 6):
            return
        all_keys = set(lora_config)
        droppable = [c.key for c in peft_compat.check_keys(lora_config, peft_compat.fields_known_by("0.5"))
                     if c.droppable and c.key in all_keys]
        reduced = {k: v for k, v in lora_config.items() if k not in droppable}
        after, after_keys = peft_compat.min_version_for(reduced)
        msg = f"needs peft >= {need} (for {', '.join(sorted(keys))}); peft 0.6 - 0.13 raise TypeError on newer keys"
        fix = None
        if peft_compat.parse_version(after) < peft_compat.parse_version(need):
            msg += f"; without the {len(droppable)} keys at their defaults it loads on peft >= {after}"
            # Opt-in: the installed peft reads the file as it is, so a copy is only worth writing
            # for someone who must ship to an older peft (ruff's "unsafe" = not applied by default).
            fix = Fix(f"write a copy for peft >= {after}", Applicability.UNSAFE, fixer="adapter_config",
                      params={"drop_keys": droppable})
        elif after_keys:
            msg += f"; {', '.join(sorted(after_keys))} hold non-default values that need it"
        yield self.finding(msg, path=_cfg(path), location=Location(key=sorted(keys)[0]), fix=fix)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# The rest of the family registers on import.
