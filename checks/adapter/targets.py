"""Which base modules a LoraConfig adapts, replayed from peft 0.21's ``check_target_module_exists``
and ``_maybe_include_all_linear_layers`` on module names read from tensor headers.

- ``target_modules`` a string: ``re.fullmatch`` against every module name (``"all-linear"``,
  any case, means every Linear except the output layer);
- a list: a module matches an entry when its name equals it or ends with ``"." + entry``;
- ``exclude_modules`` (same two forms) and ``modules_to_save`` (never adapted) win over targets;
- ``layers_to_transform`` / ``layers_pattern`` keep only modules in the listed layer indices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from doctor.checks.adapter.reading import BaseModel

from doctor import layouts

ALL_LINEAR = "all-linear"


@dataclass
class Resolution:
    mode: str                                   # "list" | "regex" | "all-linear" | "none" | "invalid"
    matched: list[str] = field(default_factory=list)          # modules peft wraps
    per_entry: dict[str, list[str]] = field(default_factory=dict)  # list mode: entry -> modules
    unsupported: list[str] = field(default_factory=list)      # matched, but no Linear/Embedding/Conv
    error: str | None = None                    # a regex that does not compile, a bad type

    @property
    def empty_entries(self) -> list[str]:
        return [e for e, m in self.per_entry.items() if not m]


def resolve(config: dict[str, Any], base: BaseModel) -> Resolution:
    """Replay peft's target matching over ``base.all_modules``."""
    targets = config.get("target_modules")
    if targets is None:
        return Resolution("none")
    names = sorted(base.all_modules)
    try:
        excluded = _excluded(config, names)
    except re.error as e:
        return Resolution("invalid", error=f"exclude_modules is not a valid regex: {e}")
    if isinstance(targets, str):
        if targets.lower() == ALL_LINEAR:
            matched = [n for n, m in base.modules.items() if m.kind == "linear" and n != base.output_module]
            return Resolution(ALL_LINEAR, sorted(set(matched) - excluded))
        try:
            pattern = re.compile(targets)
        except re.error as e:
            return Resolution("invalid", error=f"target_modules is not a valid regex: {e}")
        matched = [n for n in names if n not in excluded and pattern.fullmatch(n)]
        return _finish(Resolution("regex", matched), base)
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        return Resolution("invalid", error=f"target_modules must be a list of names or a regex string, got {targets!r}")
    per_entry: dict[str, list[str]] = {t: [] for t in targets}
    matched_set: set[str] = set()
    layer_filter = _layer_filter(config)
    try:
        for n in names:
            if n in excluded:
                continue
            hit = [t for t in targets if n == t or n.endswith("." + t)]
            if not hit or not layer_filter(n):
                continue
            for t in hit:
                per_entry[t].append(n)
            matched_set.add(n)
    except (re.error, TypeError) as e:
        return Resolution("invalid", error=f"layers_to_transform / layers_pattern cannot be used: {e}")
    return _finish(Resolution("list", sorted(matched_set), per_entry), base)


def _finish(res: Resolution, base: BaseModel) -> Resolution:
    res.unsupported = [n for n in res.matched if n not in base.modules or base.modules[n].kind == "norm"]
    return res


def _excluded(config: dict[str, Any], names: list[str]) -> set[str]:
    out: set[str] = set()
    exclude = config.get("exclude_modules")
    if isinstance(exclude, str) and exclude:
        pat = re.compile(exclude)
        out |= {n for n in names if pat.fullmatch(n)}
    elif isinstance(exclude, list) and exclude:
        out |= {n for n in names if n in exclude or any(n.endswith("." + e) for e in exclude if isinstance(e, str))}
    to_save = config.get("modules_to_save")
    if isinstance(to_save, list) and to_save:
        pats = [re.compile(rf"(^|.*\.){re.escape(m)}($|\..*)") for m in to_save if isinstance(m, str)]
        out |= {n for n in names if any(p.match(n) for p in pats)}
    return out


def _layer_filter(config: dict[str, Any]) -> Any:
    indexes = config.get("layers_to_transform")
    if indexes is None or (isinstance(indexes, list) and not indexes):
        return lambda name: True
    wanted = {indexes} if isinstance(indexes, int) else set(indexes)
    pattern = config.get("layers_pattern")
    patterns = [pattern] if isinstance(pattern, str) else list(pattern or [])

    def keep(name: str) -> bool:
        m = None
        if not patterns:
            m = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", name)
        for p in patterns:
            m = re.match(rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\.", name)
            if m:
                break
        return bool(m) and int(m.group("idx")) in wanted

    return keep


def parts_of(modules: list[str]) -> dict[str, list[str]]:
    """Adapted modules grouped by part of the VLM (language, vision, projector, ...)."""
    return layouts.split_parts(modules)


def renamed_entries(entries: list[str], base: BaseModel) -> dict[str, str]:
    """Fully-qualified ``target_modules`` entries written for another key layout, mapped to the
    name they have in the base's in-memory layout (only those that then match a module)."""
    out: dict[str, str] = {}
    for e in entries:
        found = layouts.to_canonical(e)
        if found is None:
            continue
        new = layouts.from_canonical(found[1], base.layout, base.vision_prefix)
        if new and new != e and any(n == new or n.endswith("." + new) for n in base.all_modules):
            out[e] = new
    return out


def language_only_regex(targets: Any, base: BaseModel) -> str | None:
    """A regex that keeps today's language-model targets and drops vision/projector ones."""
    lang = base.layout.language.rstrip(".") if base.layout.language else None
    if not lang:
        return None
    if isinstance(targets, list) and targets:
        leaves = sorted({t.rsplit(".", 1)[-1] for t in targets})
        return rf"{re.escape(lang)}\..*\.({'|'.join(map(re.escape, leaves))})"
    return None


def language_regex_from(language_modules: list[str], leaves: list[str]) -> str:
    """A ``target_modules`` regex (peft full-matches it against module names) that keeps the
    adapted language-model modules' leaves and nothing of the vision tower or projector, written
    in the adapter's own key layout: ``language_model.model.layers`` (transformers 4.x llava),
    ``model.language_model.layers`` (5.x), ``model.layers`` (Qwen2-VL before 4.52, where the
    language model has no ``language_model`` name). Falls back to ``.*language_model.*``."""
    alts = "|".join(map(re.escape, leaves))
    prefixes = {layouts.strip_peft_prefix(m).partition(".layers.")[0] for m in language_modules
                if ".layers." in layouts.strip_peft_prefix(m)}
    if len(prefixes) == 1:
        return rf"{re.escape(prefixes.pop())}\.layers\.\d+\..*\.({alts})"
    return rf".*language_model.*\.({alts})"


def pattern_value(pattern: dict[str, Any], module: str, default: Any) -> Any:
    """peft's ``get_pattern_key``: the first key matching ``(.*\\.)?key$`` wins."""
    for key, value in pattern.items():
        try:
            if re.match(rf"(.*\.)?({key})$", module):
                return value
        except re.error:  # reported by ADP005
            continue
    return default
