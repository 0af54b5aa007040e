"""Low-level writers shared by the model builders: shards, .bin conversion, key surgery, JSON
patches. Imports torch and safetensors inside functions only."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

WeightFormat = Literal["safetensors", "bin"]
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def write_state_dict(dir: Path, state: Mapping[str, torch.Tensor], fmt: WeightFormat = "safetensors",
                     shard_size: str | int | None = None) -> list[str]:
    """Write ``state`` as ``model.safetensors`` / ``pytorch_model.bin``, or as numbered shards
    with a ``*.index.json`` when ``shard_size`` (e.g. "20KB") is smaller than the total, the
    way ``save_pretrained`` names them. Returns the weight file names."""
    dir.mkdir(parents=True, exist_ok=True)
    limit = parse_size(shard_size) if shard_size is not None else None
    shards: list[dict[str, Any]] = [{}]
    used = 0
    for name, tensor in state.items():
        size = tensor.numel() * tensor.element_size()
        if limit is not None and shards[-1] and used + size > limit:
            shards.append({})
            used = 0
        shards[-1][name] = tensor.detach().clone().contiguous()  # unties shared storage
        used += size
    stem, suffix = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
    if len(shards) == 1:
        names = [f"{stem}.{suffix}"]
    else:
        names = [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{suffix}" for i in range(len(shards))]
    for name, shard in zip(names, shards, strict=True):
        _save(dir / name, shard)
    if len(shards) > 1:
        _write_index(dir / f"{stem}.{suffix}.index.json", {k: n for n, s in zip(names, shards, strict=True) for k in s},
                     sum(t.numel() * t.element_size() for t in state.values()))
    return names


def rewrite_weights(dir: Path, edit: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
                    fmt: WeightFormat | None = None) -> list[str]:
    """Apply ``edit`` to every weight file in ``dir`` (shard by shard, keeping the shard
    layout), optionally converting to ``fmt``; rewrites or removes the index. Shards left empty
    are dropped. Returns the weight file names now present."""
    files = weight_files(dir)
    if not files:
        raise FileNotFoundError(f"{dir}: no model.safetensors / pytorch_model.bin to rewrite")
    fmt = fmt or ("bin" if files[0].endswith(".bin") else "safetensors")
    stem, suffix = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
    if files[0].startswith("adapter_model"):
        stem = "adapter_model"
    shards = [edit(load(dir / name)) for name in files]
    for name in files:
        (dir / name).unlink()
    for index in dir.glob("*.index.json"):
        index.unlink()
    shards = [s for s in shards if s] or [{}]
    if len(shards) == 1:
        names = [f"{stem}.{suffix}"]
    else:
        names = [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{suffix}" for i in range(len(shards))]
    for name, shard in zip(names, shards, strict=True):
        _save(dir / name, shard)
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for s in shards for t in s.values())
        _write_index(dir / f"{stem}.{suffix}.index.json", {k: n for n, s in zip(names, shards, strict=True) for k in s}, total)
    return names


def drop_prefixes(prefixes: Iterable[str]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An ``edit`` for ``rewrite_weights`` that deletes tensors whose name starts with a prefix."""
    prefixes = tuple(prefixes)
    return lambda state: {k: v for k, v in state.items() if not k.startswith(prefixes)}


def rename_keys(pattern: str, replacement: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An ``edit`` for ``rewrite_weights`` that applies ``re.sub(pattern, replacement, name)``."""
    regex = re.compile(pattern)
    return lambda state: {regex.sub(replacement, k): v for k, v in state.items()}


def weight_files(dir: Path) -> list[str]:
    """Weight file names in ``dir``, safetensors first, sorted (shards in order)."""
    for pattern in ("model*.safetensors", "pytorch_model*.bin", "adapter_model.safetensors", "adapter_model.bin"):
        found = sorted(p.name for p in dir.glob(pattern))
        if found:
            return found
    return []


def load(path: Path) -> dict[str, torch.Tensor]:
    """Read one weight file (safetensors, or a torch pickle with ``weights_only=True``)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    import torch

    return dict(torch.load(path, map_location="cpu", weights_only=True))


def patch_json(path: Path, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Set dotted keys ("text_config.vocab_size") in a JSON file; a value of ``DELETE`` removes
    the key. Returns the new content."""
    data = json.loads(path.read_text(encoding="utf-8"))
    for dotted, value in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    dump_json(path, data)
    return data


def dump_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def parse_size(size: str | int) -> int:
    """"20KB" -> 20000, "1MiB" -> 1048576 (decimal and binary units, as transformers reads them)."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?I?B)\s*", size.upper())
    if not match:
        raise ValueError(f"cannot read shard size {size!r}; use e.g. '20KB' or '1MiB'")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


DELETE: Any = _Delete()


def _save(path: Path, state: Mapping[str, Any]) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(dict(state), str(path), metadata={"format": "pt"})
    else:
        import torch

        torch.save(dict(state), path)


def _write_index(path: Path, weight_map: dict[str, str], total: int) -> None:
    dump_json(path, {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
