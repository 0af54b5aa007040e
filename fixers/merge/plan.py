"""The streaming core shared by merge and convert: a list of output tensors (``Item``), each
with the input tensor it starts from and the LoRA modules folded into it, written shard by
shard and tensor by tensor.

Nothing here holds more than the tensor being produced (plus its LoRA factors): the shard
headers are computed from the plan before the first byte is written.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.fixers.merge.keys import NameIndex
from doctor.fixers.merge.lora import Adapter, LoraModule, fold, fold_bias
from doctor.fixers.merge.tensor_io import (
    FLOAT_CODES,
    Shard,
    TensorReader,
    TensorRef,
    list_bin,
    list_safetensors,
    output_size,
    plan_shards,
    torch_dtype,
    write_index,
    write_shard,
)

from doctor.errors import ArtifactError

if TYPE_CHECKING:
    import torch

ProgressFactory = Callable[..., Any]


@dataclass
class Item:
    """One output tensor."""

    name: str
    src: TensorRef
    dtype: str
    shape: tuple[int, ...]
    loras: list[LoraModule] = field(default_factory=list)
    bias_loras: list[LoraModule] = field(default_factory=list)
    fan_in_fan_out: bool = False
    replaced: bool = False
    grow_rows: int = 0  # rows appended for tokens added to the tokenizer (convert)


# ---- inputs ----------------------------------------------------------------------------------

def folder_tensors(folder: Path, reader: TensorReader, stem: str = "model") -> list[TensorRef]:
    """Every tensor of a checkpoint folder, from headers: ``<stem>.safetensors`` (single or
    indexed shards), else ``pytorch_model*.bin`` (scanned pickles)."""
    index = folder / f"{stem}.safetensors.index.json"
    single = folder / f"{stem}.safetensors"
    if index.exists():
        return [r for f in _index_files(index) for r in list_safetensors(folder / f)]
    if single.exists():
        return list_safetensors(single)
    bin_stem = "pytorch_model" if stem == "model" else stem
    bin_index = folder / f"{bin_stem}.bin.index.json"
    files = _index_files(bin_index) if bin_index.exists() else [f"{bin_stem}.bin"] if (folder / f"{bin_stem}.bin").exists() else []
    refs: list[TensorRef] = []
    for f in files:
        got, _ = list_bin(folder / f)
        refs.extend(got)
    if not refs:
        raise ArtifactError(f"{folder}: no {stem}.safetensors, {stem}.safetensors.index.json or pytorch_model*.bin "
                            "weights found")
    return refs


def _index_files(index: Path) -> list[str]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        files = sorted(set(data["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ArtifactError(f"{index}: unreadable shard index ({e}); run `vlm-doctor check {index.parent}`") from None
    for f in files:
        p = (index.parent / f).resolve()
        if index.parent.resolve() not in p.parents:
            raise ArtifactError(f"{index}: shard path {f!r} leaves the folder; refusing to read it")
        if not p.exists():
            raise ArtifactError(f"{index}: lists shard {f}, which is missing (an interrupted download?)")
    return files


def items_from(refs: list[TensorRef], rename: Callable[[str], str | None] = lambda n: n) -> list[Item]:
    """One Item per input tensor, named by ``rename`` (None drops the tensor)."""
    items = []
    for r in refs:
        name = rename(r.key)
        if name is not None:
            items.append(Item(name, r, r.dtype, r.shape))
    return items


def attach(items: list[Item], adapter: Adapter, index: NameIndex, label: str) -> dict[str, int]:
    """Fold ``adapter`` into ``items`` (matched through ``index``, whose names are the items'
    source keys). Every LoRA module must land on a tensor: peft would silently drop the
    others ("Found missing adapter keys"), leaving an adapter without effect."""
    by_key = {it.src.key: it for it in items}
    missing: list[str] = []
    for mod in adapter.modules.values():
        key = index.find(mod.name + ".weight") or (index.find(mod.name) if mod.kind == "embedding" else None)
        if key is None or key not in by_key:
            missing.append(mod.name)
            continue
        item = by_key[key]
        item.loras.append(mod)
        item.fan_in_fan_out = adapter.fan_in_fan_out
        if mod.bias is not None:
            bias_key = index.find(mod.name + ".bias")
            if bias_key is None or bias_key not in by_key:
                raise ArtifactError(f"{adapter.folder}: {mod.name} has lora_bias but the base layer has no bias: "
                                    "peft cannot merge it either")
            by_key[bias_key].bias_loras.append(mod)
    if missing:
        raise ArtifactError(
            f"{adapter.folder}: {len(missing)} of {len(adapter.modules)} {label} LoRA modules match no tensor of the "
            f"base (first: {', '.join(sorted(missing)[:3])}). The adapter was trained on another model or key "
            "layout; run `vlm-doctor check` on the adapter with --base to see the mapping.")
    replaced = 0
    for name, ref in adapter.replacements.items():
        key = index.find(name)
        if key is None or key not in by_key:
            raise ArtifactError(f"{adapter.folder}: saved module tensor {name} (modules_to_save) matches no base tensor")
        replace(by_key[key], ref, adapter.folder)
        replaced += 1
    return {"modules": len(adapter.modules), "replaced": replaced}


def replace(item: Item, ref: TensorRef, where: Path | str) -> None:
    """A trained full copy of a tensor replaces the base's (``modules_to_save``, the projector
    of ``non_lora_trainables.bin``). Only the vocabulary dimension may differ."""
    if tuple(ref.shape) != tuple(item.shape):
        rows_only = len(ref.shape) == len(item.shape) == 2 and ref.shape[1] == item.shape[1]
        if not (rows_only and any(p in item.name for p in ("embed_tokens", "lm_head", "wte", "output"))):
            raise ArtifactError(f"{where}: {ref.key} has shape {list(ref.shape)} but the base tensor {item.name} "
                                f"has {list(item.shape)}; they are from different models")
        item.shape = tuple(ref.shape)
    item.src = ref
    item.replaced = True


# ---- output ----------------------------------------------------------------------------------

def set_dtypes(items: list[Item], dtype: str) -> None:
    """``dtype`` a safetensors code, or "auto" (each tensor keeps its base dtype)."""
    if dtype == "auto":
        return
    for it in items:
        if it.dtype in FLOAT_CODES:
            it.dtype = dtype


def shards_for(items: list[Item], max_shard_size: int) -> list[Shard]:
    return plan_shards([(it.name, it.dtype, _out_shape(it)) for it in items], max_shard_size)


def _out_shape(it: Item) -> tuple[int, ...]:
    return (it.shape[0] + it.grow_rows, *it.shape[1:]) if it.grow_rows else tuple(it.shape)


def check_disk(out: Path, shards: list[Shard], extra: int = 0) -> int:
    """Refuse before writing anything when the output would not fit on its disk."""
    need = output_size(shards) + extra
    probe = out.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need + (64 << 20) > free:
        raise ArtifactError(f"{out}: the result needs about {need / 1e9:.2f} GB but {probe} has "
                            f"{free / 1e9:.2f} GB free; free space or choose another -o")
    return need


def write_items(folder: Path, items: list[Item], shards: list[Shard], metadata: dict[str, str],
                reader: TensorReader, progress: ProgressFactory, rows: RowInit | None = None) -> None:
    by_name = {it.name: it for it in items}
    if len(by_name) != len(items):
        dup = sorted({it.name for it in items if sum(1 for j in items if j.name == it.name) > 1})
        raise ArtifactError(f"two input tensors map to the same output name: {', '.join(dup[:3])}")
    with progress("Writing tensors", len(items)) as advance:
        for shard in shards:
            write_shard(folder / shard.filename, shard, metadata,
                        lambda name: produce(by_name[name], reader, rows), advance)
    write_index(folder, shards)
    reader.release()


def produce(item: Item, reader: TensorReader, rows: RowInit | None = None) -> torch.Tensor:
    """The output tensor: base (or replacement) + folded LoRA deltas in fp32, new rows
    appended, cast once to the output dtype."""
    import torch

    t = reader.read(item.src)
    if item.loras or item.bias_loras:
        w = t.to(torch.float32, copy=True)
        del t
        for mod in item.loras:
            fold(w, mod, reader, item.fan_in_fan_out, item.name)
        for mod in item.bias_loras:
            fold_bias(w, mod, reader)
        t = w
    if item.grow_rows:
        if rows is None:
            raise ArtifactError(f"internal: {item.name} needs new rows but no initialiser was given")
        t = torch.cat([t.float(), rows.rows(item)], dim=0)
    out = t.to(torch_dtype(item.dtype))
    # one reduction instead of an elementwise isfinite pass: a NaN or Inf anywhere makes the sum
    # non-finite (an overflowing sum of finite weights would need values near 1e38)
    if item.loras and out.is_floating_point() and not math.isfinite(float(t.sum(dtype=torch.float32))):
        raise ArtifactError(f"NaN or Inf in the merged tensor {item.name} (LoRA module {item.loras[0].name}): "
                            "the adapter is broken; check it with `vlm-doctor check --deep`")
    return out


class RowInit:
    """Rows for tokens added to the vocabulary, drawn as transformers' llava converter does:
    from a normal distribution with the embedding matrix's mean and 1e-5 x its covariance
    (seeded, so a conversion is reproducible). The lm_head rows come from the same
    distribution of the input embeddings, as there."""

    def __init__(self, embed: Item, reader: TensorReader, seed: int = 0) -> None:
        self.embed, self.reader, self.seed = embed, reader, seed
        self._dist: tuple[Any, Any] | None = None

    def rows(self, item: Item) -> torch.Tensor:
        import torch

        mu, chol = self._distribution()
        gen = torch.Generator().manual_seed(self.seed + (0 if item is self.embed else 1))
        z = torch.randn(item.grow_rows, mu.shape[0], generator=gen)
        return mu + (z @ chol.T if chol is not None else 0.0)

    def _distribution(self) -> tuple[Any, Any]:
        import torch

        if self._dist is None:
            e = self.reader.read(self.embed.src).float()
            mu = e.mean(dim=0)
            centered = e - mu
            sigma = centered.T @ centered / e.shape[0]
            del e, centered
            chol, info = torch.linalg.cholesky_ex(1e-5 * sigma)
            if int(info) != 0:  # singular (tiny vocabularies): jitter, else the mean alone
                eye = torch.eye(sigma.shape[0]) * (1e-5 * float(sigma.diagonal().mean()) + 1e-12)
                chol, info = torch.linalg.cholesky_ex(1e-5 * sigma + eye)
                chol = chol if int(info) == 0 else None
            self._dist = (mu, chol)
        return self._dist


@dataclass
class Job:
    """A planned merge or conversion: the output tensors, and how to write the rest."""

    kind: str  # peft | llava-lora | xtuner | convert
    items: list[Item]
    provenance: dict[str, str]
    finish: Callable[[Path, str], None]  # (folder, dtype code written) -> writes the small files
    auto_dtype: str | None = None  # a single dtype for "auto" (conversions); None: per tensor
    rows: RowInit | None = None
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
