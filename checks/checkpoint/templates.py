"""Expected tensors from config.json alone: per-config templates learned once from transformers.

Importing torch + transformers and building a 7B model on the meta device costs seconds, as long
as ``from_pretrained`` itself. Everything the load prediction needs from the model is a function
of config.json and the installed transformers: the parameter names and shapes, the tied pairs, the
``_keys_to_ignore_on_load_*`` patterns and the key renamings. So it is learned once and kept on
disk as a template, keyed by (``model_type``, transformers version, a hash of config.json without
its layer counts):

- Learning builds the model twice on the meta device with small, distinct layer counts (``T1``,
  ``T2``); a ``ModuleList`` whose length follows a layer-count field is a stack, and its per-layer
  names (identical in every layer) become one entry expanded by the real count. The template is
  accepted only when its expansion at ``T2``'s counts equals ``T2`` exactly.
- The renamings (``WeightRenaming`` / ``PrefixChange`` of transformers 5) are stored as their
  compiled patterns and replayed in pure Python; the replay is checked against transformers'
  own ``rename_source_key`` on every expected name in each layout it loads (in memory, as saved,
  the 4.x names) and on foreign names (LoRA, unknown tensors) before the template is stored.
- A config whose structure depends on layer indices (``cross_attention_layers``, per-layer lists
  that differ) is not generalised: its template is the full meta build of that exact config.
- Anything else (transformers 4.x, a ``WeightConverter`` or a renaming class this replay does not
  know, a failed check) stores nothing; the caller builds the model as before.

A warm template needs neither torch nor transformers. Cache folder: ``$VLM_DOCTOR_CACHE``, else
``$XDG_CACHE_HOME/vlm-doctor``, else ``~/.cache/vlm-doctor``; unwritable folders only cost speed.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = 1
LAYER_FIELD = re.compile(r"(num_\w*layers|n_layers?|num_hidden_layers|depth)")
IGNORED_FIELDS = ("_name_or_path", "transformers_version")
FieldPath = tuple[str, ...]


class NotLearnable(Exception):
    """This config's expected tensors cannot be expressed (or verified) as a template."""


def cache_root() -> Path:
    if os.environ.get("VLM_DOCTOR_CACHE"):
        return Path(os.environ["VLM_DOCTOR_CACHE"]) / "templates"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vlm-doctor" / "templates"


def transformers_version() -> str | None:
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return None


# ---- keys ------------------------------------------------------------------------------------------


def layer_fields(config: dict[str, Any]) -> list[FieldPath]:
    """The layer counts a template can generalise: integer fields named like layer counts, in a
    (sub-)config with no list of integers (such lists name layer indices: ``cross_attention_layers``)
    and no per-layer list whose entries differ."""
    out: list[FieldPath] = []
    stack: list[tuple[FieldPath, dict[str, Any]]] = [((), config)]
    while stack:
        path, node = stack.pop()
        counts = {k: v for k, v in node.items()
                  if LAYER_FIELD.fullmatch(k) and isinstance(v, int) and not isinstance(v, bool) and v >= 1}
        lists = [v for v in node.values() if isinstance(v, list)]
        if counts and not any(_has_int(v) for v in lists) and all(
                len(set(map(json.dumps, v))) <= 1 for v in lists if len(v) in counts.values()):
            out.extend(path + (k,) for k in counts)
        stack.extend((path + (k,), v) for k, v in node.items() if isinstance(v, dict))
    return sorted(out)


def _has_int(value: list[Any]) -> bool:
    for item in value:
        if isinstance(item, int) and not isinstance(item, bool):
            return True
        if isinstance(item, list) and _has_int(item):
            return True
    return False


def _get(config: dict[str, Any], path: FieldPath) -> Any:
    node: Any = config
    for key in path:
        node = node[key]
    return node


def with_counts(config: dict[str, Any], counts: dict[FieldPath, int]) -> dict[str, Any]:
    """``config`` with these layer counts (and each uniform per-layer list resized to match)."""
    out = copy.deepcopy(config)
    for path, n in counts.items():
        parent = _get(out, path[:-1])
        old = parent[path[-1]]
        parent[path[-1]] = n
        for k, v in list(parent.items()):
            if isinstance(v, list) and len(v) == old and v:
                parent[k] = [copy.deepcopy(v[0]) for _ in range(n)]
    return out


