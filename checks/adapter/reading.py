"""Reading an adapter folder and its base without loading a model: adapter_config.json with
line/column on errors, the adapter's tensor headers, and the base's module table built from its
checkpoint's tensor names (header-only). Shared by the ADP, LLV and XTN families."""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor import layouts
from doctor.files import ADAPTER_WEIGHTS
from doctor.io.jsonfile import JsonFile, read_json
from doctor.io.safetensors_header import TensorInfo, read_folder_tensors, read_header

ADAPTER_FILES = ADAPTER_WEIGHTS
_EMBEDDING_LEAVES = ("embed_tokens", "wte", "wpe", "word_embeddings", "tok_embeddings", "embedding",
                     "position_embedding", "embeddings", "tile_embedding", "shared")


JsonDoc = JsonFile  # the adapter family's name for the shared reader


def read_json_doc(file: str | os.PathLike[str], limit: int = 16 << 20) -> JsonFile:
    """Parse a JSON file; never raises. Errors carry the parser's line and column."""
    return read_json(file, limit)


@dataclass
class Weights:
    """The tensors of one weights file (safetensors header, or a pickle's tensor table)."""

    file: str | None
    format: str | None                     # "safetensors" | "bin" | None (no file)
    size: int = 0
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    problem: str | None = None             # unreadable: why
    _loaded: dict[str, Any] | None = None  # .bin read through torch (fallback)

    @property
    def readable(self) -> bool:
        return self.file is not None and self.problem is None

    def read(self, name: str) -> Any:
        """One tensor as a float32 numpy array (reads only that tensor's bytes)."""
        from doctor.checks.adapter.numeric import read_tensor

        return read_tensor(self, name)


def find_adapter_file(folder: str | os.PathLike[str]) -> Path | None:
    """peft's order: adapter_model.safetensors, then adapter_model.bin."""
    for name in ADAPTER_FILES:
        p = Path(folder) / name
        if p.is_file():
            return p
    return None


def read_weights(file: Path | None) -> Weights:
    """Tensor table of a safetensors or pickle weights file, header/opcode-only where possible."""
    if file is None:
        return Weights(None, None)
    size = file.stat().st_size
    if file.suffix == ".safetensors":
        header = read_header(file)
        w = Weights(str(file), "safetensors", size, dict(header.tensors))
        if header.problems:
            w.problem = header.problems[0].message
        return w
    return _read_pickle_weights(file, size)


def _read_pickle_weights(file: Path, size: int) -> Weights:
    """The tensor table from the security family's static pickle reader (nothing executed)."""
    from doctor.io import pickle_scan

    w = Weights(str(file), "bin", size)
    try:
        metas = pickle_scan.tensor_infos(file)
    except Exception as e:  # noqa: BLE001 - a refused or broken pickle is SEC's finding
        w.problem = str(e).splitlines()[0] if str(e) else type(e).__name__
        return w
    w.tensors = {name: TensorInfo(name, m.dtype, tuple(m.shape), -1, -1, str(file)) for name, m in metas.items()}
    return w


def load_pickle_tensors(w: Weights) -> dict[str, Any]:
    """The tensors of a .bin through ``pickle_scan.safe_load`` (scan first, then
    ``torch.load(weights_only=True)``); cached on ``w``."""
    if w._loaded is None:
        from doctor.io import pickle_scan

        w._loaded = pickle_scan.safe_load(w.file or "")
    return w._loaded


# ---- the base model ----------------------------------------------------------------------


@dataclass
class Module:
    """A base-model module known from its ``weight`` tensor: kind and in/out features."""

    name: str               # in-memory name (what peft matches)
    kind: str               # "linear" | "embedding" | "conv" | "norm"
    in_features: int | None
    out_features: int | None
    weight: str             # on-disk tensor name


