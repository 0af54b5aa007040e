"""CKP201-CKP209: sharded weights, ``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``
against the shard files (headers only).

What transformers does with a shard set: it opens every file the ``weight_map`` names and loads
every tensor in those files (the tensor-to-file mapping itself is not used; other tools, like
accelerate's offloading and inference servers, do use it). A missing shard is an error; a tensor in
two shards silently takes the value of the one read last.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from doctor.findings import Location, Severity
from doctor.io.safetensors_header import DTYPE_SIZES
from doctor.registry import Check, fixture, register

from ._checkpoint_files import BIN_INDEX, SAFE_INDEX, ModelWeights, read_sharded

_SHARD_RE = re.compile(r"^(model|pytorch_model)-\d+-of-\d+\.(safetensors|bin)$")


@fixture
def ckp_shard_sets(ckp_folder: Path) -> list[ModelWeights]:
    """One entry per index file in the folder (safetensors and .bin)."""
    sets = []
    for name, fmt in ((SAFE_INDEX, "safetensors"), (BIN_INDEX, "bin")):
        if (ckp_folder / name).is_file():
            sets.append(read_sharded(ckp_folder, ckp_folder / name, fmt))
    return sets


def _index_name(s: ModelWeights) -> str:
    return s.index_path.name if s.index_path else "index"


@register
class ShardIndexInvalid(Check):
    """A shard index file is not valid JSON or has no usable `weight_map`.

    ## What it does
    Parses `model.safetensors.index.json` / `pytorch_model.bin.index.json` and checks that
    `weight_map` maps tensor names to shard file names (strings).

    ## Why is this bad?
    `from_pretrained` reads the index to find the shards: it raises on invalid JSON, and a
    `weight_map` that is not a name -> file map loads nothing.

    ## Example
    `{"metadata": {"total_size": 13476839424}}` with no `weight_map`.

    ## How to fix
    Copy the index file again from the source model, or regenerate it from the shards' headers.
    """

    code = "CKP201"
    name = "shard-index-invalid"
    artifacts = frozenset({"model"})

    def run(self, ckp_shard_sets: list[ModelWeights]):
        for s in ckp_shard_sets:
            where = str(s.index_path)
            if s.index_error is not None:
                yield self.finding(f"{_index_name(s)} is unusable: {s.index_error}", path=where)
                continue
            weight_map = (s.index or {}).get("weight_map", {})
            bad = [k for k, v in weight_map.items() if not isinstance(v, str) or not v]
            if bad:
                yield self.finding(f"weight_map entries must name a shard file; {bad[0]!r} maps to "
                                   f"{weight_map[bad[0]]!r}", path=where,
                                   location=Location(pointer=Location.json_pointer("weight_map", bad[0])))


@register
class ShardMissing(Check):
    """A shard named by the index file is not in the folder.

    ## What it does
    Checks that every file the index's `weight_map` names exists.

    ## Why is this bad?
    `from_pretrained` fails to open it; an interrupted download or a partial copy is the usual cause.

    ## Example
    `model-00003-of-00004.safetensors` named in model.safetensors.index.json but absent.

    ## How to fix
    Download or copy the missing shard again.
    """

    code = "CKP202"
    name = "shard-missing"
    artifacts = frozenset({"model"})

    def run(self, ckp_shard_sets: list[ModelWeights]):
        for s in ckp_shard_sets:
            for shard in s.missing_files:
                n = sum(1 for v in (s.index or {}).get("weight_map", {}).values() if v == shard)
                yield self.finding(f"{shard} is named by {_index_name(s)} for {n} tensor(s) but is not in the folder",
                                   path=str(s.index_path), location=Location(pointer="/weight_map"))


@register
class ShardIsLfsPointer(Check):
    """A weights file is a Git-LFS pointer, not the weights.

    ## What it does
    Recognises the small text file Git-LFS leaves in place of a large file
    (`version https://git-lfs.github.com/spec/v1`).

    ## Why is this bad?
    The repository was cloned without `git lfs`: safetensors raises `HeaderTooLarge` /
    "Error while deserializing header", torch.load fails on a text file.

    ## Example
    `model-00001-of-00002.safetensors`, 134 bytes: `version https://git-lfs.github.com/spec/v1 ...`.

    ## How to fix
    Run `git lfs install && git lfs pull` in the clone, or download with `huggingface-cli download`.
    """

    code = "CKP203"
    name = "shard-is-lfs-pointer"
    artifacts = frozenset({"model"})

    def run(self, ckp_weights: ModelWeights, ckp_shard_sets: list[ModelWeights]):
        # One finding for the model (the SEC family reports each file on its own).
        pointers = sorted({f for s in [ckp_weights, *ckp_shard_sets] for f in s.lfs_pointers})
        files = sorted({f for s in [ckp_weights, *ckp_shard_sets] for f in s.files})
        if pointers:
            names = ", ".join(Path(f).name for f in pointers[:4]) + (", ..." if len(pointers) > 4 else "")
            yield self.finding(f"{len(pointers)} of the {len(files)} weight files are Git-LFS pointer files, not the "
                               f"weights ({names}): the model cannot load", path=pointers[0])


@register
class ShardPathEscapes(Check):
    """The index names a shard outside the model folder (`../`, an absolute path).

    ## What it does
    Checks every file name in the index's `weight_map` is a plain name inside the folder.

    ## Why is this bad?
    transformers joins the folder and the name, so `../x.safetensors` or `/abs/x.safetensors` reads a
    file outside the model: an untrusted checkpoint can make you load (for .bin: unpickle) any file.

    ## Example
    `"lm_head.weight": "../../other-model/model-00002-of-00002.safetensors"`.

    ## How to fix
    Put the shards in the model folder and name them by their file name only.
    """

    code = "CKP204"
    name = "shard-path-escapes"
    artifacts = frozenset({"model"})

    def run(self, ckp_shard_sets: list[ModelWeights]):
        for s in ckp_shard_sets:
            for shard in s.escaping:
                yield self.finding(f"{_index_name(s)} names {shard!r}, outside the model folder",
                                   path=str(s.index_path), location=Location(pointer="/weight_map"))


@register
class ShardUnlisted(Check):
    """A shard file in the folder is not named by the index.

    ## What it does
    Lists `model-NNNNN-of-NNNNN.safetensors` (or `pytorch_model-...bin`) files the index does not name.

    ## Why is this bad?
    transformers never reads them: they are left over from a save with another shard count (the
    index then belongs to the newer save), or the index is stale and the tensors in them are missing.

    ## Example
    `model-00001-of-00003.safetensors` beside an index that names `model-0000N-of-00002.safetensors`.

    ## How to fix
    Delete the leftovers, or regenerate the index if those shards hold tensors the model needs.
    """

    code = "CKP205"
    name = "shard-unlisted"
    severity = Severity.WARNING
    artifacts = frozenset({"model"})

    def run(self, ckp_shard_sets: list[ModelWeights], path: str):
        for s in ckp_shard_sets:
            listed = set((s.index or {}).get("weight_map", {}).values())
            ext = ".safetensors" if s.format == "safetensors" else ".bin"
            extra = sorted(p.name for p in Path(path).iterdir()
                           if _SHARD_RE.match(p.name) and p.name.endswith(ext) and p.name not in listed)
            if extra and s.index is not None:
                yield self.finding(f"{', '.join(extra)} not named by {_index_name(s)}: transformers ignores them",
                                   path=str(Path(path) / extra[0]))


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
    saves were mixed in one folder.

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