def cache_key(config: dict[str, Any], version: str, generalised: bool) -> str:
    fields = layer_fields(config) if generalised else []
    structural = with_counts(config, dict.fromkeys(fields, 0))
    for path in fields:
        del _get(structural, path[:-1])[path[-1]]
    for name in IGNORED_FIELDS:
        structural.pop(name, None)
    # the generalised fields are part of the key: a config that lacks one (its default applies)
    # must not share a template with one that sets it
    blob = json.dumps([FORMAT, version, generalised, [list(f) for f in fields], structural], sort_keys=True,
                      default=str)
    model_type = re.sub(r"[^A-Za-z0-9_.-]", "_", str(config.get("model_type", "none")))[:64]
    return f"{model_type}-{'g' if generalised else 'x'}-{hashlib.sha256(blob.encode()).hexdigest()[:32]}"


# ---- the template ----------------------------------------------------------------------------------


@dataclass
class Template:
    model_class: str
    plain: dict[str, list[int]]  # name -> shape, outside any stack
    stacks: list[tuple[str, FieldPath, dict[str, list[int]]]]  # (ModuleList path, count field, suffix -> shape)
    tied: dict[str, str]
    ignore_missing: list[str]
    ignore_unexpected: list[str]
    prefix: str
    renamings: list[dict[str, Any]]  # forward (load) renamings, replayed by ``rename``
    save_renamings: list[dict[str, Any]]  # reverse renamings (save_pretrained's names)
    order: list[str]  # plain names and stack paths, in state_dict order

    def expected(self, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """name -> shape, in the model's own order (a stack's layers where its first layer was)."""
        stacks = {stack: (path, layer) for stack, path, layer in self.stacks}
        out: dict[str, tuple[int, ...]] = {}
        for item in self.order:
            if item in self.plain:
                out[item] = tuple(self.plain[item])
                continue
            path, layer = stacks[item]
            for i in range(int(_get(config, path))):
                for suffix, shape in layer.items():
                    out[f"{item}.{i}.{suffix}"] = tuple(shape)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"model_class": self.model_class, "plain": self.plain,
                "stacks": [[s, list(p), layer] for s, p, layer in self.stacks], "tied": self.tied,
                "ignore_missing": self.ignore_missing, "ignore_unexpected": self.ignore_unexpected,
                "prefix": self.prefix, "renamings": self.renamings, "save_renamings": self.save_renamings,
                "order": self.order}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Template:
        return cls(data["model_class"], data["plain"], [(s, tuple(p), layer) for s, p, layer in data["stacks"]],
                   data["tied"], data["ignore_missing"], data["ignore_unexpected"], data["prefix"],
                   data["renamings"], data["save_renamings"], data["order"])

    def mapper(self, expected: dict[str, Any]) -> Callable[[str], tuple[str, bool]]:
        """on-disk name -> (in-memory name, False): transformers 5's ``rename_source_key`` with the
        base-model prefix handling, as ``expected.key_mapper`` calls it (no converters here)."""
        forward = [Renaming.from_json(r) for r in self.renamings]
        prefix = self.prefix

        def mapper(key: str) -> tuple[str, bool]:
            renamed = _with_prefix(apply(key, forward), prefix, expected)
            if renamed not in expected and key in expected:
                renamed = _with_prefix(key, prefix, expected)
            return renamed, False

        return mapper

    def namer(self) -> Callable[[str], str]:
        reverse = [Renaming.from_json(r) for r in self.save_renamings]
        return lambda name: apply(name, reverse)


@dataclass
class Renaming:
    """One ``WeightRenaming`` as transformers 5 compiled it (``WeightTransform.rename_source_key``)."""

    pattern: str
    source_patterns: list[str]
    target_patterns: list[str]
    scope_prefix: str | None
    base_model_prefix: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Renaming:
        return cls(**data)

    def rename(self, key: str) -> str:
        compiled = _compiled(self.pattern)
        to_match, prefix = key, None
        if self.scope_prefix is not None:
            scope = f"{self.scope_prefix}." if self.scope_prefix else ""
            base = f"{self.base_model_prefix}." if self.base_model_prefix else ""
            if key.startswith(base + scope):
                prefix = base + scope
            elif key.startswith(scope):
                prefix = scope
            else:
                return key
            to_match = key.removeprefix(prefix)
        match = compiled.search(to_match)
        if match is None:
            return key
        group = next(name for name, val in match.groupdict().items() if val is not None)
        replacement = self.target_patterns[0]
        if r"\1" in replacement:
            replacement = replacement.replace(r"\1", match.group(compiled.groupindex[group] + 1))
        renamed = to_match.replace(match.group(0), replacement, 1)
        return prefix + renamed if prefix is not None else renamed


_COMPILED: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    if pattern not in _COMPILED:
        _COMPILED[pattern] = re.compile(pattern)
    return _COMPILED[pattern]