@dataclass
class BaseModel:
    folder: str
    config: dict[str, Any]
    model_type: str | None
    tensors: dict[str, TensorInfo]       # on-disk name -> info
    weights_by_file: dict[str, Weights]
    layout: layouts.Layout               # in-memory layout
    vision_prefix: str | None
    transformers_version: str
    modules: dict[str, Module]           # in-memory leaf modules with a weight
    all_modules: set[str]                # every in-memory module name, containers included
    output_module: str | None            # what peft's all-linear leaves out
    problems: list[str] = field(default_factory=list)

    @property
    def text_config(self) -> dict[str, Any]:
        tc = self.config.get("text_config")
        return tc if isinstance(tc, dict) else self.config

    @property
    def hidden_size(self) -> int | None:
        h = self.text_config.get("hidden_size")
        return h if isinstance(h, int) else None

    def read_weight(self, module: Module) -> Any:
        """The module's weight as float32 (only that tensor's bytes are read)."""
        from doctor.checks.adapter.numeric import read_info, read_tensor

        info = self.tensors[module.weight]
        w = self.weights_by_file.get(info.file)
        if w is not None and w.format == "bin":
            return read_tensor(w, module.weight)
        return read_info(info)


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_base(folder: str | os.PathLike[str], transformers_version: str) -> BaseModel:
    """Module table of a base model folder from config.json and tensor headers (no weights)."""
    root = Path(folder)
    doc = read_json_doc(root / "config.json")
    config = doc.data if doc.ok and isinstance(doc.data, dict) else {}
    problems = [] if doc.ok else [f"config.json: {doc.error}"]
    model_type = config.get("model_type") if isinstance(config.get("model_type"), str) else None
    weights_by_file: dict[str, Weights] = {}
    tensors: dict[str, TensorInfo] = {}
    folder_tensors = read_folder_tensors(root, "model")
    if folder_tensors.files:
        tensors = dict(folder_tensors.tensors)
        for f in folder_tensors.files:
            weights_by_file[f] = Weights(f, "safetensors", Path(f).stat().st_size, {})
        problems += [p.message for p in folder_tensors.problems]
    else:
        for f in sorted(root.glob("pytorch_model*.bin")):
            w = read_weights(f)
            weights_by_file[str(f)] = w
            if w.problem:
                problems.append(f"{f.name}: {w.problem}")
            tensors.update(w.tensors)
    archs = config.get("architectures") or []
    layout, vprefix = layouts.in_memory_layout(model_type, transformers_version, archs if isinstance(archs, list) else [])
    memory = layouts.disk_to_memory(tensors, model_type, transformers_version, archs if isinstance(archs, list) else [])
    modules: dict[str, Module] = {}
    all_modules: set[str] = set()
    for mem_name, disk_name in memory.items():
        parts = mem_name.split(".")
        for i in range(1, len(parts)):
            all_modules.add(".".join(parts[:i]))
        if parts[-1] != "weight" or len(parts) < 2:
            continue
        mod = ".".join(parts[:-1])
        shape = tensors[disk_name].shape
        modules[mod] = _module(mod, shape, disk_name)
    output = layout.lm_head if layout.lm_head in modules else None
    return BaseModel(str(root), config, model_type, tensors, weights_by_file, layout, vprefix,
                     transformers_version, modules, all_modules, output, problems)


def _module(name: str, shape: tuple[int, ...], weight: str) -> Module:
    leaf = name.rsplit(".", 1)[-1]
    if len(shape) == 2 and not any(e in leaf for e in _EMBEDDING_LEAVES):
        return Module(name, "linear", shape[1], shape[0], weight)
    if len(shape) == 2:
        return Module(name, "embedding", shape[1], shape[0], weight)
    if len(shape) in (3, 4, 5):
        return Module(name, "conv", shape[1], shape[0], weight)
    return Module(name, "norm", None, None, weight)


def hf_cache_dirs() -> list[Path]:
    """Where huggingface_hub keeps downloads: HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub."""
    out = []
    if os.environ.get("HF_HUB_CACHE"):
        out.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        out.append(Path(os.environ["HF_HOME"]) / "hub")
    xdg = os.environ.get("XDG_CACHE_HOME")
    out.append(Path(xdg) / "huggingface" / "hub" if xdg else Path.home() / ".cache" / "huggingface" / "hub")
    return out


def resolve_base(name: str | None, relative_to: str | None = None) -> Path | None:
    """A local folder for a recorded base: the path itself (absolute, or relative to the cwd or to
    the adapter folder), else a snapshot in the local Hugging Face cache (``refs/main`` first)."""
    if not name or not isinstance(name, str):
        return None
    candidates = [Path(name).expanduser()]
    if relative_to:
        candidates.append(Path(relative_to) / name)
    for c in candidates:
        if c.is_dir() and (c / "config.json").is_file():
            return c
    if "/" not in name.strip("/") or name.startswith((".", "/", "~")):
        return None
    repo = "models--" + name.strip("/").replace("/", "--")
    for cache in hf_cache_dirs():
        snaps = cache / repo / "snapshots"
        if not snaps.is_dir():
            continue
        ref = cache / repo / "refs" / "main"
        if ref.is_file():
            rev = ref.read_text(encoding="utf-8").strip()
            if (snaps / rev / "config.json").is_file():
                return snaps / rev
        found = sorted((s for s in snaps.iterdir() if (s / "config.json").is_file()),
                       key=lambda s: s.stat().st_mtime, reverse=True)
        if found:
            return found[0]
    return None
