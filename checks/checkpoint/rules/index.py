"""CKP206-CKP209: an index file's ``weight_map`` and ``metadata`` against the shards' headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doctor.checks.checkpoint.fixtures import ModelWeights
from doctor.checks.checkpoint.rules.shards import index_name as _index_name

from doctor.findings import Location, Severity
from doctor.io.safetensors_header import DTYPE_SIZES
from doctor.registry import Check, register


@register
class IndexTensorNotInShard(Check):
    """The index places a tensor in a shard whose header does not hold it.

    ## What it does
    Compares every `weight_map` entry with the tensor names in that shard's header.

    ## Why is this bad?
    If no shard holds the tensor it is missing from the model. If another shard does, transformers
    still loads it, but tools that trust the index (accelerate offloading, inference servers,
    partial loaders) look in the wrong file and fail.

    ## Example
    `"multi_modal_projector.linear_1.weight": "model-00001-of-00002.safetensors"` while the tensor is
    in shard 2, or in none.

    ## How to fix
    Regenerate the index from the shards' headers, or add the missing tensor.
    """

    code = "CKP206"
    name = "index-tensor-not-in-shard"
    artifacts = frozenset({"model"})

    def run(self, ckp_shard_sets: list[ModelWeights]):
        for s in ckp_shard_sets:
            if s.index is None:
                continue
            for name, shard in s.index.get("weight_map", {}).items():
                key = str(s.folder / str(shard))
                if key not in s.per_file or name in s.per_file[key]:
                    continue
                ptr = Location(pointer=Location.json_pointer("weight_map", name))
                elsewhere = s.tensors.get(name)
                if elsewhere is not None:
                    yield self.finding(f"{name} is listed in {shard} but stored in {Path(elsewhere.file).name}",
                                       path=str(s.index_path), location=ptr, severity=Severity.WARNING)
                elif not s.unreadable:
                    yield self.finding(f"{name} is listed in {shard} but no shard the index names holds it",
                                       path=str(s.index_path),
                                       location=ptr)


@register
class TensorInTwoShards(Check):
    """The same tensor name is stored in more than one shard.

    ## What it does
    Reads every shard's header and reports names that appear in several.

    ## Why is this bad?
    transformers merges the shards into one dictionary: the copy read last wins, silently. Often two
    saves were mixed in one folder. A warning: the model loads, and the two copies are usually the same
    tensor saved twice (values are not compared here); the index-vs-header disagreements are CKP206.

    ## Example
    `lm_head.weight` in both `model-00001-of-00002.safetensors` and `model-00002-of-00002.safetensors`.

    ## How to fix
    Keep the shards of one save only and regenerate the index.
    """

    code = "CKP207"
    name = "tensor-in-two-shards"
    severity = Severity.WARNING
    artifacts = frozenset({"model"})

    def run(self, ckp_shard_sets: list[ModelWeights]):
        for s in ckp_shard_sets:
            for name, files in sorted(s.duplicates.items()):
                yield self.finding(f"{name} is in {', '.join(Path(f).name for f in files)}: the last one read wins",
                                   path=files[-1], location=Location(tensor=name))


@register
class IndexTotalSizeMismatch(Check):
    """The index's `metadata.total_size` differs from the bytes of the tensors in its shards.

    ## What it does
    Sums the byte sizes of all tensors in the shards (from their headers) and compares the sum with
    `metadata.total_size`.

    ## Why is this bad?
    transformers does not rely on it, but a wrong total means the index was written for other shards
    (another dtype, another save): the tensor placement in it is suspect too.

    ## Example
    `"total_size": 14000000000` for shards holding 7,000,000,000 bytes of float16 tensors (a float32
    index kept after converting the shards).

    ## How to fix
    Regenerate the index from the shards.
    """

    code = "CKP208"
    name = "index-total-size-mismatch"
    severity = Severity.WARNING
    artifacts = frozenset({"model"})

    def run(self, ckp_shard_sets: list[ModelWeights]):
        for s in ckp_shard_sets:
            meta = (s.index or {}).get("metadata")
            total = meta.get("total_size") if isinstance(meta, dict) else None
            if not isinstance(total, (int, float)) or not s.complete:
                continue
            actual = sum(_nbytes(t) for f in s.per_file.values() for t in f.values())
            if int(total) != actual:
                yield self.finding(f"metadata.total_size is {int(total):,} but the shards hold {actual:,} bytes of tensors",
                                   path=str(s.index_path), location=Location(pointer="/metadata/total_size"))


@register
class TensorNotInIndex(Check):
    """A shard holds a tensor the index does not list.

    ## What it does
    Reports tensor names found in a shard's header but absent from `weight_map`.

    ## Why is this bad?
    transformers loads it anyway (it reads whole shards), but tools that use the index to find
    tensors never see it: the index is stale.

    ## Example
    `image_newline` stored in shard 1 but missing from model.safetensors.index.json.

    ## How to fix
    Regenerate the index from the shards.
    """

    code = "CKP209"
    name = "tensor-not-in-index"
    severity = Severity.WARNING
    artifacts = frozenset({"model"})

    def run(self, ckp_shard_sets: list[ModelWeights]):
        for s in ckp_shard_sets:
            listed = (s.index or {}).get("weight_map", {})
            if s.index is None:
                continue
            extra = sorted(n for n in s.tensors if n not in listed)
            if extra:
                first = s.tensors[extra[0]]
                yield self.finding(f"{len(extra)} tensor(s) in the shards are not in {_index_name(s)}: "
                                   f"{', '.join(extra[:3])}", path=first.file, location=Location(tensor=extra[0]))


def _nbytes(t: Any) -> int:
    n = 1
    for d in t.shape:
        n *= d
    return int(n * DTYPE_SIZES.get(t.dtype, 0))