def apply(key: str, renamings: list[Renaming]) -> str:
    for r in renamings:
        key = r.rename(key)
    return key


def _with_prefix(key: str, prefix: str, expected: dict[str, Any]) -> str:
    if not prefix:
        return key
    if key.startswith(prefix) and expected.get(re.sub(f"^{prefix}.", "", key, count=1)) is not None:
        return re.sub(f"^{prefix}.", "", key, count=1)
    if expected.get(f"{prefix}.{key}") is not None:
        return f"{prefix}.{key}"
    return key


# ---- lookup and storage ----------------------------------------------------------------------------


def lookup(config: dict[str, Any]) -> Template | None:
    """The cached template for this config, or None (cold cache, or no template possible)."""
    version = transformers_version()
    if version is None:
        return None
    entry = _read(cache_key(config, version, True)) if layer_fields(config) else {"generalises": False}
    if entry is not None and entry.get("generalises") is False:
        entry = _read(cache_key(config, version, False))
    if entry is None or "template" not in entry:
        return None
    try:
        return Template.from_json(entry["template"])
    except (KeyError, TypeError, ValueError):
        return None


def _read(key: str) -> dict[str, Any] | None:
    try:
        data = json.loads((cache_root() / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write(key: str, entry: dict[str, Any]) -> None:
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=root)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entry, f, separators=(",", ":"))
        os.replace(tmp, root / f"{key}.json")
    except OSError:
        pass  # a read-only cache only costs speed


# ---- learning (imports torch + transformers) -------------------------------------------------------


def learn(config: dict[str, Any], build: Callable[[dict[str, Any]], Any]) -> Template | None:
    """Learn, verify and store the template of ``config``; ``build(config_dict)`` returns the model
    on the meta device (raising when transformers cannot build it). None: no template possible."""
    version = transformers_version()
    if version is None:
        return None
    fields = layer_fields(config)
    if fields:
        try:
            template = _learn_generalised(config, fields, build)
            _write(cache_key(config, version, True), {"generalises": True, "template": template.to_json()})
            return template
        except NotLearnable:
            _write(cache_key(config, version, True), {"generalises": False})
    try:
        template = _learn_exact(config, build)
    except NotLearnable:
        return None
    _write(cache_key(config, version, False), {"generalises": False, "template": template.to_json()})
    return template


def _learn_generalised(config: dict[str, Any], fields: list[FieldPath], build: Callable[[dict[str, Any]], Any]
                       ) -> Template:
    c1 = {p: 2 + i for i, p in enumerate(fields)}
    c2 = {p: 2 + len(fields) + i for i, p in enumerate(fields)}
    cfg1, cfg2 = with_counts(config, c1), with_counts(config, c2)
    m1, m2 = build(cfg1), build(cfg2)
    stacks = _stacks(m1, m2, c1, c2)
    t1 = describe(m1)
    plain: dict[str, list[int]] = {}
    layers: dict[str, dict[int, dict[str, list[int]]]] = {}
    order: list[str] = []
    for name, shape in t1.expected.items():
        owner = next((s for s in stacks if name.startswith(s + ".")), None)
        if owner is None:
            plain[name] = list(shape)
            order.append(name)
            continue
        if owner not in layers:
            order.append(owner)
        index, _, suffix = name[len(owner) + 1:].partition(".")
        layers.setdefault(owner, {}).setdefault(int(index), {})[suffix] = list(shape)
    entries = []
    for stack, path in stacks.items():
        per_layer = layers.get(stack, {})
        first = per_layer.get(0, {})
        if sorted(per_layer) != list(range(c1[path])) or any(v != first for v in per_layer.values()):
            raise NotLearnable(f"the layers of {stack} differ")
        entries.append((stack, path, first))
    if any(n.startswith(tuple(s + "." for s in stacks)) for pair in t1.tied.items() for n in pair):
        raise NotLearnable("tied weights inside a layer stack")
    template = t1.template(plain, entries, order)
    _verify(template, describe(m2), cfg2)
    _verify(template, t1, cfg1)
    return template


def _learn_exact(config: dict[str, Any], build: Callable[[dict[str, Any]], Any]) -> Template:
    facts = describe(build(config))
    template = facts.template({k: list(v) for k, v in facts.expected.items()}, [], list(facts.expected))
    _verify(template, facts, config)
    return template


