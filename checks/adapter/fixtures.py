"""Fixtures of the adapter family: computed once per adapter folder, handed to checks by name."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.checks.adapter.reading import (
    BaseModel,
    JsonDoc,
    Weights,
    find_adapter_file,
    installed_version,
    load_base,
    read_json_doc,
    read_weights,
    resolve_base,
)
from doctor.checks.adapter.targets import Resolution, resolve

from doctor import layouts
from doctor.errors import Skip
from doctor.io.safetensors_header import TensorInfo
from doctor.registry import fixture

_LORA_KEY = re.compile(r"^(?P<module>.+?)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B|"
                       r"lora_magnitude_vector)(?:\.(?P<adapter>[A-Za-z0-9_-]+))??(?:\.(?P<param>weight|bias))?$")


@dataclass
class LoraModule:
    """The adapter tensors of one base module."""

    module: str                      # as saved (PEFT prefix stripped)
    a: TensorInfo | None = None
    b: TensorInfo | None = None
    others: list[TensorInfo] = field(default_factory=list)   # bias, magnitude, embedding variants

    @property
    def r(self) -> int | None:
        if self.a is not None and len(self.a.shape) >= 1:
            return self.a.shape[0]
        if self.b is not None and len(self.b.shape) == 2:
            return self.b.shape[1]
        return None


@dataclass
class AdapterTensors:
    modules: dict[str, LoraModule]            # module -> its LoRA tensors
    saved_modules: dict[str, list[str]]       # modules_to_save module -> tensor names
    layout: layouts.LayoutGuess               # layout of the saved module names


@dataclass
class Versions:
    peft: str | None
    transformers: str | None


@fixture
def adapter_config_doc(path: str) -> JsonDoc:
    return read_json_doc(Path(path) / "adapter_config.json")


@fixture
def adapter_config(adapter_config_doc: JsonDoc) -> dict[str, Any]:
    doc = adapter_config_doc
    if not doc.ok or not isinstance(doc.data, dict) or not isinstance(doc.data.get("peft_type"), str):
        raise Skip("adapter_config.json is not a usable config (see ADP001)")
    return doc.data


@fixture
def lora_config(adapter_config: dict[str, Any]) -> dict[str, Any]:
    if str(adapter_config.get("peft_type")).upper() != "LORA":
        raise Skip(f"peft_type is {adapter_config.get('peft_type')!r}: this check covers LoRA adapters")
    return adapter_config


@fixture
def versions(options: Any) -> Versions:
    """peft / transformers versions to judge against: ``--peft-version`` / ``--transformers-version`` (``Options.extra``), or
    the installed packages (read from metadata, nothing imported)."""
    extra = getattr(options, "extra", {}) or {}
    return Versions(extra.get("peft_version") or installed_version("peft"),
                    extra.get("transformers_version") or installed_version("transformers"))


@fixture
def adapter_weights(path: str) -> Weights:
    return read_weights(find_adapter_file(path))


@fixture
def adapter_tensors(adapter_weights: Weights) -> AdapterTensors:
    if not adapter_weights.readable or not adapter_weights.tensors:
        raise Skip("the adapter weights are missing or unreadable (see ADP014)")
    return split_adapter_tensors(adapter_weights.tensors)


def split_adapter_tensors(tensors: dict[str, TensorInfo]) -> AdapterTensors:
    modules: dict[str, LoraModule] = {}
    saved: dict[str, list[str]] = {}
    for name, info in tensors.items():
        stripped = layouts.strip_peft_prefix(name)
        m = _LORA_KEY.match(stripped)
        if m is None:
            module = stripped.rsplit(".", 1)[0] if "." in stripped else stripped
            saved.setdefault(module, []).append(name)
            continue
        mod = modules.setdefault(m["module"], LoraModule(m["module"]))
        kind, param = m["kind"], m["param"] or "weight"
        if kind in ("lora_A", "lora_embedding_A") and param == "weight" and mod.a is None:
            mod.a = info
        elif kind in ("lora_B", "lora_embedding_B") and param == "weight" and mod.b is None:
            mod.b = info
        else:
            mod.others.append(info)
    guess = layouts.classify(list(modules) + list(saved))
    return AdapterTensors(modules, saved, guess)


@fixture
def base_location(adapter_config: dict[str, Any], options: Any, path: str) -> Path:
    """The base model folder: ``--base``, else ``base_model_name_or_path`` found locally."""
    given = getattr(options, "base", None)
    if given:
        p = Path(given)
        if not (p / "config.json").is_file():
            raise Skip(f"--base {given} has no config.json")
        return p
    name = adapter_config.get("base_model_name_or_path")
    found = resolve_base(name, relative_to=path)
    if found is None:
        raise Skip(f"base model {name!r} is not available locally; pass --base to check against it")
    return found


@fixture
def adapter_base(base_location: Path, versions: Versions) -> BaseModel:
    base = load_base(base_location, versions.transformers or "5.0")
    if not base.tensors:
        raise Skip(f"base {base_location} has no readable weights to read module names from")
    return base


@fixture
def adapter_targets(lora_config: dict[str, Any], adapter_base: BaseModel) -> Resolution:
    return resolve(lora_config, adapter_base)