def _stacks(m1: Any, m2: Any, c1: dict[FieldPath, int], c2: dict[FieldPath, int]) -> dict[str, FieldPath]:
    """ModuleList path -> the layer-count field its length follows in both builds."""
    import torch

    lengths2 = {n: len(m) for n, m in m2.named_modules() if isinstance(m, torch.nn.ModuleList)}
    out: dict[str, FieldPath] = {}
    for name, module in m1.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or not name:
            continue
        for path in c1:
            if len(module) == c1[path] and lengths2.get(name) == c2[path]:
                out[name] = path
    return out


@dataclass
class Facts:
    """What the prediction needs from one built model."""

    model_class: str
    expected: dict[str, tuple[int, ...]]
    tied: dict[str, str]
    ignore_missing: list[str]
    ignore_unexpected: list[str]
    prefix: str
    mapper: Callable[[str], tuple[str, bool]]
    namer: Callable[[str], str]
    renamings: list[dict[str, Any]]
    save_renamings: list[dict[str, Any]]

    def template(self, plain: dict[str, list[int]], stacks: list[tuple[str, FieldPath, dict[str, list[int]]]],
                 order: list[str]) -> Template:
        return Template(self.model_class, plain, stacks, dict(self.tied), self.ignore_missing,
                        self.ignore_unexpected, self.prefix, self.renamings, self.save_renamings, order)


def describe(model: Any) -> Facts:
    from doctor.checks.checkpoint import expected as ex

    state = model.state_dict(keep_vars=True)
    expected = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = ex.ignore_patterns(model)
    forward, save = _serialised_renamings(model)
    return Facts(type(model).__name__, expected, ex.tied_pairs(model, state), missing, unexpected,
                 getattr(model, "base_model_prefix", "") or "", ex.key_mapper(model, expected), ex.save_namer(model),
                 forward, save)


def _serialised_renamings(model: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import PrefixChange, WeightRenaming
    except ImportError:
        raise NotLearnable("transformers 4.x: no conversion mapping to replay") from None
    forward = get_model_conversion_mapping(model)
    save_side = [c for c in get_model_conversion_mapping(model, add_legacy=False) if not isinstance(c, PrefixChange)]
    reverse = [c.reverse_transform() for c in save_side[::-1]]
    for c in forward + reverse:
        if type(c) not in (WeightRenaming, PrefixChange) or len(c.target_patterns) != 1:
            raise NotLearnable(f"{type(c).__name__} is not replayed")

    def ser(c: Any) -> dict[str, Any]:
        return {"pattern": c.compiled_sources.pattern, "source_patterns": list(c.source_patterns),
                "target_patterns": list(c.target_patterns), "scope_prefix": c.scope_prefix,
                "base_model_prefix": c.base_model_prefix}

    return [ser(c) for c in forward], [ser(c) for c in reverse]


def _verify(template: Template, facts: Facts, config: dict[str, Any]) -> None:
    """The template reproduces this build exactly: names, shapes, ties, and every renaming on the
    names a checkpoint of each layout holds plus foreign ones."""
    expected = template.expected(config)
    if (list(expected.items()) != list(facts.expected.items()) or template.tied != facts.tied or template.model_class != facts.model_class
            or (template.ignore_missing, template.ignore_unexpected) != (facts.ignore_missing, facts.ignore_unexpected)
            or (template.renamings, template.save_renamings) != (facts.renamings, facts.save_renamings)):
        raise NotLearnable("the template's expansion differs from the build")
    mapper, namer = template.mapper(expected), template.namer()
    undo = [Renaming.from_json(r) for r in template.save_renamings]
    probes: set[str] = set()
    for name in expected:
        saved = facts.namer(name)
        if namer(name) != saved:
            raise NotLearnable(f"save name of {name} differs")
        probes.update({name, saved, apply(name, undo)})
        for form in (name, saved):
            stem = form.rsplit(".", 1)
            probes.update({f"{stem[0]}.base_layer.{stem[-1]}", f"{stem[0]}.lora_A.default.{stem[-1]}",
                           f"base_model.model.{form}", f"model.{form}", f"language_model.model.{form}"})
            for old, new in (("model.language_model.", "language_model.model."), ("model.", ""),
                             ("vision_tower.", "vision_tower.vision_model."), ("lm_head", "language_model.lm_head")):
                probes.add(form.replace(old, new, 1))
    probes.update({"value_head.weight", "model.mm_projector.0.weight", "x.LayerNorm.gamma", "a.weight_g",
                   "vision_model.embeddings.position_ids", "rotary_emb.inv_freq"})
    for key in sorted(probes):
        if mapper(key) != facts.mapper(key):
            raise NotLearnable(f"renaming of {key} differs: {mapper(key)} != {facts.mapper(key)}")
